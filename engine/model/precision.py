"""What each part of the model is stored as, per quantization mode: one policy for the loader and the
memory estimate (names only, no torch, so the pre-flight can use it cheaply).

``part_precisions(quant, cuda)`` names, for every part, one of ``nf4`` / ``int8`` (bitsandbytes
NF4 with double quantization / LLM.int8 linears) or a float dtype ``fp16`` / ``bf16`` / ``fp32``:

============  =======================  ====================  ==========================
mode          Llama + unit-decoder      lm_head, Whisper       adapter, norms, embeddings,
              transformer layers        linears                unit-decoder projections
============  =======================  ====================  ==========================
nf4           nf4                       int8                   compute dtype
int8          int8                      int8                   compute dtype
fp16/bf16     that dtype                that dtype (Whisper:   that dtype
/fp32                                   fp16 on CUDA)
============  =======================  ====================  ==========================

The compute dtype of the quantized modes is bf16 or fp16 on CUDA (chosen per device by
``engine.model.quant``; both take 2 bytes) and fp32 on the CPU. Whisper's convolutions, norms and
positional table stay in a float dtype (fp16 on CUDA).

Why int8 for the 1.05 GB lm_head and the 1.27 GB Whisper encoder in the 4-bit mode: together they
save 1.15 GB, which the 8 GB cards the nf4 mode is for need (``engine.model.memory``), and LLM.int8
keeps outlier features in 16 bit, so the logits and the speech embeddings stay close to fp16
(measured: ``python -m engine bench-fidelity``, results in ``bench/RESULTS.md``). NF4 for them
would save another 0.5 GB at a clearly larger error.
"""

from __future__ import annotations

from dataclasses import dataclass

from engine.config import QuantMode

FLOAT_BYTES = {"fp32": 4, "fp16": 2, "bf16": 2}
QUANTIZED = frozenset({"nf4", "int8"})
# bitsandbytes NF4 with double quantization: 4 bits per weight, one 8-bit absmax per block of 64
# weights, and one fp32 scale per 256 of those absmax values.
NF4_BLOCK = 64
NF4_DOUBLE_QUANT_BLOCK = 256
NF4_BYTES_PER_WEIGHT = 0.5 + 1 / NF4_BLOCK + 4 / (NF4_BLOCK * NF4_DOUBLE_QUANT_BLOCK)
# LLM.int8: one byte per weight plus an fp32 scale per output row (counted separately).
INT8_BYTES_PER_WEIGHT = 1.0
INT8_ROW_SCALE_BYTES = 4


@dataclass(frozen=True, slots=True)
class PartPrecision:
    """Storage of each part, as ``nf4`` / ``int8`` / ``fp16`` / ``bf16`` / ``fp32``."""

    layers: str  # the Llama and unit-decoder transformer layers' linears
    head: str  # lm_head
    encoder_linears: str  # Whisper's attention and MLP linears
    encoder: str  # Whisper's convolutions, norms, biases and positional table (a float dtype)
    adapter: str  # the speech adapter (float)
    compute: str  # activations, embeddings, norms, unit-decoder in/out projections (float)


def part_precisions(quant: QuantMode, *, cuda: bool, compute: str | None = None) -> PartPrecision:
    """The policy in the module docstring. ``compute``: the float dtype the device chose for the
    quantized modes (default fp16 on CUDA, fp32 on the CPU)."""
    if quant in QUANTIZED:
        dtype = compute or ("fp16" if cuda else "fp32")
        encoder = "fp16" if cuda else "fp32"
        return PartPrecision(
            layers=quant, head="int8", encoder_linears="int8", encoder=encoder, adapter=dtype, compute=dtype
        )
    encoder = "fp16" if cuda else quant
    return PartPrecision(
        layers=quant, head=quant, encoder_linears=encoder, encoder=encoder, adapter=quant, compute=quant
    )


def weight_bytes(n_weights: int, precision: str, n_rows: int = 0) -> int:
    """Bytes of ``n_weights`` linear weights (``n_rows`` output rows) stored as ``precision``."""
    if precision == "nf4":
        return int(n_weights * NF4_BYTES_PER_WEIGHT)
    if precision == "int8":
        return int(n_weights * INT8_BYTES_PER_WEIGHT) + n_rows * INT8_ROW_SCALE_BYTES
    return n_weights * FLOAT_BYTES[precision]
