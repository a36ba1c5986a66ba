"""Apply a fine-tuned adapter to a loaded ``OmniModel``, switch to another, or back to none,
without reloading the base model.

What changes, all in place:

- LLM: LoRA layers wrap the Llama linears (``engine.model.lora``), unmerged. Switching between
  adapters with the same LoRA shape copies the new tensors into the existing layers; another
  shape removes the layers and injects new ones; "none" removes them. The wrapped linears (NF4 or
  full precision) are the base model's own objects throughout: their storage is never written.
- Speech adapter (projector) and the unit decoder: the adapter's tensors are copied into the
  existing parameters (a 4-/8-bit decoder layer is re-quantized from them, as the loader does);
  going back re-reads the base values of exactly those tensors from the model's shards. A decoder
  trained with LoRA (on a quantized base) brings LoRA layers plus its input/output projections.

Every file is read and every shape checked before anything changes, so a bad adapter leaves the
current one in use. ``ModelIncompatible`` names both fingerprints when the adapter was made for
another base model.

Owner: the ``OmniModel`` (its ``use_adapter``); callers switch adapters between turns, on the
thread that runs the model.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import nn

from engine.errors import ModelIncompatible
from engine.model.adapter_files import (
    GENERATOR_FILE,
    PEFT_WEIGHTS_FILE,
    PROJECTOR_FILE,
    RETRAIN_FIX,
    AdapterMeta,
    base_fingerprint,
    check_base,
    read_meta,
    read_tensors,
    short_fingerprint,
)
from engine.model.loader import ADAPTER_PREFIX, UNIT_DECODER_PREFIX
from engine.model.lora import (
    PEFT_LLM_PREFIX,
    LoraSpec,
    inject_lora,
    load_lora_state,
    lora_layers,
    remove_lora,
)
from engine.model.quant import assign_tensor
from engine.model.safetensors_io import ShardSet, read_tensor

if TYPE_CHECKING:
    from engine.model.omni import OmniModel

logger = logging.getLogger(__name__)

QUANTIZED_LINEARS = ("Linear4bit", "Linear8bitLt")
LORA_MARK = ".lora_"


@dataclass(frozen=True, slots=True)
class ActiveAdapter:
    path: Path
    meta: AdapterMeta

    def describe(self) -> str:
        data = self.meta.data
        pairs = f"{data.get('train', '?')} pairs" if data else "unknown data"
        stages = "+".join(str(s) for s in self.meta.stages) or "?"
        return f"adapter {self.path.name} (stage {stages}, {pairs}, {self.meta.created[:10]})"


def _owner(root: nn.Module, local: str) -> tuple[nn.Module, str]:
    """The module holding parameter ``local`` (LoRA wrappers are looked through) and its attribute."""
    module_path, _, attr = local.rpartition(".")
    module = root.get_submodule(module_path) if module_path else root
    base = getattr(module, "get_base_layer", None)
    return (base() if callable(base) else module), attr


def _expected_shape(root: nn.Module, local: str) -> tuple[int, ...] | None:
    try:
        module, attr = _owner(root, local)
    except AttributeError:
        return None
    if type(module).__name__ in QUANTIZED_LINEARS and attr == "weight":
        return (int(getattr(module, "out_features")), int(getattr(module, "in_features")))  # noqa: B009 (stored packed)
    param = getattr(module, attr, None)
    return tuple(param.shape) if isinstance(param, torch.Tensor) else None


def _check_full(root: nn.Module, state: Mapping[str, torch.Tensor], prefix: str, what: str, path: Path) -> None:
    for key, tensor in state.items():
        want = _expected_shape(root, key[len(prefix) :]) if key.startswith(prefix) else None
        if want is None:
            raise ModelIncompatible(f"The adapter's {what} has an unknown tensor {key}.", path=path, fix=RETRAIN_FIX)
        if tuple(tensor.shape) != want:
            raise ModelIncompatible(
                f"The adapter's {key} has shape {tuple(tensor.shape)}; this model needs {want}.",
                path=path,
                fix=RETRAIN_FIX,
            )


def _check_lora(root: nn.Module, state: Mapping[str, torch.Tensor], prefix: str, spec: LoraSpec, path: Path) -> None:
    """Shapes against the base linears (in/out features), before any layer is touched."""
    for key, tensor in state.items():
        if not key.startswith(prefix) or not key.endswith((".lora_A.weight", ".lora_B.weight")):
            raise ModelIncompatible(f"Unexpected LoRA tensor {key}.", path=path, fix=RETRAIN_FIX)
        module_path = key[len(prefix) :].rsplit(".", 2)[0]
        try:
            module = root.get_submodule(module_path)
        except AttributeError as exc:
            raise ModelIncompatible(f"The adapter targets {module_path}, which this model lacks.", path=path) from exc
        get_base = getattr(module, "get_base_layer", None)
        base = get_base() if callable(get_base) else module
        in_f, out_f = getattr(base, "in_features", None), getattr(base, "out_features", None)
        want = (spec.rank, in_f) if key.endswith("lora_A.weight") else (out_f, spec.rank)
        if tuple(tensor.shape) != want:
            raise ModelIncompatible(
                f"LoRA tensor {key} has shape {tuple(tensor.shape)}; this model needs {want}.",
                path=path,
                fix=RETRAIN_FIX,
            )


class AdapterSlot:
    """The adapter state of one model (see the module docstring)."""

    def __init__(self, model: OmniModel) -> None:
        self.model = model
        self.active: ActiveAdapter | None = None
        self._fingerprint: str | None = None
        self._llm_spec: LoraSpec | None = None
        self._unit_spec: LoraSpec | None = None
        self._projector_keys: set[str] = set()  # tensors that now differ from the base
        self._generator_keys: set[str] = set()

    @property
    def model_dir(self) -> Path:
        return Path(self.model.config.folder)

    @property
    def fingerprint(self) -> str:
        if self._fingerprint is None:
            source = self.model.encoder_source
            encoder = None if source.kind == "omni_shards" else source.path
            self._fingerprint = base_fingerprint(self.model_dir, encoder)
        return self._fingerprint

    def apply(self, path: str | Path | None) -> ActiveAdapter | None:
        if path is None:
            self._set_llm_lora(None, {})
            self._set_unit_lora(None, {})
            self._restore_projector()
            self._restore_generator()
            self.active = None
            logger.info("adapter removed: back to the base model")
            return None
        folder = Path(path).expanduser()
        meta = read_meta(folder)
        check_base(meta, self.fingerprint, folder, self.model_dir)
        llm_state = read_tensors(folder / PEFT_WEIGHTS_FILE) if meta.llm_lora else {}
        projector = read_tensors(folder / PROJECTOR_FILE) if meta.has_projector else {}
        generator = read_tensors(folder / GENERATOR_FILE) if meta.has_generator else {}
        generator_full = {k: v for k, v in generator.items() if LORA_MARK not in k}
        generator_lora = {k: v for k, v in generator.items() if LORA_MARK in k}
        m = self.model
        if meta.llm_lora:
            _check_lora(m.llm, llm_state, PEFT_LLM_PREFIX, meta.llm_lora, folder)
        _check_full(m.adapter, projector, ADAPTER_PREFIX, "speech projector", folder)
        _check_full(m.unit_decoder, generator_full, UNIT_DECODER_PREFIX, "unit decoder", folder)
        if meta.unit_lora:
            _check_lora(m.unit_decoder, generator_lora, UNIT_DECODER_PREFIX, meta.unit_lora, folder)
        elif generator_lora:
            raise ModelIncompatible("The unit decoder's LoRA has no description.", path=folder, fix=RETRAIN_FIX)
        try:
            self._set_llm_lora(meta.llm_lora, llm_state)
            self._set_unit_lora(meta.unit_lora, generator_lora)
            self._restore_projector(keep=set(projector))
            self._write_into(m.adapter, projector, ADAPTER_PREFIX)
            self._projector_keys = set(projector)
            self._restore_generator(keep=set(generator_full))
            self._write_into(m.unit_decoder, generator_full, UNIT_DECODER_PREFIX)
            self._generator_keys = set(generator_full)
        except BaseException:
            logger.exception("applying %s failed half-way; back to the base model", folder)
            self.apply(None)
            raise
        self.active = ActiveAdapter(folder, meta)
        logger.info("adapter %s applied (base %s)", folder, short_fingerprint(self.fingerprint))
        return self.active

    # ------------------------------------------------------------------------------ parts

    def _set_llm_lora(self, spec: LoraSpec | None, state: Mapping[str, torch.Tensor]) -> None:
        self._llm_spec = self._set_lora(self.model.llm, self._llm_spec, spec, state, PEFT_LLM_PREFIX)

    def _set_unit_lora(self, spec: LoraSpec | None, state: Mapping[str, torch.Tensor]) -> None:
        self._unit_spec = self._set_lora(self.model.unit_decoder, self._unit_spec, spec, state, UNIT_DECODER_PREFIX)

    @staticmethod
    def _set_lora(
        root: nn.Module, current: LoraSpec | None, spec: LoraSpec | None, state: Mapping[str, torch.Tensor], prefix: str
    ) -> LoraSpec | None:
        if spec is None:
            if current is not None:
                remove_lora(root)
            return None
        if current is None or not current.same_layers(spec) or not lora_layers(root):
            if current is not None:
                remove_lora(root)
            inject_lora(root, spec, inference=True)
            root.eval()
        load_lora_state(root, state, prefix)
        return spec

    def _write_into(self, root: nn.Module, state: Mapping[str, torch.Tensor], prefix: str) -> None:
        """Copy into existing parameters; quantized linears are re-quantized from the new values."""
        plan = self.model.plan
        with torch.no_grad():
            for key, tensor in state.items():
                module, attr = _owner(root, key[len(prefix) :])
                if type(module).__name__ in QUANTIZED_LINEARS and attr == "weight":
                    assign_tensor(module, attr, tensor, plan.device, plan.compute_dtype)
                else:
                    target = getattr(module, attr)
                    target.copy_(tensor.to(device=target.device, dtype=target.dtype))

    def _base_tensors(self, keys: set[str]) -> dict[str, torch.Tensor]:
        if not keys:
            return {}
        shards = ShardSet.open(self.model_dir)
        return {k: read_tensor(shards.entries[k]) for k in sorted(keys)}

    def _restore_projector(self, keep: set[str] | None = None) -> None:
        """Base values back for the tensors an adapter changed (except those about to be overwritten)."""
        keys = self._projector_keys - (keep or set())
        self._write_into(self.model.adapter, self._base_tensors(keys), ADAPTER_PREFIX)
        self._projector_keys -= keys

    def _restore_generator(self, keep: set[str] | None = None) -> None:
        keys = self._generator_keys - (keep or set())
        self._write_into(self.model.unit_decoder, self._base_tensors(keys), UNIT_DECODER_PREFIX)
        self._generator_keys -= keys
