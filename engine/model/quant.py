"""Device choice, per-part precision, and bitsandbytes layers for ``nf4`` / ``int8``.

What each part is stored as comes from ``engine.model.precision.part_precisions`` (the same policy
the memory estimate uses); ``make_plan`` adds the device and the torch dtypes:

- compute dtype of nf4 on CUDA: bf16 where the GPU computes it natively (compute capability 8.0,
  Ampere, or newer), else fp16. ``torch.cuda.is_bf16_supported()`` is not asked: it also says yes
  where bf16 is only emulated (Turing, Pascal), which is slow. int8 computes in fp16 (LLM.int8's
  kernels take fp16), the float modes in their own dtype, everything fp32 on the CPU.
- On CUDA the token-embedding table (1 GB for Llama-3.1) stays in host RAM: we always feed
  ``inputs_embeds`` (the speech splice needs it), so a row lookup on the host plus an 8 KB copy per
  token replaces 1 GB of VRAM.

Devices: ``resolve_device`` turns "auto"/"cuda"/"cuda:N" into a concrete ``cuda:N`` (checked
against the GPUs torch sees) or the CPU; ``use_device`` makes it this thread's current CUDA device,
so allocations and handles that bitsandbytes or torch make without an explicit index land on the
chosen GPU too.

bitsandbytes quantizes a weight when it moves to a device (``Params4bit.to``), so each layer is
quantized as its tensor is read: the full-precision model never exists in memory.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any, cast

import torch
from torch import nn

from engine.config import QUANT_MODES, QuantMode
from engine.errors import BadInput, DeviceUnavailable, Reason
from engine.model.precision import NF4_BLOCK, QUANTIZED, PartPrecision, part_precisions

# Native bf16 arithmetic (tensor cores) arrived with Ampere, compute capability 8.0.
BF16_MIN_CAPABILITY = (8, 0)
DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
# bitsandbytes' AVX512-BF16 CPU kernel packs output rows in tiles of this many (its block_n).
CPU_PACK_ROWS = 32
# LLM.int8's outlier threshold: input features above it are multiplied in 16 bit.
INT8_OUTLIER_THRESHOLD = 6.0
# One-row products (decode steps) keep this many largest-magnitude input features in 16 bit instead
# (a fixed count, so no host sync); LLM's hidden states have a handful of outlier features.
INT8_OUTLIER_FEATURES = 64


@dataclass(frozen=True, slots=True)
class PrecisionPlan:
    quant: QuantMode
    device: torch.device
    parts: PartPrecision
    embed_on_host: bool

    @property
    def compute_dtype(self) -> torch.dtype:
        return DTYPES[self.parts.compute]

    @property
    def encoder_dtype(self) -> torch.dtype:
        """Whisper's activations and its float parameters."""
        return DTYPES[self.parts.encoder]

    @property
    def adapter_dtype(self) -> torch.dtype:
        return DTYPES[self.parts.adapter]

    @property
    def head_dtype(self) -> torch.dtype:
        """What the lm_head takes and gives (its weights too, unless it is quantized)."""
        return self.compute_dtype if self.parts.head in QUANTIZED else DTYPES[self.parts.head]

    @property
    def linear_quant(self) -> str | None:
        """How the Llama and unit-decoder layers' linears are quantized ("nf4" | "int8" | None)."""
        return self.parts.layers if self.parts.layers in QUANTIZED else None

    @property
    def embed_device(self) -> torch.device:
        return torch.device("cpu") if self.embed_on_host else self.device


def resolve_device(device: str | torch.device | None) -> torch.device:
    """None / "auto": the current CUDA device when there is one, else the CPU. "cuda" means the
    current CUDA device; every CUDA result carries its index. A GPU torch cannot use is an error."""
    if device is None or str(device) == "auto":
        if not torch.cuda.is_available():
            return torch.device("cpu")
        device = "cuda"
    dev = torch.device(device)
    if dev.type not in ("cuda", "cpu"):
        raise DeviceUnavailable(f"Unsupported device {device!r}.", fix="Use 'cuda' or 'cpu'.")
    if dev.type == "cpu":
        return dev
    if not torch.cuda.is_available():
        raise DeviceUnavailable(
            "CUDA was requested but no usable NVIDIA GPU/driver was found.",
            fix="Install the NVIDIA driver and a CUDA build of PyTorch, or run on the CPU.",
            reason=Reason.CUDA_UNAVAILABLE,
            facts={"device": str(device)},
        )
    index = torch.cuda.current_device() if dev.index is None else dev.index
    count = torch.cuda.device_count()
    if not 0 <= index < count:
        raise DeviceUnavailable(
            f"GPU {index} was chosen, but this PC has {count} GPU(s) PyTorch can use (0-{count - 1}).",
            fix="Choose another GPU (one may have been removed, or CUDA_VISIBLE_DEVICES hides it).",
            reason=Reason.GPU_NOT_FOUND,
            facts={"index": index, "count": count},
        )
    return torch.device("cuda", index)


