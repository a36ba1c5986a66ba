"""Every AppSettings field reaches the engine (EngineOptions through SetOptions, or LoadModel), or is
listed as the app's own with the reason. A new field fails here until someone decides where it goes:
that is how ``earcons`` was forgotten once."""

from __future__ import annotations

import argparse
import dataclasses
import operator
from pathlib import Path
from typing import Any

from pytestqt.qtbot import QtBot

from app.application import Controller
from app.settings import AppSettings
from engine.events import AdapterChanged, EngineOptions, Failed, LoadModel, Ready, SetAdapter, SetOptions

from .fake_engine import FakeEngine

# settings field -> attribute path in EngineOptions
TO_OPTIONS = {
    "system_prompt": "system_prompt",
    "temperature": "temperature",
    "max_new_tokens": "max_new_tokens",
    "first_chunk_units": "chunking.first_chunk_units",
    "chunk_units": "chunking.chunk_units",
    "input_device": "input_device",
    "output_device": "output_device",
    "earcons": "earcons",
}
# settings field -> attribute of LoadModel
TO_LOAD = {
    "model_dir": "model_dir",
    "speech_encoder": "speech_encoder",
    "vocoder_dir": "vocoder_dir",
    "gpu": "device",
    "quant": "quant",
    "adapter_dir": "adapter",
}
APP_ONLY = {
    "licence_accepted": "the wizard's record that the licence was accepted",
    "talk_key": "the window's key handling",
    "global_hotkey": "the window's system-wide key listener",
    "hold_to_talk": "the window turns presses into StartTurn/StopTurn",
    "theme": "Qt palette",
    "window_geometry": "Qt window state",
}
NOT_WIRED_YET: dict[str, str] = {}

# A value other than the default for every field, and what the engine should receive for it.
MODEL = "/models/omni"
SAMPLES: dict[str, tuple[Any, Any]] = {
    "system_prompt": ("Be brief.", "Be brief."),
    "temperature": (0.7, 0.7),
    "max_new_tokens": (300, 300),
    "first_chunk_units": (15, 15),
    "chunk_units": (55, 55),
    "input_device": ("ALSA: USB Mic", "ALSA: USB Mic"),
    "output_device": ("ALSA: Speakers", "ALSA: Speakers"),
    "earcons": (False, False),
    "model_dir": ("/models/other", Path("/models/other")),
    "speech_encoder": ("/models/large-v3.pt", Path("/models/large-v3.pt")),
    "vocoder_dir": ("/models/vocoder", Path("/models/vocoder")),
    "gpu": ("cpu", "cpu"),
    "quant": ("int8", "int8"),
    "licence_accepted": (True, None),
    "talk_key": ("F8", None),
    "global_hotkey": (True, None),
    "hold_to_talk": (False, None),
    "theme": ("dark", None),
    "window_geometry": ("AAAA", None),
    "adapter_dir": ("/adapters/mine", Path("/adapters/mine")),
}


def _fields() -> set[str]:
    return {f.name for f in dataclasses.fields(AppSettings)}


def test_every_field_has_a_destination() -> None:
    groups = (TO_OPTIONS, TO_LOAD, APP_ONLY, NOT_WIRED_YET)
    listed = [name for group in groups for name in group]
    assert len(listed) == len(set(listed)), "a field is listed twice"
    assert set(listed) == _fields(), f"decide where these go: {sorted(_fields() ^ set(listed))}"
    assert set(SAMPLES) == _fields()


def test_engine_fields_reach_engine_options_and_load_model() -> None:
    base = AppSettings(model_dir=MODEL)
    for name, path in {**TO_OPTIONS, **TO_LOAD}.items():
        value, expected = SAMPLES[name]
        changed = base.replace(**{name: value})
        target: object = changed.engine_options() if name in TO_OPTIONS else changed.load_command()
        got = operator.attrgetter(path)(target)
        assert got == expected, f"AppSettings.{name}={value!r} arrives as {got!r}, not {expected!r}"
        before = operator.attrgetter(path)(base.engine_options() if name in TO_OPTIONS else base.load_command())
        assert before != got, f"the sample for {name} is its default: the test would prove nothing"


