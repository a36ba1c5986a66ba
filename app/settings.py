"""Typed application settings <-> ``settings.json`` in the user config folder.

The file carries a ``schema_version``. Unknown keys are ignored, missing keys get defaults, values
of the wrong type fall back to their default one by one. A file that is not valid JSON (or not an
object) is moved aside as ``settings.json.corrupt-<timestamp>``, defaults are used, and
``LoadResult.warning`` says so, so the app can tell the user. Saving is atomic (write + rename).

Qt-free on purpose: it is plain data, and tests exercise it without a QApplication.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import time
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Literal, cast, get_args, get_origin, get_type_hints

from engine.config import QUANT_MODES, QuantMode
from engine.events import ChunkingOptions, EngineOptions, LoadModel
from engine.paths import config_dir

logger = logging.getLogger(__name__)

SCHEMA_VERSION = 1
SETTINGS_FILE_NAME = "settings.json"
DEFAULT_TALK_KEY = "F9"
THEMES = ("system", "light", "dark")
# "auto": the precision engine.preflight.recommend_quant picks for the device (what the setup
# wizard recommends); the engine applies that same rule when LoadModel.quant is None.
AUTO_QUANT: Literal["auto"] = "auto"
QuantChoice = QuantMode | Literal["auto"]  # "auto": the engine's one rule (engine.preflight.recommend_quant)


@dataclass(frozen=True, slots=True)
class AppSettings:
    # model
    model_dir: str | None = None
    speech_encoder: str | None = None
    vocoder_dir: str | None = None
    quant: QuantChoice = AUTO_QUANT  # AUTO_QUANT or one of engine.config.QUANT_MODES
    gpu: str = "auto"  # auto | cpu | cuda:N
    adapter_dir: str | None = None  # fine-tuned adapter on top of the model (LoadModel.adapter, SetAdapter)
    licence_accepted: bool = False
    # conversation
    system_prompt: str = ""  # "" = LLaMA-Omni's default system text
    temperature: float = 0.0
    max_new_tokens: int = 512
    first_chunk_units: int = 10
    chunk_units: int = 40
    # audio
    input_device: str | None = None
    output_device: str | None = None
    earcons: bool = True
    # controls
    talk_key: str = DEFAULT_TALK_KEY
    global_hotkey: bool = False
    hold_to_talk: bool = True  # False: click/press to toggle
    # look
    theme: str = "system"
    window_geometry: str | None = None  # base64 of QWidget.saveGeometry()

    def engine_options(self) -> EngineOptions:
        """What the running engine needs (SetOptions); see tests/app/test_settings.py for every field."""
        return EngineOptions(
            system_prompt=self.system_prompt or None,
            temperature=self.temperature,
            max_new_tokens=self.max_new_tokens,
            chunking=ChunkingOptions(first_chunk_units=self.first_chunk_units, chunk_units=self.chunk_units),
            input_device=self.input_device,
            output_device=self.output_device,
            earcons=self.earcons,
        )

    def load_command(self) -> LoadModel | None:
        """The LoadModel for the chosen model (None while no model folder is set)."""
        if not self.model_dir:
            return None
        return LoadModel(
            model_dir=Path(self.model_dir),
            speech_encoder=Path(self.speech_encoder) if self.speech_encoder else None,
            vocoder_dir=Path(self.vocoder_dir) if self.vocoder_dir else None,
            device=self.gpu,
            quant=None if self.quant == AUTO_QUANT else self.quant,
            adapter=Path(self.adapter_dir) if self.adapter_dir else None,
        )

    def replace(self, **changes: Any) -> AppSettings:
        return dataclasses.replace(self, **changes)


# Values outside these sets or ranges fall back to the default.
_CHOICES: dict[str, tuple[str, ...]] = {"quant": (AUTO_QUANT, *QUANT_MODES), "theme": THEMES}
_RANGES: dict[str, tuple[float, float]] = {
    "temperature": (0.0, 2.0),
    "max_new_tokens": (16, 4096),
    "first_chunk_units": (5, 200),
    "chunk_units": (5, 500),
}


@dataclass(frozen=True, slots=True)
class LoadResult:
    settings: AppSettings
    path: Path
    warning: str | None = None  # shown to the user once (corrupt file, newer schema, ...)
    ignored: tuple[str, ...] = field(default=())  # keys whose values were invalid


def default_path() -> Path:
    return config_dir() / SETTINGS_FILE_NAME


def _base_type(hint: Any) -> tuple[type, bool]:
    """``str | None`` -> (str, True); ``int`` -> (int, False); ``Literal["a", "b"]`` -> (str, False)."""
    if get_origin(hint) is Literal:
        return type(get_args(hint)[0]), False
    args = get_args(hint)
    if args and all(get_origin(arg) is Literal for arg in args):  # Literal[...] | Literal[...]
        return type(get_args(args[0])[0]), False
    if not args:
        return hint, False
    non_none = [arg for arg in args if arg is not type(None)]
    return non_none[0], len(non_none) < len(args)


def _valid(name: str, value: Any, hint: Any) -> bool:
    base, optional = _base_type(hint)
    if value is None:
        return optional
    if isinstance(value, bool) and base is not bool:
        return False  # JSON true is not a number of tokens
    accepted: tuple[type, ...] = (int, float) if base is float else (base,)
    if not isinstance(value, accepted):
        return False
    if name in _CHOICES and value not in _CHOICES[name]:
        return False
    if name in _RANGES:
        low, high = _RANGES[name]
        return low <= cast(float, value) <= high
    return True


def from_dict(data: dict[str, Any]) -> tuple[AppSettings, tuple[str, ...]]:
    hints = get_type_hints(AppSettings)
    values: dict[str, Any] = {}
    ignored = []
    for item in fields(AppSettings):
        if item.name not in data:
            continue
        value = data[item.name]
        if _valid(item.name, value, hints[item.name]):
            values[item.name] = float(value) if hints[item.name] is float else value
        else:
            ignored.append(item.name)
    return AppSettings(**values), tuple(ignored)


def to_dict(settings: AppSettings) -> dict[str, Any]:
    return {"schema_version": SCHEMA_VERSION, **{f.name: getattr(settings, f.name) for f in fields(settings)}}


def load(path: Path | None = None) -> LoadResult:
    path = path or default_path()
    if not path.exists():
        return LoadResult(AppSettings(), path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(data, dict):
            raise ValueError("the file does not hold a JSON object")
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        backup = path.with_name(f"{path.name}.corrupt-{time.strftime('%Y%m%d-%H%M%S')}")
        try:
            os.replace(path, backup)
            where = f"It was kept as {backup.name}."
        except OSError:
            where = "It could not be moved aside."
        logger.warning("Settings file %s unreadable (%s); using defaults", path, exc)
        return LoadResult(
            AppSettings(), path, warning=f"Your settings file could not be read ({exc}); defaults are used. {where}"
        )
    warning = None
    version = data.get("schema_version")
    if isinstance(version, int) and version > SCHEMA_VERSION:
        warning = "Your settings were written by a newer OmniTalk; settings this version does not know are ignored."
    settings, ignored = from_dict(data)
    if ignored:
        logger.warning("Settings with invalid values reset to defaults: %s", ", ".join(ignored))
    return LoadResult(settings, path, warning=warning, ignored=ignored)


def save(settings: AppSettings, path: Path | None = None) -> Path:
    """Write atomically; raises OSError (e.g. disk full) with the old file left intact."""
    path = path or default_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    try:
        tmp.write_text(json.dumps(to_dict(settings), indent=2, sort_keys=True) + "\n", encoding="utf-8")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path
