"""Dims of a model folder from its headers only: config.json, the safetensors headers and the
speech encoder's stored dims. No torch, no weights: the app's folder check and the memory estimate
call this, and ``loader.load_parts`` uses the same function before it reads any tensor."""

from __future__ import annotations

from pathlib import Path

from engine.config import AdapterDims, OmniDims
from engine.errors import ModelIncompatible
from engine.model.encoder_loading import EncoderSource, open_encoder
from engine.model.omni_config import OmniConfig, read_omni_config
from engine.model.safetensors_io import ShardSet

ADAPTER_PREFIX = "model.speech_projector."
DEFAULT_ADAPTER_HIDDEN = 2048


def resolve_dims(config: OmniConfig, shards: ShardSet, encoder: EncoderSource) -> OmniDims:
    if encoder.dims.n_audio_state != config.encoder_hidden_size:
        raise ModelIncompatible(
            f"The speech encoder has width {encoder.dims.n_audio_state}, config.json expects "
            f"{config.encoder_hidden_size} (speech_encoder_hidden_size).",
            path=encoder.path,
            fix="Use Whisper large-v3 with this model.",
        )
    linear1 = shards.shape(ADAPTER_PREFIX + "linear1.weight")
    hidden = linear1[0] if linear1 else DEFAULT_ADAPTER_HIDDEN
    adapter = AdapterDims(config.encoder_hidden_size, config.ds_rate, hidden, config.llm.hidden_size)
    return OmniDims(llm=config.llm, adapter=adapter, unit_decoder=config.unit_decoder, encoder=encoder.dims)


def read_model(model_dir: str | Path, speech_encoder: str | Path | None = None) -> tuple[OmniDims, EncoderSource]:
    """Dims of a model folder and where its speech encoder was found, without loading weights."""
    model_dir = Path(model_dir)
    config = read_omni_config(model_dir)
    shards = ShardSet.open(model_dir)
    encoder = open_encoder(model_dir, shards, config.speech_encoder, speech_encoder)
    return resolve_dims(config, shards, encoder.source), encoder.source


def read_dims(model_dir: str | Path, speech_encoder: str | Path | None = None) -> OmniDims:
    """Dims of a model folder without loading weights (for ``estimate_memory`` in the app)."""
    return read_model(model_dir, speech_encoder)[0]
