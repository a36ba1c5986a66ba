"""Pre-flight memory estimate per quantization mode, so the app can refuse before loading.

``estimate_memory(dims, "nf4")`` adds up weights in the precision ``quant.make_plan`` gives each
part, the LLM KV cache for the context budget, the unit decoder's KV cache for the longest answer,
a working-set allowance and (on CUDA) the CUDA context. Bytes per NF4 weight include the
double-quantized absmax constants: 4 bits + 8 bits per 64-weight block + fp32 per 256 blocks.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from engine.config import OmniDims, QuantMode
from engine.errors import NotEnoughMemory, Reason

if TYPE_CHECKING:
    import torch

logger = logging.getLogger(__name__)

GB = 1_000_000_000
# bitsandbytes NF4 with double quantization: 4 bits per weight, one 8-bit absmax per block of 64
# weights, and one fp32 scale per 256 of those absmax values.
NF4_BLOCK = 64
NF4_DOUBLE_QUANT_BLOCK = 256
NF4_BYTES_PER_WEIGHT = 0.5 + 1 / NF4_BLOCK + 4 / (NF4_BLOCK * NF4_DOUBLE_QUANT_BLOCK)
INT8_BYTES_PER_WEIGHT = 1.0
# PyTorch's CUDA context with lazy module loading plus cuBLAS workspaces: typically 0.3-0.5 GB.
CUDA_CONTEXT_BYTES = 500 * 1_000_000
CONTEXT_PART = "cuda context"
RUNTIME_PARTS = frozenset({"llm kv cache", "unit kv cache", "activations", CONTEXT_PART})
_DTYPE_BYTES = {"fp32": 4, "fp16": 2, "bf16": 2}


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
        """The model's weights alone (no caches, activations or CUDA context)."""
        return sum(b for name, b in self.parts if name not in RUNTIME_PARTS)

    def bytes_excluding_context(self) -> int:
        return sum(b for name, b in self.parts if name != CONTEXT_PART)

    def describe(self) -> str:
        lines = [f"{self.quant} on {self.device_type}: {self.total_bytes / GB:.1f} GB"]
        lines += [f"  {name}: {n / GB:.2f} GB" for name, n in self.parts]
        if self.host_bytes:
            lines.append(f"  (+ {self.host_bytes / GB:.2f} GB host RAM)")
        return "\n".join(lines)


def _weight_bytes(n: int, mode: str, compute_bytes: int) -> int:
    if mode == "nf4":
        return int(n * NF4_BYTES_PER_WEIGHT)
    if mode == "int8":
        return int(n * INT8_BYTES_PER_WEIGHT)
    return n * compute_bytes


def estimate_memory(
    dims: OmniDims,
    quant: QuantMode,
    *,
    device_type: str = "cuda",
    context_tokens: int = 2048,
    max_new_tokens: int = 512,
) -> MemoryEstimate:
    """Bytes needed on ``device_type`` to load ``dims`` in ``quant`` and answer within the budget."""
    cuda = device_type == "cuda"
    compute = _DTYPE_BYTES.get(quant, 2 if cuda else 4)  # quantized modes compute in 16 bit on GPU
    adapter_bytes = 4 if quant in ("nf4", "int8") else compute
    encoder_bytes = 2 if cuda else (2 if quant == "bf16" else 4)
    llm, unit, enc = dims.llm, dims.unit_decoder, dims.encoder
    layer_linear = (
        llm.n_layers
        * llm.hidden_size
        * (llm.head_dim * (2 * llm.n_heads + 2 * llm.n_kv_heads) + 3 * llm.intermediate_size)
    )
    norms = (2 * llm.n_layers + 1) * llm.hidden_size
    embed = llm.vocab_size * llm.hidden_size
    parts: list[tuple[str, int]] = [
        ("llm layers", _weight_bytes(layer_linear, quant, compute) + norms * compute),
        ("lm_head", 0 if llm.tie_word_embeddings else embed * compute),
    ]
    host = 0
    if cuda and not llm.tie_word_embeddings:
        host = embed * compute
    else:
        parts.append(("embeddings", embed * compute))
    unit_linear = unit.n_layers * (4 * unit.dim * unit.dim + 3 * unit.dim * unit.ffn_dim)
    unit_rest = unit.n_params - unit_linear
    frames = max_new_tokens * unit.upsample_factor
    parts += [
        ("speech encoder", enc.n_params * encoder_bytes),
        ("adapter", dims.adapter.n_params * adapter_bytes),
        ("unit decoder", _weight_bytes(unit_linear, quant, compute) + unit_rest * compute),
        ("llm kv cache", 2 * llm.n_layers * llm.n_kv_heads * llm.head_dim * context_tokens * compute),
        ("unit kv cache", 2 * unit.n_layers * unit.dim * frames * compute),
    ]
    # Working set: the larger of the encoder's MLP activations and a full-context prefill, plus
    # one dequantized layer (bnb expands a 4-bit matrix to compute dtype for multi-token inputs).
    encoder_act = 3 * enc.n_audio_ctx * 4 * enc.n_audio_state * encoder_bytes
    prefill_act = 3 * context_tokens * llm.intermediate_size * compute + llm.vocab_size * 4
    dequant = llm.hidden_size * llm.intermediate_size * compute if quant in ("nf4", "int8") else 0
    parts.append(("activations", max(encoder_act, prefill_act) + dequant))
    if cuda:
        parts.append((CONTEXT_PART, CUDA_CONTEXT_BYTES))
    return MemoryEstimate(quant=quant, device_type=device_type, parts=tuple(parts), host_bytes=host)


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
