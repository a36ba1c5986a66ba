"""Device choice, per-part precision, and bitsandbytes layers for ``nf4`` / ``int8``.

Policy (``make_plan``), per mode: what the Llama and unit-decoder layers become; the compute dtype;
the adapter; the output heads (lm_head, unit output_proj); Whisper.

- nf4: NF4 with double quant (bnb Linear4bit); bf16 if the GPU has it, else fp16 (fp32 on CPU);
  adapter fp32; heads in the compute dtype; Whisper fp16 on GPU.
- int8: LLM.int8 (bnb Linear8bitLt); fp16 (fp32 on CPU); adapter fp32; heads in compute dtype.
- fp16 / bf16 / fp32: everything in that dtype, Whisper fp16 on GPU.

On CPU Whisper runs in fp32 (bf16 in bf16 mode). On CUDA the token-embedding table (1 GB for
Llama-3.1) stays in host RAM: we always feed ``inputs_embeds`` (the speech splice needs it), so a
row lookup on the host plus a 8 KB copy per token replaces 1 GB of VRAM.

bitsandbytes quantizes a weight when it moves to a device (``Params4bit.to``), so each layer is
quantized as its tensor is read: the full-precision model never exists in memory.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, cast

import torch
from torch import nn

from engine.config import QUANT_MODES, QuantMode
from engine.errors import BadInput, DeviceUnavailable, Reason


@dataclass(frozen=True, slots=True)
class PrecisionPlan:
    quant: QuantMode
    device: torch.device
    compute_dtype: torch.dtype
    encoder_dtype: torch.dtype
    adapter_dtype: torch.dtype
    head_dtype: torch.dtype
    linear_quant: str | None  # "nf4" | "int8" | None
    embed_on_host: bool

    @property
    def embed_device(self) -> torch.device:
        return torch.device("cpu") if self.embed_on_host else self.device


def resolve_device(device: str | torch.device | None) -> torch.device:
    """None / "auto": CUDA when available, else CPU. "cuda" without a GPU is an error."""
    if device is None or str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise DeviceUnavailable(
            "CUDA was requested but no usable NVIDIA GPU/driver was found.",
            fix="Install the NVIDIA driver and a CUDA build of PyTorch, or run on the CPU.",
            reason=Reason.CUDA_UNAVAILABLE,
            facts={"device": str(device)},
        )
    if dev.type not in ("cuda", "cpu"):
        raise DeviceUnavailable(f"Unsupported device {device!r}.", fix="Use 'cuda' or 'cpu'.")
    return dev


def _cuda_bf16(device: torch.device) -> bool:
    return device.type == "cuda" and torch.cuda.is_bf16_supported()


def make_plan(mode: str, device: torch.device) -> PrecisionPlan:
    """How each part is stored and computed for precision ``mode`` on ``device`` (the default mode
    when the user has none is ``engine.preflight.default_quant``'s)."""
    if mode not in QUANT_MODES:
        raise BadInput(f"Unknown quantization {mode!r}.", fix=f"Use one of {', '.join(QUANT_MODES)}.")
    cuda = device.type == "cuda"
    if mode in ("nf4", "int8"):
        _require_bitsandbytes()
        if mode == "nf4":
            compute = (torch.bfloat16 if _cuda_bf16(device) else torch.float16) if cuda else torch.float32
        else:
            compute = torch.float16 if cuda else torch.float32
        adapter, head, linear_quant = torch.float32, compute, mode
    else:
        compute = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}[mode]
        if mode == "bf16" and cuda and not _cuda_bf16(device):
            raise DeviceUnavailable(
                "This GPU does not support bf16.",
                fix="Use fp16 or nf4 instead.",
                reason=Reason.BF16_UNSUPPORTED,
                facts={"device": str(device)},
            )
        adapter, head, linear_quant = compute, compute, None
    encoder = torch.float16 if cuda else (torch.bfloat16 if mode == "bf16" else torch.float32)
    return PrecisionPlan(
        quant=cast(QuantMode, mode),
        device=device,
        compute_dtype=compute,
        encoder_dtype=encoder,
        adapter_dtype=adapter,
        head_dtype=head,
        linear_quant=linear_quant,
        embed_on_host=cuda,
    )


def _require_bitsandbytes() -> None:
    try:
        import bitsandbytes  # noqa: F401
    except ImportError as exc:
        raise DeviceUnavailable(
            "4-bit/8-bit modes need the bitsandbytes package.",
            fix="Install bitsandbytes, or choose fp16/bf16/fp32.",
        ) from exc


def quantize_linears(root: nn.Module, plan: PrecisionPlan) -> int:
    """Replace every ``nn.Linear`` under ``root`` (on meta) by its bitsandbytes twin. Returns count."""
    if plan.linear_quant is None:
        return 0
    import bitsandbytes as bnb

    targets = [(name, mod) for name, mod in root.named_modules() if type(mod) is nn.Linear]
    for name, mod in targets:
        parent_name, _, child = name.rpartition(".")
        parent = root.get_submodule(parent_name) if parent_name else root
        bias = mod.bias is not None
        new: nn.Module
        if plan.linear_quant == "nf4":
            new = bnb.nn.Linear4bit(
                mod.in_features,
                mod.out_features,
                bias=bias,
                compute_dtype=plan.compute_dtype,
                compress_statistics=True,  # double quantization of the absmax constants
                quant_type="nf4",
                device="meta",
            )
        else:
            new = bnb.nn.Linear8bitLt(
                mod.in_features, mod.out_features, bias=bias, has_fp16_weights=False, threshold=6.0, device="meta"
            )
        setattr(parent, child, new)
    return len(targets)


def assign_tensor(root: nn.Module, name: str, tensor: torch.Tensor, device: torch.device, dtype: torch.dtype) -> None:
    """Put ``tensor`` (CPU, checkpoint dtype) at ``root.<name>`` on ``device``; quantize bnb weights."""
    module_name, _, attr = name.rpartition(".")
    module = root.get_submodule(module_name) if module_name else root
    if attr in module._buffers:
        module._buffers[attr] = tensor.to(device=device, dtype=dtype)
        return
    kind = module.__class__.__name__ if attr == "weight" else ""
    if kind in ("Linear4bit", "Linear8bitLt"):
        import bitsandbytes as bnb

        param: Any
        if kind == "Linear4bit":
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
    module._parameters[attr] = nn.Parameter(tensor.to(device=device, dtype=dtype), requires_grad=False)


def meta_tensor_names(root: nn.Module) -> list[str]:
    """Parameters/buffers still on the meta device after loading (i.e. never filled)."""
    names = [n for n, p in root.named_parameters() if p.device.type == "meta"]
    names += [n for n, b in root.named_buffers() if b.device.type == "meta"]
    return names
