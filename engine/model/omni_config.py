"""Read an Omni folder's ``config.json`` / ``generation_config.json`` into typed dimensions.

The published ``ICTNLP/Llama-3.1-8B-Omni`` config is a ``LlamaConfig`` plus LLaMA-Omni fields
(``speech_encoder``, ``speech_encoder_ds_rate``, ``ctc_decoder_config``, ``ctc_upsample_factor``,
``unit_vocab_size``, ``tokenizer_model_max_length`` ...). Only ``model_type ==
"omni_speech2s_llama"`` (text + speech units) is accepted; nothing here runs remote code.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.config import OFFICIAL_DIMS, LlmDims, OmniDims, RopeScaling, UnitDecoderDims
from engine.errors import ModelCorrupt, ModelIncompatible, ModelMissing

CONFIG_NAME = "config.json"
GENERATION_CONFIG_NAME = "generation_config.json"
OMNI_MODEL_TYPE = "omni_speech2s_llama"
TEXT_ONLY_MODEL_TYPE = "omni_speech_llama"

# Code defaults of LLaMA-Omni (omni_speech/arguments.py, speech_generator builder) for absent fields.
DEFAULT_CTC_DECODER_CONFIG = "(2,4096,32,11008)"
DEFAULT_UPSAMPLE_FACTOR = 25
DEFAULT_UNIT_VOCAB_SIZE = 1000
DEFAULT_DS_RATE = 5
DEFAULT_ENCODER_HIDDEN = 1280
DEFAULT_MODEL_MAX_LENGTH = 2048

_CTC_CONFIG_RE = re.compile(r"^\(\s*(\d+)\s*,\s*(\d+)\s*,\s*(\d+)\s*,\s*(\d+)\s*\)$")


@dataclass(frozen=True, slots=True)
class OmniConfig:
    """What ``config.json`` says; the encoder's own dims are resolved later from its weights."""

    folder: Path
    model_type: str
    llm: LlmDims
    unit_decoder: UnitDecoderDims
    encoder_hidden_size: int
    ds_rate: int
    speech_encoder: str | None  # relative path of the openai-whisper .pt in the reference layout
    model_max_length: int
    torch_dtype: str
    bos_token_id: int | None
    eos_token_ids: tuple[int, ...]
    pad_token_id: int | None


def read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise ModelMissing(f"{path.name} is missing.", path=path, fix="Choose the complete model folder.")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelCorrupt(f"Cannot read {path.name}: {exc}", path=path, fix="Download the model again.") from exc
    if not isinstance(data, dict):
        raise ModelCorrupt(f"{path.name} is not a JSON object.", path=path, fix="Download the model again.")
    return data


def parse_ctc_decoder_config(text: str, path: Path | None = None) -> tuple[int, int, int, int]:
    """``"(2,4096,32,11008)"`` -> (n_layers, dim, n_heads, ffn_dim)."""
    match = _CTC_CONFIG_RE.match(text.strip())
    if match is None:
        raise ModelIncompatible(
            f"ctc_decoder_config {text!r} is not '(layers,dim,heads,ffn)'.", path=path, fix="Fix config.json."
        )
    n_layers, dim, n_heads, ffn = (int(g) for g in match.groups())
    return n_layers, dim, n_heads, ffn


def parse_rope(cfg: dict[str, Any]) -> tuple[float, RopeScaling | None]:
    """(rope_theta, scaling) from transformers 4.x (``rope_scaling``) or 5.x (``rope_parameters``)."""
    params = cfg.get("rope_parameters") or {}
    scaling = cfg.get("rope_scaling") or params
    theta = float(params.get("rope_theta", cfg.get("rope_theta", 10000.0)))
    rope_type = scaling.get("rope_type", scaling.get("type", "default")) if scaling else "default"
    if rope_type in (None, "default"):
        return theta, None
    if rope_type != "llama3":
        raise ModelIncompatible(f"Unsupported RoPE scaling {rope_type!r} (only llama3 is supported).")
    return theta, RopeScaling(
        rope_type="llama3",
        factor=float(scaling["factor"]),
        low_freq_factor=float(scaling["low_freq_factor"]),
        high_freq_factor=float(scaling["high_freq_factor"]),
        original_max_position_embeddings=int(scaling["original_max_position_embeddings"]),
    )


def _eos_list(value: Any) -> tuple[int, ...]:
    if value is None:
        return ()
    if isinstance(value, int):
        return (value,)
    return tuple(int(v) for v in value)