def use_device(device: torch.device) -> None:
    """Make ``device`` the current CUDA device of this thread (no-op for the CPU)."""
    if device.type == "cuda":
        torch.cuda.set_device(device)


def bf16_native(capability: tuple[int, int]) -> bool:
    """Whether a GPU of this compute capability has bf16 arithmetic in hardware."""
    return capability >= BF16_MIN_CAPABILITY


def _cuda_bf16(device: torch.device) -> bool:
    return device.type == "cuda" and bf16_native(tuple(torch.cuda.get_device_capability(device)))  # type: ignore[arg-type]


def make_plan(mode: str, device: torch.device, parts: PartPrecision | None = None) -> PrecisionPlan:
    """How each part is stored and computed for precision ``mode`` on ``device`` (the default mode
    when the user has none is ``engine.preflight.default_quant``'s); ``parts`` replaces the policy's
    per-part choice (the fidelity benchmark compares variants this way)."""
    if mode not in QUANT_MODES:
        raise BadInput(f"Unknown quantization {mode!r}.", fix=f"Use one of {', '.join(QUANT_MODES)}.")
    cuda = device.type == "cuda"
    if mode == "bf16" and cuda and not _cuda_bf16(device):
        raise DeviceUnavailable(
            "This GPU has no bf16 arithmetic (it needs compute capability 8.0, Ampere, or newer).",
            fix="Use fp16 or nf4.",
            reason=Reason.BF16_UNSUPPORTED,
            facts={"device": str(device)},
        )
    compute = None
    if mode in QUANTIZED and cuda:
        compute = "bf16" if mode == "nf4" and _cuda_bf16(device) else "fp16"
    if parts is None:
        parts = part_precisions(cast(QuantMode, mode), cuda=cuda, compute=compute)
    if QUANTIZED & {parts.layers, parts.head, parts.encoder_linears}:
        _require_bitsandbytes()
    return PrecisionPlan(quant=cast(QuantMode, mode), device=device, parts=parts, embed_on_host=cuda)


def _require_bitsandbytes() -> None:
    try:
        import bitsandbytes  # noqa: F401
    except ImportError as exc:
        raise DeviceUnavailable(
            "4-bit/8-bit modes need the bitsandbytes package.",
            fix="Install bitsandbytes, or choose fp16/bf16/fp32.",
        ) from exc


@functools.cache
def int8_linear_class() -> type[nn.Module]:
    """bitsandbytes' ``Linear8bitLt`` (LLM.int8) with two changes for inference.

    - It takes any float input (LLM.int8's kernels work in fp16; bitsandbytes would otherwise log
      a warning on every call that casts from bf16/fp32).
    - One row (a decode step: the lm_head each token) never waits for the GPU. LLM.int8 finds the
      outlier features by value (``if outliers.any()`` and ``argwhere``: two host syncs per call);
      here the ``INT8_OUTLIER_FEATURES`` largest-magnitude features are the ones multiplied in 16
      bit and the rest in int8, with shapes fixed in advance, so a step can run ahead of the GPU
      and be captured in a CUDA graph. Several rows (a prompt, Whisper's 1500 frames) take
      LLM.int8's own path.
    """
    import bitsandbytes as bnb

    class Int8Linear(bnb.nn.Linear8bitLt):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            rows = x.reshape(-1, x.shape[-1]).to(torch.float16)  # its kernels take (rows, features)
            if rows.shape[0] == 1 and not self.training:
                out = self._one_row(rows)
            else:
                out = cast(torch.Tensor, super().forward(rows))
            return out.reshape(*x.shape[:-1], out.shape[-1]).to(x.dtype)

        def _one_row(self, row: torch.Tensor) -> torch.Tensor:
            """row: fp16 (1, in) -> fp16 (1, out), without a host sync."""
            if getattr(self.weight, "CB", None) is not None:  # what bitsandbytes' first forward does
                self.init_8bit_state()
            ops = torch.ops.bitsandbytes
            cb, scb = self.state.CB, self.state.SCB  # int8 (out, in), fp32 (out,) row scales
            assert cb is not None and scb is not None, "the int8 weight was never loaded"
            k = min(INT8_OUTLIER_FEATURES, row.shape[-1])
            outlier_idx = row.abs().topk(k, dim=-1).indices[0]
            inliers = row.index_fill(-1, outlier_idx, 0.0)
            ca, sca, _ = ops.int8_vectorwise_quant.default(inliers, 0.0)
            bias = None if self.bias is None else self.bias.to(torch.float16)
            out = ops.int8_scaled_mm.default(ca, cb, sca, scb, bias=bias, dtype=torch.float16)
            outlier_weights = ops.int8_vectorwise_dequant.default(cb[:, outlier_idx].contiguous(), scb)
            return cast(torch.Tensor, out + row[:, outlier_idx] @ outlier_weights.to(torch.float16).t())

    return Int8Linear


