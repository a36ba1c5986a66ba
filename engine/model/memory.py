"""Pre-flight memory estimate per quantization mode, so the app can refuse before loading.

``estimate_memory(dims, "nf4")`` adds up, on the device the model runs on:

- the weights, each part in the precision ``engine.model.precision.part_precisions`` gives it (the
  loader follows the same policy); bytes per NF4 weight include the double-quantized absmax
  constants, int8 weights their per-row scales;
- the LLM's KV cache for the whole context budget (on CUDA it is allocated once at that size:
  ``engine.model.kv_cache``), and the unit decoder's for the longest answer that fits (its cache
  is allocated per answer for ``max_new_tokens``, capped by the context);
- a working set: the largest of the encoder's activations, one prefill chunk's (CUDA prefills in
  chunks of ``PREFILL_CHUNK_TOKENS``) and the unit decoder's, each with the one 4-bit matrix
  bitsandbytes may expand to 16 bit for a multi-row product;
- on CUDA the unit vocoder (onnxruntime or PyTorch on the same GPU) and the CUDA context.

Goal for the release (8B, Whisper-large-v3) in nf4 at a 2048-token context: at most 6.5 GB, so an
8 GB card with a desktop on it holds it (``python -m engine gpu-check`` measures the real peak).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from engine.config import OmniDims, QuantMode
from engine.errors import NotEnoughMemory, Reason
from engine.model.precision import FLOAT_BYTES, PartPrecision, part_precisions, weight_bytes

if TYPE_CHECKING:
    import torch

logger = logging.getLogger(__name__)

GB = 1_000_000_000
MB = 1_000_000
# PyTorch's CUDA context with lazy module loading plus cuBLAS workspaces: typically 0.3-0.5 GB.
CUDA_CONTEXT_BYTES = 500 * MB
# The unit HiFi-GAN on the GPU: 13.5M fp32 weights (54 MB), onnxruntime's CUDA provider (cuDNN and
# cuBLAS handles and workspaces) and its arena for the largest streaming window.
VOCODER_GPU_BYTES = 350 * MB
# CUDA prefills long prompts in chunks of this many positions (engine.model.omni), so activations
# stay those of one chunk; shorter prompts (a spoken question: ~350) go in one pass.
PREFILL_CHUNK_TOKENS = 512
# The 4-bit stack of the release must fit an 8 GB card with a desktop on it.
TARGET_NF4_BYTES = 6_500 * MB
CONTEXT_PART = "cuda context"
VOCODER_PART = "vocoder"
RUNTIME_PARTS = frozenset({"llm kv cache", "unit kv cache", "activations", VOCODER_PART, CONTEXT_PART})


@dataclass(frozen=True, slots=True)
class MemoryEstimate:
    quant: QuantMode
    device_type: str
    parts: tuple[tuple[str, int], ...]  # (what, bytes) on the device
    host_bytes: int  # what stays in host RAM on top (CUDA: the embedding table)

    @property
    def total_bytes(self) -> int:
        return sum(b for _, b in self.parts)

    @property
    def weight_bytes(self) -> int:
        """The model's weights alone (no caches, activations, vocoder or CUDA context)."""
        return sum(b for name, b in self.parts if name not in RUNTIME_PARTS)

    def part(self, name: str) -> int:
        return dict(self.parts).get(name, 0)

    def bytes_excluding_context(self) -> int:
        return sum(b for name, b in self.parts if name != CONTEXT_PART)

    def describe(self) -> str:
        lines = [f"{self.quant} on {self.device_type}: {self.total_bytes / GB:.1f} GB"]
        lines += [f"  {name}: {n / GB:.2f} GB" for name, n in self.parts]
        if self.host_bytes:
            lines.append(f"  (+ {self.host_bytes / GB:.2f} GB host RAM)")
        return "\n".join(lines)


