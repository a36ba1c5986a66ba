"""Dimensions of the unit HiFi-GAN, read from fairseq's ``config.json`` (official field names).

Every size of the model comes from here; nothing in the model code is hard-coded except what the
fairseq code itself hard-codes (conv_pre kernel 7, conv_post kernel 7, VariancePredictor conv2
padding 1, the LeakyReLU slopes).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.errors import ModelCorrupt, ModelIncompatible, ModelMissing
from engine.vocoder.defaults import CONFIG_FILENAME

# fairseq's Generator hard-codes these two kernels (padding 3 each).
PRE_POST_KERNEL = 7
# fairseq's VariancePredictor hard-codes conv2's padding to 1, so only kernel 3 keeps the length.
DURATION_KERNEL = 3
DURATION_CONV2_PADDING = 1

_FIX_OFFICIAL = (
    "Use the official vocoder files (g_00500000 and config.json from the "
    "mhubert_vp_en_es_fr_it3_400k_layer11_km1000_lj code_hifigan folder)."
)


@dataclass(frozen=True, slots=True)
class DurationPredictorConfig:
    """fairseq ``dur_predictor_params`` (FastSpeech2 VariancePredictor)."""

    encoder_embed_dim: int
    var_pred_hidden_dim: int
    var_pred_kernel_size: int
    var_pred_dropout: float

    @property
    def context_units(self) -> int:
        """Units on each side that influence one unit's duration: conv1 radius + conv2 radius."""
        return (self.var_pred_kernel_size - 1) // 2 + DURATION_CONV2_PADDING


@dataclass(frozen=True, slots=True)
class VocoderConfig:
    """The fields of the official unit-vocoder ``config.json`` that define the network."""

    resblock: str
    upsample_rates: tuple[int, ...]
    upsample_kernel_sizes: tuple[int, ...]
    upsample_initial_channel: int
    resblock_kernel_sizes: tuple[int, ...]
    resblock_dilation_sizes: tuple[tuple[int, ...], ...]
    num_embeddings: int
    embedding_dim: int
    model_in_dim: int
    code_hop_size: int
    sampling_rate: int
    duration: DurationPredictorConfig

    @property
    def hop_samples(self) -> int:
        """Output samples per unit frame (320 for the official model: 20 ms at 16 kHz)."""
        return math.prod(self.upsample_rates)

    @property
    def num_upsamples(self) -> int:
        return len(self.upsample_rates)

    @property
    def num_kernels(self) -> int:
        return len(self.resblock_kernel_sizes)

    def channels(self, stage: int) -> int:
        """Channels after upsample stage ``stage`` (0-based)."""
        return self.upsample_initial_channel // (2 ** (stage + 1))

    def to_json_dict(self) -> dict[str, Any]:
        """The official ``config.json`` layout (training-only fields included for completeness)."""
        return {
            "resblock": self.resblock,
            "upsample_rates": list(self.upsample_rates),
            "upsample_kernel_sizes": list(self.upsample_kernel_sizes),
            "upsample_initial_channel": self.upsample_initial_channel,
            "resblock_kernel_sizes": list(self.resblock_kernel_sizes),
            "resblock_dilation_sizes": [list(d) for d in self.resblock_dilation_sizes],
            "num_embeddings": self.num_embeddings,
            "embedding_dim": self.embedding_dim,
            "model_in_dim": self.model_in_dim,
            "segment_size": 8960,
            "code_hop_size": self.code_hop_size,
            "f0": False,
            "num_mels": 80,
            "num_freq": 1025,
            "n_fft": 1024,
            "hop_size": 256,
            "win_size": 1024,
            "sampling_rate": self.sampling_rate,
            "fmin": 0,
            "fmax": 8000,
            "fmax_for_loss": None,
            "dur_predictor_params": {
                "encoder_embed_dim": self.duration.encoder_embed_dim,
                "var_pred_hidden_dim": self.duration.var_pred_hidden_dim,
                "var_pred_kernel_size": self.duration.var_pred_kernel_size,
                "var_pred_dropout": self.duration.var_pred_dropout,
            },
        }


def _require(raw: dict[str, Any], key: str, kind: type | tuple[type, ...], path: Path) -> Any:
    if key not in raw:
        raise ModelIncompatible(f"config.json has no '{key}' field.", path=path, fix=_FIX_OFFICIAL)
    value = raw[key]
    # bool is an int subclass in Python; a true/false where a size belongs is a broken file.
    if isinstance(value, bool) or not isinstance(value, kind):
        raise ModelIncompatible(
            f"config.json field '{key}' has an unexpected value {value!r}.", path=path, fix=_FIX_OFFICIAL
        )
    return value


def _int_list(raw: dict[str, Any], key: str, path: Path) -> tuple[int, ...]:
    values = _require(raw, key, list, path)
    if not values or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in values):
        raise ModelIncompatible(
            f"config.json field '{key}' must be a list of positive integers, got {values!r}.",
            path=path,
            fix=_FIX_OFFICIAL,
        )
    return tuple(values)


