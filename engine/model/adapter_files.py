"""The adapter folder fine-tuning writes and inference reads, and the base-model fingerprint.

    ADAPTER/adapter_config.json           peft LoraConfig of the LLM's LoRA (stock peft format)
    ADAPTER/adapter_model.safetensors     the LLM's LoRA tensors (base_model.model.<path>.lora_{A,B}.weight)
    ADAPTER/speech_projector.safetensors  the whole speech adapter (model.speech_projector.*), if trained
    ADAPTER/speech_generator.safetensors  unit decoder: input/output projections and the LoRA of its
                                          layers (speech_generator.*), if stage 2 ran
    ADAPTER/omnitalk_adapter.json         format + version, base fingerprint, what was trained, the
                                          system prompt, data summary, metrics, options, date

An adapter belongs to one base model: ``base_fingerprint`` hashes config.json, every tensor's
name/dtype/shape, and the bytes of all small tensors (norms, biases: they move in any fine-tune),
so it tells two checkpoints of the same architecture apart in a few milliseconds without reading
the 16 GB of large matrices. The Whisper encoder (frozen, but the trained speech adapter depends
on it) is hashed the same way under its openai-whisper names, so the fingerprint is the same
whether the encoder sits in the shards, in large-v3.pt or in a Hugging Face folder.

Folders are written to ``NAME.partial`` and renamed into place.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from engine.errors import ModelCorrupt, ModelIncompatible, ModelMissing
from engine.model.encoder_loading import SHARD_ENCODER_PREFIX, open_encoder
from engine.model.lora import LoraSpec, peft_config_json
from engine.model.omni_config import CONFIG_NAME
from engine.model.safetensors_io import ShardSet, read_tensor

META_FILE = "omnitalk_adapter.json"
PEFT_CONFIG_FILE = "adapter_config.json"
PEFT_WEIGHTS_FILE = "adapter_model.safetensors"
PROJECTOR_FILE = "speech_projector.safetensors"
GENERATOR_FILE = "speech_generator.safetensors"
FORMAT_NAME = "omnitalk-adapter"
FORMAT_VERSION = 1
FINGERPRINT_SMALL_ELEMENTS = 65_536  # tensors up to this size are hashed byte for byte
FINGERPRINT_PREFIX = "sha256:"
SHORT_FINGERPRINT_CHARS = 12
PARTIAL_SUFFIX = ".partial"
RETRAIN_FIX = "Fine-tune again for this model, or load the model the adapter was made for."


@dataclass(frozen=True, slots=True)
class AdapterMeta:
    base_fingerprint: str
    base_name: str
    llm_lora: LoraSpec | None
    unit_lora: LoraSpec | None  # the unit decoder's LoRA (stage 2 on a quantized base)
    has_projector: bool
    has_generator: bool  # speech_generator.safetensors: the whole decoder, or LoRA + projections
    system_prompt: str
    stages: tuple[int, ...]
    created: str  # ISO 8601, UTC
    engine_version: str
    data: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    options: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT_NAME,
            "format_version": FORMAT_VERSION,
            "created": self.created,
            "engine_version": self.engine_version,
            "base_model": {"fingerprint": self.base_fingerprint, "name": self.base_name},
            "stages": list(self.stages),
            "trained": {
                "llm_lora": self.llm_lora.as_dict() if self.llm_lora else None,
                "speech_projector": self.has_projector,
                "speech_generator": self.has_generator,
                "unit_decoder_lora": self.unit_lora.as_dict() if self.unit_lora else None,
            },
            "system_prompt": self.system_prompt,
            "data": self.data,
            "metrics": self.metrics,
            "options": self.options,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any], path: Path) -> AdapterMeta:
        if data.get("format") != FORMAT_NAME:
            raise ModelIncompatible(f"{META_FILE} is not an OmniTalk adapter description.", path=path)
        version = data.get("format_version")
        if not isinstance(version, int) or version > FORMAT_VERSION:
            raise ModelIncompatible(
                f"The adapter has format version {version}; this OmniTalk reads up to {FORMAT_VERSION}.",
                path=path,
                fix="Update OmniTalk.",
            )
        try:
            trained = data["trained"]
            base = data["base_model"]
            return cls(
                base_fingerprint=str(base["fingerprint"]),
                base_name=str(base.get("name", "")),
                llm_lora=LoraSpec.from_dict(trained["llm_lora"]) if trained.get("llm_lora") else None,
                unit_lora=LoraSpec.from_dict(trained["unit_decoder_lora"])
                if trained.get("unit_decoder_lora")
                else None,
                has_projector=bool(trained.get("speech_projector")),
                has_generator=bool(trained.get("speech_generator")),
                system_prompt=str(data.get("system_prompt", "")),
                stages=tuple(int(s) for s in data.get("stages", ())),
                created=str(data.get("created", "")),
                engine_version=str(data.get("engine_version", "")),
                data=dict(data.get("data") or {}),
                metrics=dict(data.get("metrics") or {}),
                options=dict(data.get("options") or {}),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ModelCorrupt(f"{META_FILE} lacks or mangles a field: {exc}", path=path, fix=RETRAIN_FIX) from exc


def short_fingerprint(fingerprint: str) -> str:
    return fingerprint.removeprefix(FINGERPRINT_PREFIX)[:SHORT_FINGERPRINT_CHARS]


def _hash_tensors(digest: Any, shapes: dict[str, tuple[int, ...]], read: Callable[[str], torch.Tensor]) -> None:
    for key in sorted(shapes):
        digest.update(f"{key}|{tuple(shapes[key])}".encode())
    for key in sorted(shapes):
        if torch.Size(shapes[key]).numel() <= FINGERPRINT_SMALL_ELEMENTS:
            tensor = read(key).contiguous()
            digest.update(str(tensor.dtype).encode() + tensor.view(torch.uint8).numpy().tobytes())


def base_fingerprint(model_dir: str | Path, speech_encoder: str | Path | None = None) -> str:
    """``sha256:...`` of a model folder and its speech encoder (see the module docstring)."""
    model_dir = Path(model_dir)
    digest = hashlib.sha256()
    config = json.loads((model_dir / CONFIG_NAME).read_text(encoding="utf-8"))
    config.pop("_name_or_path", None)  # where it was saved from, not what it is
    digest.update(json.dumps(config, sort_keys=True).encode())
    shards = ShardSet.open(model_dir)
    entries = {k: e for k, e in shards.entries.items() if not k.startswith(SHARD_ENCODER_PREFIX)}
    _hash_tensors(digest, {k: e.shape for k, e in entries.items()}, lambda k: read_tensor(entries[k]))
    encoder = open_encoder(model_dir, shards, config.get("speech_encoder"), speech_encoder)
    digest.update(b"encoder")
    _hash_tensors(digest, encoder.shapes, encoder.read)
    return FINGERPRINT_PREFIX + digest.hexdigest()


def now_iso() -> str:
    return datetime.now(timezone.utc).replace(microsecond=0).isoformat()


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return  # Windows: directories cannot be opened; rename is still atomic there
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_adapter(
    folder: Path,
    meta: AdapterMeta,
    *,
    llm_lora: dict[str, torch.Tensor] | None,
    projector: dict[str, torch.Tensor] | None,
    generator: dict[str, torch.Tensor] | None,
) -> Path:
    """Write the folder next to ``folder`` and rename it into place (an older one is replaced)."""
    folder = Path(folder)
    partial = folder.with_name(folder.name + PARTIAL_SUFFIX)
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    metadata = {"format": "pt", "omnitalk_base": meta.base_fingerprint}
    if llm_lora is not None and meta.llm_lora is not None:
        (partial / PEFT_CONFIG_FILE).write_text(peft_config_json(meta.llm_lora, meta.base_name), encoding="utf-8")
        save_file(llm_lora, str(partial / PEFT_WEIGHTS_FILE), metadata=metadata)
    if projector is not None:
        save_file(projector, str(partial / PROJECTOR_FILE), metadata=metadata)
    if generator is not None:
        save_file(generator, str(partial / GENERATOR_FILE), metadata=metadata)
    (partial / META_FILE).write_text(json.dumps(meta.as_dict(), indent=2), encoding="utf-8")
    _fsync_dir(partial)
    if folder.exists():
        old = folder.with_name(folder.name + ".old")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(folder, old)
        os.replace(partial, folder)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(partial, folder)
    _fsync_dir(folder.parent)
    return folder


def read_meta(folder: str | Path) -> AdapterMeta:
    """Check the folder holds every file its description promises; -> the description."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ModelMissing("The adapter folder does not exist.", path=folder, fix="Choose an adapter folder.")
    meta_path = folder / META_FILE
    if not meta_path.is_file():
        hint = " (a plain peft adapter?)" if (folder / PEFT_CONFIG_FILE).is_file() else ""
        raise ModelIncompatible(
            f"The folder has no {META_FILE}{hint}.", path=folder, fix="Choose a folder made by OmniTalk's fine-tuning."
        )
    try:
        data = json.loads(meta_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelCorrupt(f"Cannot read {META_FILE}: {exc}", path=meta_path, fix=RETRAIN_FIX) from exc
    if not isinstance(data, dict):
        raise ModelCorrupt(f"{META_FILE} is not a JSON object.", path=meta_path, fix=RETRAIN_FIX)
    meta = AdapterMeta.from_dict(data, meta_path)
    needed = []
    if meta.llm_lora is not None:
        needed.append(PEFT_WEIGHTS_FILE)
    if meta.has_projector:
        needed.append(PROJECTOR_FILE)
    if meta.has_generator:
        needed.append(GENERATOR_FILE)
    for name in needed:
        if not (folder / name).is_file():
            raise ModelMissing(f"The adapter lacks {name}.", path=folder / name, fix=RETRAIN_FIX)
    return meta


def read_tensors(path: Path) -> dict[str, torch.Tensor]:
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise ModelCorrupt(f"Cannot read {path.name}: {exc}", path=path, fix=RETRAIN_FIX) from exc


def check_base(meta: AdapterMeta, fingerprint: str, folder: Path, model_dir: Path) -> None:
    if meta.base_fingerprint != fingerprint:
        raise ModelIncompatible(
            f"This adapter was made for another base model (adapter's base {short_fingerprint(meta.base_fingerprint)}"
            f"{' ' + meta.base_name if meta.base_name else ''}; loaded model {short_fingerprint(fingerprint)} "
            f"from {model_dir.name}).",
            path=folder,
            fix=RETRAIN_FIX,
        )