def estimate_memory(
    dims: OmniDims,
    quant: QuantMode,
    *,
    device_type: str = "cuda",
    context_tokens: int = 2048,
    max_new_tokens: int = 512,
    parts: PartPrecision | None = None,
    vocoder_on_device: bool = True,
) -> MemoryEstimate:
    """Bytes needed on ``device_type`` to load ``dims`` in ``quant`` and answer within the budget.

    ``parts``: the per-part precisions when they differ from the policy (as ``make_plan``'s);
    ``vocoder_on_device``: count the vocoder on the GPU (ignored on the CPU).
    """
    cuda = device_type == "cuda"
    p = parts or part_precisions(quant, cuda=cuda)
    compute, encoder_bytes = FLOAT_BYTES[p.compute], FLOAT_BYTES[p.encoder]
    llm, unit, enc = dims.llm, dims.unit_decoder, dims.encoder
    attn_out = llm.head_dim * (2 * llm.n_heads + 2 * llm.n_kv_heads)  # q, k, v, o rows and columns
    layer_linear = llm.n_layers * llm.hidden_size * (attn_out + 3 * llm.intermediate_size)
    qkv_rows = llm.head_dim * (llm.n_heads + 2 * llm.n_kv_heads)
    layer_rows = llm.n_layers * (qkv_rows + 2 * llm.hidden_size + 2 * llm.intermediate_size)  # + o, gate, up, down
    norms = (2 * llm.n_layers + 1) * llm.hidden_size
    embed = llm.vocab_size * llm.hidden_size
    tied = llm.tie_word_embeddings
    head = 0 if tied else weight_bytes(embed, p.head, llm.vocab_size)
    parts_out: list[tuple[str, int]] = [
        ("llm layers", weight_bytes(layer_linear, p.layers, layer_rows) + norms * compute),
        ("lm_head", head),
    ]
    host = 0
    if cuda and not tied:
        host = embed * compute
    else:
        parts_out.append(("embeddings", embed * compute))
    d = enc.n_audio_state
    enc_linear = enc.n_audio_layer * 12 * d * d  # q, k, v, out (4 d²) + MLP (8 d²) per block
    enc_rows = enc.n_audio_layer * 9 * d
    unit_linear = unit.n_layers * (4 * unit.dim * unit.dim + 3 * unit.dim * unit.ffn_dim)
    unit_rows = unit.n_layers * (5 * unit.dim + 2 * unit.ffn_dim)
    answer_tokens = min(max_new_tokens, context_tokens)
    frames = answer_tokens * unit.upsample_factor
    parts_out += [
        (
            "speech encoder",
            weight_bytes(enc_linear, p.encoder_linears, enc_rows) + (enc.n_params - enc_linear) * encoder_bytes,
        ),
        ("adapter", dims.adapter.n_params * FLOAT_BYTES[p.adapter]),
        ("unit decoder", weight_bytes(unit_linear, p.layers, unit_rows) + (unit.n_params - unit_linear) * compute),
        ("llm kv cache", 2 * llm.n_layers * llm.n_kv_heads * llm.head_dim * context_tokens * compute),
        ("unit kv cache", 2 * unit.n_layers * unit.dim * frames * compute),
    ]
    parts_out.append(("activations", _working_set(dims, p, cuda=cuda, context_tokens=context_tokens)))
    if cuda and vocoder_on_device:
        parts_out.append((VOCODER_PART, VOCODER_GPU_BYTES))
    if cuda:
        parts_out.append((CONTEXT_PART, CUDA_CONTEXT_BYTES))
    return MemoryEstimate(quant=quant, device_type=device_type, parts=tuple(parts_out), host_bytes=host)


def _working_set(dims: OmniDims, p: PartPrecision, *, cuda: bool, context_tokens: int) -> int:
    """Peak temporary bytes of the largest stage (they run one after another).

    A multi-row product through an nf4 layer may expand that 4-bit matrix to 16 bit first
    (bitsandbytes does so above a few dozen rows), so the prefill and the unit decoder's 25-row
    steps count their largest matrix on top of their activations.
    """
    llm, unit, enc = dims.llm, dims.unit_decoder, dims.encoder
    compute, encoder_bytes = FLOAT_BYTES[p.compute], FLOAT_BYTES[p.encoder]
    mlp_rows = enc.n_audio_ctx * 4 * enc.n_audio_state
    encoder_act = 3 * mlp_rows * encoder_bytes
    if p.encoder_linears == "int8":
        encoder_act += mlp_rows * (1 + 4)  # int8 copy of the input and the int32 product
    nf4 = p.layers == "nf4"
    chunk = min(context_tokens, PREFILL_CHUNK_TOKENS) if cuda else context_tokens
    prefill_act = 3 * chunk * llm.intermediate_size * compute + llm.vocab_size * 4
    prefill_act += llm.hidden_size * llm.intermediate_size * compute if nf4 else 0
    unit_act = 3 * unit.upsample_factor * unit.ffn_dim * compute
    unit_act += unit.dim * unit.ffn_dim * compute if nf4 else 0
    return max(encoder_act, prefill_act, unit_act)


def available_memory(device: torch.device | str) -> int | None:
    """Free bytes on ``device`` now (CUDA: driver's free VRAM; CPU: MemAvailable), None if unknown.

    The CPU answer needs no torch (the app asks it from its pre-flight checks).
    """
    if str(device).startswith("cuda"):
        import torch

        free, _total = torch.cuda.mem_get_info(device)
        return int(free)
    meminfo = Path("/proc/meminfo")
    if meminfo.is_file():
        for line in meminfo.read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        return None


def check_fits(estimate: MemoryEstimate, available_bytes: int | None, *, context_allocated: bool = False) -> None:
    """Raise ``NotEnoughMemory`` ("this needs 7.4 GB, you have 6.0 GB") when it cannot fit.

    ``context_allocated``: ``available_bytes`` was measured by this process after CUDA started
    (``torch.cuda.mem_get_info``), so our own CUDA context is already taken out of it.
    """
    if available_bytes is None:
        logger.info("free memory unknown; skipping the pre-flight check")
        return
    needed = estimate.bytes_excluding_context() if context_allocated else estimate.total_bytes
    if needed > available_bytes:
        where = "GPU memory" if estimate.device_type == "cuda" else "RAM"
        raise NotEnoughMemory(
            f"This model in {estimate.quant} needs about {needed / GB:.1f} GB of {where}; "
            f"{available_bytes / GB:.1f} GB is free.",
            fix=f"Close other programs that use the {where}, use a lower precision (nf4 needs the least), "
            "or shorten the answers.",
            reason=Reason.MEMORY_SHORT,
            facts={
                "quant": estimate.quant,
                "device": estimate.device_type,
                "needed_bytes": needed,
                "free_bytes": available_bytes,
            },
        )