def read_omni_config(folder: str | Path) -> OmniConfig:
    folder = Path(folder)
    if not folder.is_dir():
        raise ModelMissing("The model folder does not exist.", path=folder, fix="Choose the Omni model folder.")
    path = folder / CONFIG_NAME
    cfg = read_json(path)
    model_type = cfg.get("model_type")
    if model_type != OMNI_MODEL_TYPE:
        hint = " (the text-only variant has no speech output)" if model_type == TEXT_ONLY_MODEL_TYPE else ""
        raise ModelIncompatible(
            f"config.json has model_type {model_type!r}{hint}; OmniTalk needs {OMNI_MODEL_TYPE!r}.",
            path=path,
            fix="Choose the ICTNLP/Llama-3.1-8B-Omni folder.",
        )
    try:
        hidden = int(cfg["hidden_size"])
        n_heads = int(cfg["num_attention_heads"])
        theta, scaling = parse_rope(cfg)
        eps = float(cfg.get("rms_norm_eps", 1e-5))
        llm = LlmDims(
            vocab_size=int(cfg["vocab_size"]),
            hidden_size=hidden,
            intermediate_size=int(cfg["intermediate_size"]),
            n_layers=int(cfg["num_hidden_layers"]),
            n_heads=n_heads,
            n_kv_heads=int(cfg.get("num_key_value_heads") or n_heads),
            head_dim=int(cfg.get("head_dim") or hidden // n_heads),
            max_position_embeddings=int(cfg.get("max_position_embeddings", 131072)),
            rms_norm_eps=eps,
            rope_theta=theta,
            rope_scaling=scaling,
            tie_word_embeddings=bool(cfg.get("tie_word_embeddings", False)),
        )
        n_layers, dim, heads, ffn = parse_ctc_decoder_config(
            str(cfg.get("ctc_decoder_config", DEFAULT_CTC_DECODER_CONFIG)), path
        )
        unit = UnitDecoderDims(
            n_layers=n_layers,
            dim=dim,
            n_heads=heads,
            ffn_dim=ffn,
            upsample_factor=int(cfg.get("ctc_upsample_factor", DEFAULT_UPSAMPLE_FACTOR)),
            unit_vocab_size=int(cfg.get("unit_vocab_size", DEFAULT_UNIT_VOCAB_SIZE)),
            llm_dim=hidden,
            rms_norm_eps=eps,
            rope_theta=theta,
            rope_scaling=scaling,
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise ModelIncompatible(
            f"config.json lacks or mangles a field: {exc}", path=path, fix="Fix config.json."
        ) from exc
    if cfg.get("speech_generator_type", "ctc") != "ctc":
        raise ModelIncompatible("Only the CTC speech generator is supported.", path=path)
    gen_path = folder / GENERATION_CONFIG_NAME
    gen = read_json(gen_path) if gen_path.is_file() else {}
    eos = _eos_list(cfg.get("eos_token_id")) + _eos_list(gen.get("eos_token_id"))
    pad = cfg.get("pad_token_id", gen.get("pad_token_id"))
    bos = cfg.get("bos_token_id", gen.get("bos_token_id"))
    return OmniConfig(
        folder=folder,
        model_type=model_type,
        llm=llm,
        unit_decoder=unit,
        encoder_hidden_size=int(cfg.get("speech_encoder_hidden_size", DEFAULT_ENCODER_HIDDEN)),
        ds_rate=int(cfg.get("speech_encoder_ds_rate", DEFAULT_DS_RATE)),
        speech_encoder=cfg.get("speech_encoder"),
        model_max_length=int(cfg.get("tokenizer_model_max_length") or DEFAULT_MODEL_MAX_LENGTH),
        torch_dtype=str(cfg.get("torch_dtype", "float16")),
        bos_token_id=int(bos) if bos is not None else None,
        eos_token_ids=tuple(dict.fromkeys(eos)),
        pad_token_id=int(pad) if isinstance(pad, int) else None,
    )


MODEL_CARD_NAME = "README.md"
_FRONT_MATTER_RE = re.compile(r"\A---\s*\n(.*?)\n---\s*(\n|\Z)", re.DOTALL)
_LICENCE_RE = re.compile(r"^license:\s*['\"]?([^'\"\n#]+?)['\"]?\s*(#.*)?$", re.MULTILINE)


def read_licence(folder: Path) -> str | None:
    """The licence id in the model card's front matter (``license: apache-2.0``), or None."""
    try:
        card = (folder / MODEL_CARD_NAME).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    front = _FRONT_MATTER_RE.match(card)
    found = _LICENCE_RE.search(front.group(1)) if front else None
    return found.group(1).strip() if found else None


def is_official(dims: OmniDims) -> bool:
    """Dimensions of the released Llama-3.1-8B-Omni (whose licence terms then apply)."""
    return dims.llm.n_params == OFFICIAL_DIMS.llm.n_params