def config_from_dict(raw: dict[str, Any], path: Path) -> VocoderConfig:
    """Validate a parsed config.json; raise ModelIncompatible for anything this vocoder cannot run."""
    if not isinstance(raw, dict):
        raise ModelIncompatible("config.json is not a JSON object.", path=path, fix=_FIX_OFFICIAL)
    if str(raw.get("resblock", "1")) != "1":
        raise ModelIncompatible(
            f"Only fairseq's ResBlock type '1' is supported, config.json says {raw.get('resblock')!r}.",
            path=path,
            fix=_FIX_OFFICIAL,
        )
    for unsupported in ("f0", "multispkr", "embedder_params"):
        if raw.get(unsupported):
            raise ModelIncompatible(
                f"config.json enables '{unsupported}', which the unit vocoder of LLaMA-Omni does not use.",
                path=path,
                fix=_FIX_OFFICIAL,
            )
    dur_raw = _require(raw, "dur_predictor_params", dict, path)
    duration = DurationPredictorConfig(
        encoder_embed_dim=_require(dur_raw, "encoder_embed_dim", int, path),
        var_pred_hidden_dim=_require(dur_raw, "var_pred_hidden_dim", int, path),
        var_pred_kernel_size=_require(dur_raw, "var_pred_kernel_size", int, path),
        var_pred_dropout=float(_require(dur_raw, "var_pred_dropout", (int, float), path)),
    )
    dilations_raw = _require(raw, "resblock_dilation_sizes", list, path)
    dilations = []
    for item in dilations_raw:
        if not isinstance(item, list) or not all(isinstance(d, int) and d > 0 for d in item):
            raise ModelIncompatible(
                f"config.json resblock_dilation_sizes has a bad entry {item!r}.", path=path, fix=_FIX_OFFICIAL
            )
        dilations.append(tuple(item))
    config = VocoderConfig(
        resblock="1",
        upsample_rates=_int_list(raw, "upsample_rates", path),
        upsample_kernel_sizes=_int_list(raw, "upsample_kernel_sizes", path),
        upsample_initial_channel=_require(raw, "upsample_initial_channel", int, path),
        resblock_kernel_sizes=_int_list(raw, "resblock_kernel_sizes", path),
        resblock_dilation_sizes=tuple(dilations),
        num_embeddings=_require(raw, "num_embeddings", int, path),
        embedding_dim=_require(raw, "embedding_dim", int, path),
        model_in_dim=_require(raw, "model_in_dim", int, path) if "model_in_dim" in raw else 80,
        code_hop_size=_require(raw, "code_hop_size", int, path),
        sampling_rate=_require(raw, "sampling_rate", int, path),
        duration=duration,
    )
    _check_consistency(config, path)
    return config


def _check_consistency(config: VocoderConfig, path: Path) -> None:
    problems: list[str] = []
    if len(config.upsample_rates) != len(config.upsample_kernel_sizes):
        problems.append("upsample_rates and upsample_kernel_sizes differ in length")
    for rate, kernel in zip(config.upsample_rates, config.upsample_kernel_sizes, strict=False):
        # ConvTranspose1d(padding=(k-u)//2) yields exactly u samples per input only when k-u is even.
        if kernel < rate or (kernel - rate) % 2:
            problems.append(f"upsample kernel {kernel} does not fit rate {rate}")
    if len(config.resblock_kernel_sizes) != len(config.resblock_dilation_sizes):
        problems.append("resblock_kernel_sizes and resblock_dilation_sizes differ in length")
    if any(k % 2 == 0 for k in config.resblock_kernel_sizes):
        problems.append("resblock kernels must be odd")
    if config.upsample_initial_channel % (2 ** len(config.upsample_rates)):
        problems.append("upsample_initial_channel is not divisible by 2 per upsample stage")
    if config.hop_samples != config.code_hop_size:
        problems.append(f"product of upsample_rates {config.hop_samples} != code_hop_size {config.code_hop_size}")
    if config.model_in_dim != config.embedding_dim:
        problems.append("model_in_dim must equal embedding_dim (no f0 or speaker features)")
    if config.duration.encoder_embed_dim != config.embedding_dim:
        problems.append("dur_predictor_params.encoder_embed_dim must equal embedding_dim")
    if config.duration.var_pred_kernel_size != DURATION_KERNEL:
        problems.append("var_pred_kernel_size must be 3 (fairseq hard-codes conv2 padding to 1)")
    if min(config.num_embeddings, config.embedding_dim, config.sampling_rate) <= 0:
        problems.append("sizes must be positive")
    if problems:
        raise ModelIncompatible(
            "config.json describes a vocoder this engine cannot run: " + "; ".join(problems) + ".",
            path=path,
            fix=_FIX_OFFICIAL,
        )


def load_config(vocoder_dir: Path) -> VocoderConfig:
    """Read ``vocoder_dir/config.json``. Raises ModelMissing / ModelCorrupt / ModelIncompatible."""
    path = Path(vocoder_dir) / CONFIG_FILENAME
    if not path.is_file():
        raise ModelMissing(
            "The vocoder's config.json is missing.", path=path, fix="Download the vocoder again."
        )
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelCorrupt(
            f"The vocoder's config.json is not valid JSON: {exc}", path=path, fix="Download the vocoder again."
        ) from exc
    return config_from_dict(raw, path)
