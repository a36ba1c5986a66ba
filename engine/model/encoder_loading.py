"""Find and read the Whisper-large-v3 encoder in any of its three published layouts.

Search order (first hit wins):

1. The path the user gives (``--speech-encoder``, Settings): an openai-whisper ``.pt`` or a
   Hugging Face folder. Given explicitly, it wins over an encoder inside the Omni shards.
2. ``model.speech_encoder.*`` inside the Omni shards (openai-whisper names, no ``encoder.``).
3. An openai-whisper checkpoint ``{"dims": {...}, "model_state_dict": {...}}`` at the config's
   ``speech_encoder`` (``models/speech_encoder/large-v3.pt``) resolved against the model folder,
   its parent and grandparent, or ``<parent>/speech_encoder/<name>``.
4. A Hugging Face ``openai/whisper-large-v3`` folder (``config.json`` + safetensors, HF names)
   found as ``<parent>/whisper-large-v3``.

Finding the encoder reads headers only (safetensors headers, the ``.pt``'s pickle via
``pt_header``: no torch import, no weights), so a folder check is fast. A ``.pt``'s stored
``dims`` are authoritative. Weights are read on the first ``iter_tensors``: ``.pt`` files with
``torch.load(weights_only=True, mmap=True)`` (no pickled code runs, only the encoder's pages are
touched).
"""

from __future__ import annotations

import logging
import pickle
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from engine.config import WHISPER_HEAD_DIM, EncoderDims
from engine.errors import ModelCorrupt, ModelIncompatible, ModelMissing, Reason
from engine.model.omni_config import read_json
from engine.model.pt_header import DamagedCheckpoint, NotAZipCheckpoint, TensorHeader, UnsafePickle, read_pt_header
from engine.model.safetensors_io import ShardSet, read_tensor

if TYPE_CHECKING:
    import torch

logger = logging.getLogger(__name__)

SHARD_ENCODER_PREFIX = "model.speech_encoder."
PT_ENCODER_PREFIX = "encoder."
HF_FOLDER_NAME = "whisper-large-v3"
EncoderKind = Literal["omni_shards", "whisper_pt", "hf_folder"]

# openai-whisper name <-> Hugging Face Whisper name (encoder and decoder), as (regex, replacement).
_OPENAI_TO_HF: tuple[tuple[str, str], ...] = (
    (r"^encoder\.positional_embedding$", "model.encoder.embed_positions.weight"),
    (r"^decoder\.positional_embedding$", "model.decoder.embed_positions.weight"),
    (r"^decoder\.token_embedding\.", "model.decoder.embed_tokens."),
    (r"^encoder\.ln_post\.", "model.encoder.layer_norm."),
    (r"^decoder\.ln\.", "model.decoder.layer_norm."),
    (r"^(encoder|decoder)\.conv(\d)\.", r"model.\1.conv\2."),
    (r"^(encoder|decoder)\.blocks\.(\d+)\.attn\.query\.", r"model.\1.layers.\2.self_attn.q_proj."),
    (r"^(encoder|decoder)\.blocks\.(\d+)\.attn\.key\.", r"model.\1.layers.\2.self_attn.k_proj."),
    (r"^(encoder|decoder)\.blocks\.(\d+)\.attn\.value\.", r"model.\1.layers.\2.self_attn.v_proj."),
    (r"^(encoder|decoder)\.blocks\.(\d+)\.attn\.out\.", r"model.\1.layers.\2.self_attn.out_proj."),
    (r"^(encoder|decoder)\.blocks\.(\d+)\.attn_ln\.", r"model.\1.layers.\2.self_attn_layer_norm."),
    (r"^decoder\.blocks\.(\d+)\.cross_attn\.query\.", r"model.decoder.layers.\1.encoder_attn.q_proj."),
    (r"^decoder\.blocks\.(\d+)\.cross_attn\.key\.", r"model.decoder.layers.\1.encoder_attn.k_proj."),
    (r"^decoder\.blocks\.(\d+)\.cross_attn\.value\.", r"model.decoder.layers.\1.encoder_attn.v_proj."),
    (r"^decoder\.blocks\.(\d+)\.cross_attn\.out\.", r"model.decoder.layers.\1.encoder_attn.out_proj."),
    (r"^decoder\.blocks\.(\d+)\.cross_attn_ln\.", r"model.decoder.layers.\1.encoder_attn_layer_norm."),
    (r"^(encoder|decoder)\.blocks\.(\d+)\.mlp\.0\.", r"model.\1.layers.\2.fc1."),
    (r"^(encoder|decoder)\.blocks\.(\d+)\.mlp\.2\.", r"model.\1.layers.\2.fc2."),
    (r"^(encoder|decoder)\.blocks\.(\d+)\.mlp_ln\.", r"model.\1.layers.\2.final_layer_norm."),
)
_HF_ENCODER_TO_OPENAI: tuple[tuple[str, str], ...] = (
    (r"^embed_positions\.weight$", "positional_embedding"),
    (r"^layer_norm\.", "ln_post."),
    (r"^layers\.(\d+)\.self_attn\.q_proj\.", r"blocks.\1.attn.query."),
    (r"^layers\.(\d+)\.self_attn\.k_proj\.", r"blocks.\1.attn.key."),
    (r"^layers\.(\d+)\.self_attn\.v_proj\.", r"blocks.\1.attn.value."),
    (r"^layers\.(\d+)\.self_attn\.out_proj\.", r"blocks.\1.attn.out."),
    (r"^layers\.(\d+)\.self_attn_layer_norm\.", r"blocks.\1.attn_ln."),
    (r"^layers\.(\d+)\.fc1\.", r"blocks.\1.mlp.0."),
    (r"^layers\.(\d+)\.fc2\.", r"blocks.\1.mlp.2."),
    (r"^layers\.(\d+)\.final_layer_norm\.", r"blocks.\1.mlp_ln."),
)


