"""Reading the official fairseq vocoder checkpoint, and writing small look-alikes for tests.

The official folder holds ``g_00500000`` (``torch.save({"generator": state_dict})`` with old-style
weight norm: ``<layer>.weight_g`` and ``<layer>.weight_v``, norm over every dim except 0) and
``config.json``. We load with ``weights_only=True`` and fold the weight norm right away, so the
model never carries the reparametrisation (and the ONNX export does not see it either).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import pickle
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from engine.errors import ModelCorrupt, ModelIncompatible, ModelMissing
from engine.vocoder.config import VocoderConfig, config_from_dict, load_config
from engine.vocoder.defaults import (
    CHECKPOINT_FILENAME,
    CONFIG_FILENAME,
    OFFICIAL_HOP_SAMPLES,
    OFFICIAL_SAMPLE_RATE_HZ,
)
from engine.vocoder.model import UnitVocoder

logger = logging.getLogger(__name__)

GENERATOR_KEY = "generator"
_CHECKPOINT_PATTERN = re.compile(r"^g_(\d+)$")
_OLD_G, _OLD_V = "weight_g", "weight_v"
_NEW_G, _NEW_V = "parametrizations.weight.original0", "parametrizations.weight.original1"
_HASH_BLOCK_BYTES = 1 << 20
_FIX_REDOWNLOAD = "Download the vocoder (g_00500000 and config.json) again."

# The official mhubert_vp_en_es_fr_it3_400k_layer11_km1000_lj vocoder (config.json values).
OFFICIAL_CONFIG_JSON: dict[str, Any] = {
    "resblock": "1",
    "upsample_rates": [5, 4, 4, 2, 2],
    "upsample_kernel_sizes": [11, 8, 8, 4, 4],
    "upsample_initial_channel": 512,
    "resblock_kernel_sizes": [3, 7, 11],
    "resblock_dilation_sizes": [[1, 3, 5], [1, 3, 5], [1, 3, 5]],
    "num_embeddings": 1000,
    "embedding_dim": 128,
    "model_in_dim": 128,
    "code_hop_size": OFFICIAL_HOP_SAMPLES,
    "sampling_rate": OFFICIAL_SAMPLE_RATE_HZ,
    "dur_predictor_params": {
        "encoder_embed_dim": 128,
        "var_pred_hidden_dim": 128,
        "var_pred_kernel_size": 3,
        "var_pred_dropout": 0.5,
    },
}
# Same architecture (so the same receptive field and hop), a few thousand times less compute.
TINY_DIMS: dict[str, Any] = {"upsample_initial_channel": 32, "embedding_dim": 16, "var_pred_hidden_dim": 16}

# Random-weight scales chosen so a random model speaks at a realistic level (RMS ~0.2, no clipping)
# and predicts varied durations (mostly 1..5 frames) instead of a constant 1.
_EMBEDDING_STD = 1.0
_CONV_GAIN = 1.0
_RESIDUAL_GAIN = 0.4
_POST_GAIN = 1.5
_LOG_DURATION_BIAS = math.log1p(2.0)
_LOG_DURATION_SPREAD = 0.45


# ---------------------------------------------------------------------------------------------- reading


def find_checkpoint(vocoder_dir: Path) -> Path:
    """``g_00500000`` if present, otherwise the ``g_<step>`` file with the highest step."""
    vocoder_dir = Path(vocoder_dir)
    if not vocoder_dir.is_dir():
        raise ModelMissing("The vocoder folder does not exist.", path=vocoder_dir, fix=_FIX_REDOWNLOAD)
    official = vocoder_dir / CHECKPOINT_FILENAME
    if official.is_file():
        return official
    steps = [
        (int(m.group(1)), p)
        for p in vocoder_dir.iterdir()
        if p.is_file() and (m := _CHECKPOINT_PATTERN.match(p.name))
    ]
    if not steps:
        raise ModelMissing(
            f"No vocoder checkpoint ({CHECKPOINT_FILENAME}) in the vocoder folder.",
            path=vocoder_dir,
            fix=_FIX_REDOWNLOAD,
        )
    return max(steps)[1]


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        while block := handle.read(_HASH_BLOCK_BYTES):
            digest.update(block)
    return digest.hexdigest()


def fold_weight_norm(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Replace every ``(weight_g, weight_v)`` pair by ``weight = g * v / ||v||`` (norm over dims != 0).

    Accepts old-style keys (``weight_g``/``weight_v``, torch < 2.1 and fairseq), the new
    parametrization keys (``parametrizations.weight.original0/1``) and already-folded ``weight``.
    Dim 0 is the output channel of a Conv1d but the *input* channel of a ConvTranspose1d; the
    formula is the same because both store the normalised axis first.
    """
    folded: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        for g_suffix, v_suffix in ((_OLD_G, _OLD_V), (_NEW_G, _NEW_V)):
            if key.endswith(g_suffix) or key.endswith(v_suffix):
                is_gain = key.endswith(g_suffix)
                prefix = key[: -len(g_suffix if is_gain else v_suffix)]
                partner = prefix + (v_suffix if is_gain else g_suffix)
                if partner not in state:
                    raise ModelIncompatible(
                        f"Checkpoint has '{key}' without its weight-norm partner '{partner}'.",
                        fix=_FIX_REDOWNLOAD,
                    )
                if is_gain:
                    folded[prefix + "weight"] = _fold(value, state[partner], prefix + "weight")
                break
        else:
            folded[key] = value
    return folded