def quantize_linears(root: nn.Module, plan: PrecisionPlan, kind: str | None = None) -> int:
    """Replace every ``nn.Linear`` under ``root`` (on meta) by its bitsandbytes twin. Returns count.

    ``kind``: "nf4" | "int8" | a float dtype name (nothing to do); default: the plan's layer choice.
    A single linear held by a parent is swapped with ``quantized_linear``.
    """
    kind = plan.linear_quant if kind is None else kind
    if kind not in QUANTIZED:
        return 0
    targets = [(name, mod) for name, mod in root.named_modules() if type(mod) is nn.Linear and name]
    for name, mod in targets:
        parent_name, _, child = name.rpartition(".")
        parent = root.get_submodule(parent_name) if parent_name else root
        setattr(parent, child, quantized_linear(mod, plan, kind))
    return len(targets)


def quantized_linear(mod: nn.Linear, plan: PrecisionPlan, kind: str) -> nn.Module:
    """The bitsandbytes layer (on meta) that replaces ``mod`` for ``kind`` "nf4" or "int8"."""
    import bitsandbytes as bnb

    bias = mod.bias is not None
    if kind == "nf4":
        layer = bnb.nn.Linear4bit(
            mod.in_features,
            mod.out_features,
            bias=bias,
            compute_dtype=plan.compute_dtype,
            compress_statistics=True,  # double quantization of the absmax constants
            quant_type="nf4",
            device="meta",
        )
        if mod.in_features % NF4_BLOCK or mod.out_features % CPU_PACK_ROWS:
            # bitsandbytes' AVX512-BF16 CPU path repacks the weight in tiles of whole blocks and
            # rows and fails for other shapes (0.50: "shape [512, 21] is invalid", "N must be
            # divisible by block_n"); its plain path works.
            layer.support_avx512bf16_for_cpu = False
        return layer
    return int8_linear_class()(
        mod.in_features,
        mod.out_features,
        bias=bias,
        has_fp16_weights=False,
        threshold=INT8_OUTLIER_THRESHOLD,
        device="meta",
    )


def assign_tensor(root: nn.Module, name: str, tensor: torch.Tensor, device: torch.device, dtype: torch.dtype) -> None:
    """Put ``tensor`` (CPU, checkpoint dtype) at ``root.<name>`` on ``device``; quantize bnb weights."""
    module_name, _, attr = name.rpartition(".")
    module = root.get_submodule(module_name) if module_name else root
    if attr in module._buffers:
        module._buffers[attr] = tensor.to(device=device, dtype=dtype)
        return
    kind = _bnb_kind(module)
    if kind is not None and attr == "weight":
        import bitsandbytes as bnb

        param: Any
        if kind == "nf4":
            # Quantized from the checkpoint's own half-precision values, on the target device.
            param = bnb.nn.Params4bit(
                tensor.contiguous(),
                requires_grad=False,
                compress_statistics=True,
                quant_type="nf4",
                module=cast("bnb.nn.Linear4bit", module),
            )
        else:
            param = bnb.nn.Int8Params(tensor.to(torch.float16), requires_grad=False, has_fp16_weights=False)
        module.weight = param.to(device)
        return
    if kind == "int8":
        dtype = torch.float16  # LLM.int8 adds its bias in fp16
    module._parameters[attr] = nn.Parameter(tensor.to(device=device, dtype=dtype), requires_grad=False)


def _bnb_kind(module: nn.Module) -> str | None:
    """"nf4" / "int8" for bitsandbytes' Linear4bit / Linear8bitLt (and subclasses), else None."""
    names = {cls.__name__ for cls in type(module).__mro__}
    if "Linear4bit" in names:
        return "nf4"
    return "int8" if "Linear8bitLt" in names else None


def meta_tensor_names(root: nn.Module) -> list[str]:
    """Parameters/buffers still on the meta device after loading (i.e. never filled)."""
    names = [n for n, p in root.named_parameters() if p.device.type == "meta"]
    names += [n for n, b in root.named_buffers() if b.device.type == "meta"]
    return names