def test_app_only_fields_change_nothing_in_the_engine() -> None:
    base = AppSettings(model_dir=MODEL)
    for name in (*APP_ONLY, *NOT_WIRED_YET):
        changed = base.replace(**{name: SAMPLES[name][0]})
        assert changed != base
        assert changed.engine_options() == base.engine_options(), name
        assert changed.load_command() == base.load_command(), name


def test_precision_auto_means_the_engines_rule_and_no_model_means_no_load() -> None:
    assert AppSettings().load_command() is None
    assert AppSettings(model_dir=MODEL).load_command() == LoadModel(Path(MODEL), None, None, "auto", None)


def test_the_controller_sends_them(qtbot: QtBot, tmp_path: Path) -> None:
    """The running app: saving settings sends SetOptions with every option, and a new model loads."""
    engines: list[FakeEngine] = []

    def factory(on_event):  # type: ignore[no-untyped-def]
        engines.append(FakeEngine(on_event))
        return engines[-1]

    args = argparse.Namespace(settings=tmp_path / "settings.json", model=None, speech_encoder=None, vocoder=None)
    controller = Controller(args, engine_factory=factory)
    qtbot.addWidget(controller.window)
    engine = engines[0]
    new = AppSettings(**{name: SAMPLES[name][0] for name in TO_OPTIONS}, model_dir=MODEL, quant="int8")
    controller.update_settings(new)
    sent = [c.options for c in engine.commands if isinstance(c, SetOptions)]
    assert sent[-1] == new.engine_options() and isinstance(sent[-1], EngineOptions)
    assert sent[-1].earcons is False
    loads = [c for c in engine.commands if isinstance(c, LoadModel)]
    assert loads == [LoadModel(Path(MODEL), None, None, "auto", "int8")]
    controller.shutdown()


def _controller(qtbot: QtBot, tmp_path: Path, **args: Any) -> tuple[Controller, FakeEngine]:
    engines: list[FakeEngine] = []

    def factory(on_event):  # type: ignore[no-untyped-def]
        engines.append(FakeEngine(on_event))
        return engines[-1]

    defaults = dict(settings=tmp_path / "settings.json", model=None, speech_encoder=None, vocoder=None, adapter=None)
    controller = Controller(argparse.Namespace(**(defaults | args)), engine_factory=factory)
    qtbot.addWidget(controller.window)
    return controller, engines[0]


def test_a_changed_adapter_is_switched_without_reloading_the_model(qtbot: QtBot, tmp_path: Path) -> None:
    controller, engine = _controller(qtbot, tmp_path, model=tmp_path / "omni", adapter=tmp_path / "mine")
    controller.start()
    loads = [c for c in engine.commands if isinstance(c, LoadModel)]
    assert [c.adapter for c in loads] == [tmp_path / "mine"]  # --adapter reaches the first load
    engine.emit(Ready("tiny"))
    qtbot.waitUntil(lambda: controller.model_ready)
    controller.use_adapter(tmp_path / "other")
    assert engine.commands[-1] == SetAdapter(tmp_path / "other")
    assert sum(isinstance(c, LoadModel) for c in engine.commands) == 1  # no reload
    engine.emit(AdapterChanged(tmp_path / "other", "tiny + other"))
    controller.use_adapter(None)
    assert engine.commands[-1] == SetAdapter(None)
    # The engine refuses (say, an adapter for another model): the saved choice goes back.
    engine.emit(Failed("model_incompatible", "made for another model"))
    qtbot.waitUntil(lambda: controller.settings.adapter_dir == str(tmp_path / "other"))
    assert '"adapter_dir": "%s"' % (tmp_path / "other") in (tmp_path / "settings.json").read_text()
    controller.shutdown()


def test_an_adapter_chosen_before_the_model_is_ready_goes_into_the_load(qtbot: QtBot, tmp_path: Path) -> None:
    controller, engine = _controller(qtbot, tmp_path, model=tmp_path / "omni")
    controller.start()
    controller.use_adapter(tmp_path / "mine")
    loads = [c for c in engine.commands if isinstance(c, LoadModel)]
    assert [c.adapter for c in loads] == [None, tmp_path / "mine"]
    assert not any(isinstance(c, SetAdapter) for c in engine.commands)
    controller.shutdown()