def _fold(g: torch.Tensor, v: torch.Tensor, name: str) -> torch.Tensor:
    g64, v64 = g.double(), v.double()
    if g64.numel() != v64.shape[0]:
        raise ModelIncompatible(
            f"Weight-norm gain of '{name}' has shape {tuple(g.shape)}, direction {tuple(v.shape)}.",
            fix=_FIX_REDOWNLOAD,
        )
    norm = v64.flatten(1).norm(dim=1).view(-1, *([1] * (v64.dim() - 1)))
    return (v64 * (g64.reshape(norm.shape) / norm)).to(v.dtype)


def read_generator_state(checkpoint: Path) -> dict[str, torch.Tensor]:
    """``torch.load(checkpoint, weights_only=True)["generator"]`` with clear errors for bad files."""
    checkpoint = Path(checkpoint)
    try:
        payload = torch.load(checkpoint, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        if "Unsupported global" in str(exc):
            raise ModelIncompatible(
                "The vocoder checkpoint contains Python objects, not only tensors; refusing to load it.",
                path=checkpoint,
                fix=_FIX_REDOWNLOAD,
            ) from exc
        raise ModelCorrupt(
            f"The vocoder checkpoint is unreadable: {exc}", path=checkpoint, fix=_FIX_REDOWNLOAD
        ) from exc
    except (RuntimeError, EOFError, ValueError, OSError) as exc:
        raise ModelCorrupt(
            f"The vocoder checkpoint is truncated or corrupt: {exc}", path=checkpoint, fix=_FIX_REDOWNLOAD
        ) from exc
    if not isinstance(payload, Mapping) or GENERATOR_KEY not in payload:
        found = sorted(payload)[:8] if isinstance(payload, Mapping) else type(payload).__name__
        raise ModelIncompatible(
            f"The vocoder checkpoint has no '{GENERATOR_KEY}' entry (found {found}); "
            "it is not a fairseq CodeHiFiGAN generator checkpoint.",
            path=checkpoint,
            fix=_FIX_REDOWNLOAD,
        )
    state = payload[GENERATOR_KEY]
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ModelIncompatible(
            f"The checkpoint's '{GENERATOR_KEY}' entry is not a state dict of tensors.",
            path=checkpoint,
            fix=_FIX_REDOWNLOAD,
        )
    return dict(state)


def _preview(keys: list[str], limit: int = 5) -> str:
    return str(keys[:limit]) + (f" (+{len(keys) - limit} more)" if len(keys) > limit else "")


def build_vocoder(config: VocoderConfig, state: Mapping[str, torch.Tensor], checkpoint: Path) -> UnitVocoder:
    """Fold weight norm, check every key and shape against ``config``, and load (strict)."""
    try:
        folded = fold_weight_norm(state)
    except ModelIncompatible as exc:
        exc.path = checkpoint
        raise
    model = UnitVocoder(config)
    expected = model.state_dict()
    embedding = folded.get("dict.weight")
    if embedding is not None and embedding.dim() == 2 and embedding.shape[0] != config.num_embeddings:
        raise ModelIncompatible(
            f"The checkpoint has {embedding.shape[0]} unit embeddings but config.json says "
            f"num_embeddings={config.num_embeddings}.",
            path=checkpoint,
            fix="Use the config.json that came with this checkpoint.",
        )
    missing = sorted(set(expected) - set(folded))
    unexpected = sorted(set(folded) - set(expected))
    if missing or unexpected:
        raise ModelIncompatible(
            "The checkpoint does not match a CodeHiFiGAN generator: "
            f"missing {_preview(missing)}, unexpected {_preview(unexpected)}.",
            path=checkpoint,
            fix=_FIX_REDOWNLOAD,
        )
    for key, tensor in expected.items():
        if tuple(folded[key].shape) != tuple(tensor.shape):
            raise ModelIncompatible(
                f"Shape mismatch for '{key}': checkpoint {tuple(folded[key].shape)}, "
                f"config.json implies {tuple(tensor.shape)}.",
                path=checkpoint,
                fix="Use the config.json that came with this checkpoint.",
            )
    model.load_state_dict({k: v.float() for k, v in folded.items()}, strict=True)
    return model.eval().requires_grad_(False)


def load_torch_vocoder(vocoder_dir: Path) -> UnitVocoder:
    """Official folder -> eval-mode float32 CPU ``UnitVocoder`` with folded weights."""
    checkpoint = find_checkpoint(vocoder_dir)
    config = load_config(vocoder_dir)
    return build_vocoder(config, read_generator_state(checkpoint), checkpoint)


# ---------------------------------------------------------------------------------------------- writing


def official_config() -> VocoderConfig:
    return config_from_dict(json.loads(json.dumps(OFFICIAL_CONFIG_JSON)), Path("<official>"))


def _config_json(dims: Mapping[str, Any]) -> dict[str, Any]:
    raw = json.loads(json.dumps(OFFICIAL_CONFIG_JSON))
    dur = raw["dur_predictor_params"]
    for key, value in dims.items():
        if key in raw and key != "dur_predictor_params":
            raw[key] = value
        elif key in dur:
            dur[key] = value
        else:
            raise TypeError(f"unknown vocoder dimension {key!r}")
    if "embedding_dim" in dims:
        if "model_in_dim" not in dims:
            raw["model_in_dim"] = dims["embedding_dim"]
        if "encoder_embed_dim" not in dims:
            dur["encoder_embed_dim"] = dims["embedding_dim"]
    return raw


def _weight_normed_prefixes(model: UnitVocoder) -> list[str]:
    names = ["conv_pre", "conv_post"] + [f"ups.{i}" for i in range(len(model.ups))]
    for r, block in enumerate(model.resblocks):
        for group in ("convs1", "convs2"):
            names += [f"resblocks.{r}.{group}.{i}" for i in range(len(getattr(block, group)))]
    return names


def _gain(prefix: str, model: UnitVocoder) -> float:
    if prefix.startswith("ups."):
        # A transposed conv spreads each input over u outputs; sqrt(u/2) keeps the variance.
        return math.sqrt(model.config.upsample_rates[int(prefix.split(".")[1])] / 2)
    if ".convs2." in prefix:
        return _RESIDUAL_GAIN
    if prefix == "conv_post":
        return _POST_GAIN
    return _CONV_GAIN


def random_generator_state(config: VocoderConfig, seed: int) -> dict[str, torch.Tensor]:
    """A fairseq-layout state dict with old-style weight norm, deterministic for ``seed``."""
    gen = torch.Generator().manual_seed(seed)
    model = UnitVocoder(config)
    state = {k: torch.zeros_like(v) for k, v in model.state_dict().items()}

    def randn(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=gen)

    state["dict.weight"] = randn(*state["dict.weight"].shape) * _EMBEDDING_STD
    hidden = config.duration.var_pred_hidden_dim
    for conv in ("conv1.0", "conv2.0"):
        w = state[f"dur_predictor.{conv}.weight"]
        state[f"dur_predictor.{conv}.weight"] = randn(*w.shape) / math.sqrt(w.shape[1] * w.shape[2])
        state[f"dur_predictor.{conv}.bias"] = randn(w.shape[0]) * 0.1
    for ln in ("ln1", "ln2"):
        state[f"dur_predictor.{ln}.weight"] = 1 + 0.1 * randn(hidden)
        state[f"dur_predictor.{ln}.bias"] = 0.1 * randn(hidden)
    state["dur_predictor.proj.weight"] = randn(1, hidden) * (_LOG_DURATION_SPREAD / math.sqrt(hidden))
    state["dur_predictor.proj.bias"] = torch.tensor([_LOG_DURATION_BIAS])

    for prefix in _weight_normed_prefixes(model):
        weight = state.pop(f"{prefix}.weight")
        v = randn(*weight.shape)
        # Gains vary per channel so that folding g * v / ||v|| is really exercised.
        g = _gain(prefix, model) * (0.75 + 0.5 * torch.rand(weight.shape[0], generator=gen))
        state[f"{prefix}.{_OLD_G}"] = g.view(-1, *([1] * (weight.dim() - 1)))
        state[f"{prefix}.{_OLD_V}"] = v
        state[f"{prefix}.bias"] = 0.01 * randn(*state[f"{prefix}.bias"].shape)
    return state


def write_random_vocoder(out_dir: Path, seed: int = 0, **dims: Any) -> Path:
    """Write ``g_00500000`` + ``config.json`` with random weights; ``dims`` override config.json fields.

    With no ``dims`` this is the official architecture at full size (512 initial channels).
    Returns ``out_dir``.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    raw = _config_json(dims)
    config = config_from_dict(raw, out_dir / CONFIG_FILENAME)
    state = random_generator_state(config, seed)
    full_raw = config.to_json_dict()
    (out_dir / CONFIG_FILENAME).write_text(json.dumps(full_raw, indent=2) + "\n", encoding="utf-8")
    torch.save({GENERATOR_KEY: state}, out_dir / CHECKPOINT_FILENAME)
    return out_dir


def write_tiny_vocoder(out_dir: Path, seed: int = 0, **dims: Any) -> Path:
    """Official layout and receptive field with tiny channel counts (``TINY_DIMS``, overridable)."""
    return write_random_vocoder(out_dir, seed, **{**TINY_DIMS, **dims})


def write_official_size_vocoder(out_dir: Path, seed: int = 0) -> Path:
    """The official architecture at full size with random weights (for benchmarks)."""
    return write_random_vocoder(out_dir, seed)