def _rename(name: str, table: tuple[tuple[str, str], ...]) -> str | None:
    for pattern, repl in table:
        new, n = re.subn(pattern, repl, name)
        if n:
            return new
    return None


def openai_to_hf_name(name: str) -> str:
    """openai-whisper state-dict name -> Hugging Face ``WhisperForConditionalGeneration`` name."""
    new = _rename(name, _OPENAI_TO_HF)
    if new is None:
        raise KeyError(f"no Hugging Face name for {name!r}")
    return new


def hf_to_openai_encoder_name(name: str) -> str | None:
    """HF encoder-local name (``layers.0.fc1.weight``) -> openai name (``blocks.0.mlp.0.weight``)."""
    if name.startswith(("conv1.", "conv2.")):
        return name
    return _rename(name, _HF_ENCODER_TO_OPENAI)


def dims_from_shapes(shapes: dict[str, tuple[int, ...]], path: Path) -> EncoderDims:
    """Encoder dims from openai-named weight shapes (heads: every Whisper uses 64-dim heads)."""
    try:
        n_state, n_mels, _k = shapes["conv1.weight"]
        n_ctx = shapes["positional_embedding"][0]
    except (KeyError, ValueError) as exc:
        raise ModelIncompatible("The speech encoder weights lack conv1/positional_embedding.", path=path) from exc
    n_layer = len({k.split(".")[1] for k in shapes if k.startswith("blocks.")})
    return EncoderDims(n_mels, n_ctx, n_state, max(1, n_state // WHISPER_HEAD_DIM), n_layer)


@dataclass(frozen=True, slots=True)
class EncoderSource:
    kind: EncoderKind
    path: Path
    dims: EncoderDims


class EncoderCheckpoint:
    """Encoder weights under openai-whisper names: shapes known at once, tensors read on demand."""

    def __init__(
        self,
        source: EncoderSource,
        shapes: dict[str, tuple[int, ...]],
        open_reader: Callable[[], Callable[[str], torch.Tensor]],
    ) -> None:
        self.source = source
        self.shapes = shapes
        self._open_reader = open_reader  # () -> (name -> CPU tensor); may read the whole file index
        self._reader: Callable[[str], torch.Tensor] | None = None  # opened by the first read()

    def iter_tensors(self) -> Iterator[tuple[str, torch.Tensor]]:
        reader = self._open_reader()
        for name in self.shapes:
            yield name, reader(name)

    def read(self, name: str) -> torch.Tensor:
        """One tensor (CPU, checkpoint dtype) by its openai-whisper name (the file is opened once)."""
        if self._reader is None:
            self._reader = self._open_reader()
        return self._reader(name)


def _from_shards(shards: ShardSet) -> EncoderCheckpoint:
    entries = {k[len(SHARD_ENCODER_PREFIX) :]: shards.entries[k] for k in shards.keys_with_prefix(SHARD_ENCODER_PREFIX)}
    shapes = {k: e.shape for k, e in entries.items()}
    source = EncoderSource("omni_shards", shards.folder, dims_from_shapes(shapes, shards.folder))
    return EncoderCheckpoint(source, shapes, lambda: lambda name: read_tensor(entries[name]))


def _refused(path: Path, exc: Exception) -> ModelCorrupt:
    return ModelCorrupt(
        "The Whisper checkpoint contains objects other than plain weights; OmniTalk never runs code "
        f"from model files ({exc}).",
        path=path,
        fix="Download the official large-v3.pt again.",
    )


def _damaged(path: Path, exc: Exception) -> ModelCorrupt:
    return ModelCorrupt(
        f"The Whisper checkpoint cannot be read (truncated or damaged): {exc}",
        path=path,
        fix="Download large-v3.pt again.",
    )


def _load_pt(path: Path) -> Mapping[str, Any]:
    """The checkpoint's structure with tensors as TensorHeaders (headers only; torch for legacy files)."""
    try:
        ckpt = read_pt_header(path)
    except FileNotFoundError as exc:
        raise ModelMissing("The Whisper checkpoint is missing.", path=path, fix="Download large-v3.pt.") from exc
    except UnsafePickle as exc:
        raise _refused(path, exc) from exc
    except (DamagedCheckpoint, OSError) as exc:
        raise _damaged(path, exc) from exc
    except NotAZipCheckpoint:
        ckpt = _torch_load(path)  # the pre-1.6 format (or a damaged file): torch reads or refuses it
    if not isinstance(ckpt, dict) or "dims" not in ckpt or "model_state_dict" not in ckpt:
        raise ModelIncompatible(
            "This .pt file is not an openai-whisper checkpoint (no dims/model_state_dict).",
            path=path,
            fix="Use openai-whisper's large-v3.pt.",
        )
    return ckpt


def _torch_load(path: Path) -> Any:
    import torch

    try:
        try:
            ckpt = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError as exc:
            if "mmap" not in str(exc):
                raise
            ckpt = torch.load(path, map_location="cpu", weights_only=True)  # legacy (non-zip) format
    except FileNotFoundError as exc:
        raise ModelMissing("The Whisper checkpoint is missing.", path=path, fix="Download large-v3.pt.") from exc
    except pickle.UnpicklingError as exc:
        raise _refused(path, exc) from exc
    except (RuntimeError, EOFError, OSError, ValueError) as exc:
        raise _damaged(path, exc) from exc
    return ckpt


def _shape(value: Any) -> tuple[int, ...]:
    return value.shape if isinstance(value, TensorHeader) else tuple(value.shape)


def _from_pt(path: Path) -> EncoderCheckpoint:
    ckpt = _load_pt(path)
    state = ckpt["model_state_dict"]
    shapes = {k[len(PT_ENCODER_PREFIX) :]: _shape(v) for k, v in state.items() if k.startswith(PT_ENCODER_PREFIX)}
    d = ckpt["dims"]
    try:
        dims = EncoderDims(
            int(d["n_mels"]),
            int(d["n_audio_ctx"]),
            int(d["n_audio_state"]),
            int(d["n_audio_head"]),
            int(d["n_audio_layer"]),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise ModelIncompatible(f"The Whisper checkpoint's dims are incomplete: {exc}", path=path) from exc

    def open_reader() -> Callable[[str], torch.Tensor]:
        tensors = _torch_load(path)["model_state_dict"]
        return lambda name: tensors[PT_ENCODER_PREFIX + name]

    return EncoderCheckpoint(EncoderSource("whisper_pt", path, dims), shapes, open_reader)


def _from_hf(folder: Path) -> EncoderCheckpoint:
    cfg = read_json(folder / "config.json")
    if cfg.get("model_type") != "whisper":
        raise ModelIncompatible(
            f"{folder.name}/config.json is not a Whisper config.",
            path=folder / "config.json",
            fix="Choose the openai/whisper-large-v3 folder.",
        )
    shards = ShardSet.open(folder)
    entries = {}
    for key, entry in shards.entries.items():
        local = key.removeprefix("model.")
        if local.startswith("encoder."):
            name = hf_to_openai_encoder_name(local[len("encoder.") :])
            if name is not None:
                entries[name] = entry
    try:
        dims = EncoderDims(
            int(cfg["num_mel_bins"]),
            int(cfg["max_source_positions"]),
            int(cfg["d_model"]),
            int(cfg["encoder_attention_heads"]),
            int(cfg["encoder_layers"]),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise ModelIncompatible(f"Whisper config.json lacks {exc}.", path=folder / "config.json") from exc
    shapes = {k: e.shape for k, e in entries.items()}
    source = EncoderSource("hf_folder", folder, dims)
    return EncoderCheckpoint(source, shapes, lambda: lambda name: read_tensor(entries[name]))


def _open_path(path: Path) -> EncoderCheckpoint:
    if path.is_dir():
        if (path / "config.json").is_file():
            return _from_hf(path)
        pts = sorted(path.glob("*.pt"))
        if len(pts) == 1:
            return _from_pt(pts[0])
        raise ModelMissing(
            "The speech-encoder folder holds neither a Hugging Face Whisper model nor one .pt file.",
            path=path,
            fix="Point to large-v3.pt or to the openai/whisper-large-v3 folder.",
        )
    if not path.exists():
        raise ModelMissing("The speech encoder file does not exist.", path=path, fix="Check the path.")
    return _from_pt(path)


def pt_candidates(model_dir: Path, config_path: str | None) -> list[Path]:
    if not config_path:
        return []
    rel = Path(config_path)
    if rel.is_absolute():
        return [rel]
    bases = [model_dir, model_dir.parent, model_dir.parent.parent]
    return [b / rel for b in bases] + [model_dir.parent / "speech_encoder" / rel.name, model_dir / rel.name]


def open_encoder(
    model_dir: Path, shards: ShardSet, config_path: str | None, user_path: str | Path | None = None
) -> EncoderCheckpoint:
    """The first encoder found in the documented order; ``ModelMissing`` lists where it looked."""
    if user_path is not None:
        if shards.keys_with_prefix(SHARD_ENCODER_PREFIX):
            logger.info("Using the speech encoder %s given explicitly, not the one inside the Omni shards", user_path)
        return _open_path(Path(user_path).expanduser())
    if shards.keys_with_prefix(SHARD_ENCODER_PREFIX):
        return _from_shards(shards)
    looked: list[Path] = []
    for candidate in pt_candidates(model_dir, config_path):
        looked.append(candidate)
        if candidate.is_file():
            return _from_pt(candidate)
    for folder in (model_dir.parent / HF_FOLDER_NAME, model_dir / HF_FOLDER_NAME):
        looked.append(folder)
        if (folder / "config.json").is_file():
            return _from_hf(folder)
    shown = ", ".join(str(p) for p in looked[:4])
    raise ModelMissing(
        f"No Whisper speech encoder found (not in the shards; looked at {shown} ...).",
        path=model_dir,
        fix="Put Whisper large-v3.pt next to the model (speech_encoder/large-v3.pt), or name the encoder file.",
        reason=Reason.ENCODER_NOT_FOUND,
        facts={"looked": "; ".join(str(p) for p in looked)},
    )
