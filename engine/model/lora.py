"""LoRA layers on the Llama LLM and the unit decoder, via ``peft``, shared by training and inference.

The layers are injected in place (``peft.inject_adapter_in_model``): each targeted linear becomes a
peft LoRA wrapper that keeps the original module, untouched, as its ``base_layer``; removing them
puts those same objects back. The LoRA product is never merged into the base weights: merging
into 4-bit NF4 weights would re-quantize them (lossy), and unmerged layers can be swapped.

File names follow peft's own ``adapter_model.safetensors`` for a ``PeftModelForCausalLM`` over
``LlamaForCausalLM`` (``base_model.model.<module path>.lora_A.weight``), so the LLM part of an
adapter also loads with stock ``peft``; the unit decoder's LoRA uses the checkpoint's
``speech_generator.<module path>.lora_A.weight`` names.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

LORA_NAME = "omnitalk"
# Every linear of a Llama decoder layer (attention and MLP); the same names in the unit decoder.
LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
PEFT_LLM_PREFIX = "base_model.model."
UNIT_DECODER_PREFIX = "speech_generator."


@dataclass(frozen=True, slots=True)
class LoraSpec:
    """What shapes the LoRA layers (dropout only matters in training)."""

    rank: int = 16
    alpha: float = 32.0
    dropout: float = 0.05
    targets: tuple[str, ...] = LORA_TARGETS

    def peft_config(self, *, inference: bool = False) -> Any:
        from peft import LoraConfig

        return LoraConfig(
            r=self.rank,
            lora_alpha=self.alpha,  # type: ignore[arg-type]  # peft accepts any number
            lora_dropout=0.0 if inference else self.dropout,
            target_modules=list(self.targets),
            bias="none",
            inference_mode=inference,
        )

    def same_layers(self, other: LoraSpec) -> bool:
        """Same injected shapes and scaling: weights can be swapped without re-injecting."""
        return (self.rank, self.alpha, tuple(sorted(self.targets))) == (
            other.rank,
            other.alpha,
            tuple(sorted(other.targets)),
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "r": self.rank,
            "lora_alpha": self.alpha,
            "lora_dropout": self.dropout,
            "target_modules": list(self.targets),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> LoraSpec:
        targets = data.get("target_modules") or LORA_TARGETS
        if isinstance(targets, str):
            targets = [targets]
        return cls(
            rank=int(data["r"]),
            alpha=float(data.get("lora_alpha", data["r"])),
            dropout=float(data.get("lora_dropout", 0.0)),
            targets=tuple(sorted(str(t) for t in targets)),
        )


def peft_config_json(spec: LoraSpec, base_name: str) -> str:
    """``adapter_config.json`` as peft writes it (sets as lists, enums as their values)."""
    data = spec.peft_config().to_dict()
    for key, value in list(data.items()):
        if isinstance(value, set):
            data[key] = sorted(value)
        elif hasattr(value, "value") and not isinstance(value, (str, int, float, bool)):
            data[key] = value.value
    data["base_model_name_or_path"] = base_name
    data["task_type"] = "CAUSAL_LM"
    data["inference_mode"] = True
    return json.dumps(data, indent=2, sort_keys=True, default=str)


def lora_layers(root: nn.Module) -> dict[str, nn.Module]:
    """Module path -> peft LoRA wrapper, for every wrapper under ``root``."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    return {name: m for name, m in root.named_modules() if isinstance(m, BaseTunerLayer)}  # type: ignore[misc]


def inject_lora(root: nn.Module, spec: LoraSpec, *, inference: bool) -> int:
    """Wrap ``spec.targets`` under ``root`` with LoRA layers (B = 0: no change until trained/loaded)."""
    from peft import inject_adapter_in_model

    if lora_layers(root):
        raise RuntimeError("LoRA layers are already present; remove them first")
    inject_adapter_in_model(spec.peft_config(inference=inference), root, adapter_name=LORA_NAME)
    layers = lora_layers(root)
    for layer in layers.values():
        for param in lora_parameters(layer):
            param.requires_grad_(not inference)
    return len(layers)


def remove_lora(root: nn.Module) -> int:
    """Put every wrapped module's original ``base_layer`` back (same object, same storage)."""
    layers = lora_layers(root)
    for name, layer in layers.items():
        parent_name, _, child = name.rpartition(".")
        parent = root.get_submodule(parent_name) if parent_name else root
        setattr(parent, child, layer.get_base_layer())  # type: ignore[operator]
    if hasattr(root, "peft_config"):  # peft's bookkeeping of what it injected
        del root.peft_config
    return len(layers)


def lora_parameters(layer: nn.Module) -> list[nn.Parameter]:
    return [p for n, p in layer.named_parameters() if ".lora_" in f".{n}" and "base_layer" not in n]


def lora_named_parameters(root: nn.Module, prefix: str) -> dict[str, nn.Parameter]:
    """The LoRA parameters under their file names: ``<prefix><path>.lora_A.weight`` / ``.lora_B.weight``."""
    named: dict[str, nn.Parameter] = {}
    for name, layer in lora_layers(root).items():
        for part in ("lora_A", "lora_B"):
            named[f"{prefix}{name}.{part}.weight"] = getattr(layer, part)[LORA_NAME].weight
    return named


def lora_state(root: nn.Module, prefix: str) -> dict[str, torch.Tensor]:
    """File-format LoRA tensors (CPU, fp32)."""
    return {k: p.detach().to("cpu", torch.float32).contiguous() for k, p in lora_named_parameters(root, prefix).items()}


def load_lora_state(root: nn.Module, state: Mapping[str, torch.Tensor], prefix: str) -> None:
    """Copy file-format LoRA tensors into the injected layers, in place. Raises KeyError/ValueError."""
    layers = lora_layers(root)
    expected = {f"{prefix}{name}.{part}.weight" for name in layers for part in ("lora_A", "lora_B")}
    given = {k for k in state if k.startswith(prefix)}
    if given != expected:
        missing = sorted(expected - given)[:2]
        extra = sorted(given - expected)[:2]
        raise KeyError(f"LoRA tensors do not match the model's layers (missing {missing}, unexpected {extra})")
    with torch.no_grad():
        for name, layer in layers.items():
            for part in ("lora_A", "lora_B"):
                target = getattr(layer, part)[LORA_NAME].weight
                source = state[f"{prefix}{name}.{part}.weight"]
                if tuple(source.shape) != tuple(target.shape):
                    raise ValueError(
                        f"{prefix}{name}.{part}: shape {tuple(source.shape)}, model needs {tuple(target.shape)}"
                    )
                target.copy_(source.to(target.dtype))
