"""Errors in words: one builder for every window, words that name only controls that exist, and an
engine whose advice names no interface's controls (the engine gives kind + facts; app/ words them)."""

from __future__ import annotations

import argparse
import ast
import re
from pathlib import Path

import pytest
from PySide6.QtWidgets import QAbstractButton, QLabel, QMessageBox, QTabWidget, QWidget
from pytestqt.qtbot import QtBot

from app.application import Controller
from app.error_words import _BY_REASON, describe, describe_error, describe_failed
from app.main_window import MainWindow
from app.settings import AppSettings, save
from app.settings_dialog import SettingsDialog
from app.setup_wizard import SetupWizard
from app.tasks import wait_for_background
from app.widgets import error_text
from app.words import AUDIO_TAB, CONVERSATION_TAB, MODEL_TAB, SETUP_ACTION, settings_place
from engine.errors import (
    AudioDeviceError,
    DeviceUnavailable,
    DownloadError,
    ModelCorrupt,
    ModelMissing,
    NotEnoughMemory,
    Reason,
)
from engine.events import Failed
from engine.preflight import SystemInfo, check_model_folders

ROOT = Path(__file__).resolve().parents[2]
GB = 1_000_000_000

# Facts as the engine gives them, for every reason the app has words of its own for.
SAMPLE_FACTS: dict[Reason, dict[str, str | int | float]] = {
    Reason.PORTAUDIO_MISSING: {"library": "libportaudio2", "detail": "PortAudio library not found"},
    Reason.NO_DEVICE: {"direction": "input"},
    Reason.DEVICE_NOT_CONNECTED: {"direction": "output", "device": "USB Headset", "available": "ALSA: Speakers"},
    Reason.DEVICE_BUSY: {"direction": "input", "device": "USB Mic", "detail": "Device unavailable"},
    Reason.DEVICE_FORMAT: {"direction": "output", "device": "HDMI", "detail": "Invalid sample rate"},
    Reason.DEVICE_LOST: {"direction": "input"},
    Reason.DEVICE_SILENT: {},
    Reason.STREAMS_OPEN: {"streams": 2},
    Reason.NO_MODEL_LOADED: {},
    Reason.ENCODER_NOT_FOUND: {"looked": "/m/models/speech_encoder/large-v3.pt; /speech_encoder/large-v3.pt"},
    Reason.CUDA_UNAVAILABLE: {"device": "cuda"},
    Reason.GPU_NOT_FOUND: {"index": 2, "count": 1},
    Reason.BF16_UNSUPPORTED: {"device": "cuda:0"},
    Reason.VOCODER_GPU_UNAVAILABLE: {"detail": "no CUDA provider"},
    Reason.MEMORY_SHORT: {"quant": "fp16", "device": "cuda", "needed_bytes": 18 * GB, "free_bytes": 7 * GB},
    Reason.UNREACHABLE: {"host": "huggingface.co", "url": "https://huggingface.co/api", "detail": "Name unknown"},
    Reason.HTTP_STATUS: {"host": "huggingface.co", "url": "https://huggingface.co/x", "status": 404},
    Reason.RESUME_IMPOSSIBLE: {},
    Reason.TRAINING_MEMORY_SHORT: {"needed_bytes": 9 * GB, "free_bytes": 6 * GB},
    Reason.TRAINING_DISK_FULL: {},
    Reason.TRAINING_DIVERGED: {"loss": "nan", "step": 12},
    Reason.QUANTIZED_UNIT_DECODER: {"quant": "nf4"},
}
KIND_OF = {
    "PORTAUDIO": "audio_device", "DEVICE": "audio_device", "NO_DEVICE": "audio_device", "STREAMS": "audio_device",
    "NO_MODEL": "model_missing", "ENCODER": "model_missing", "CUDA": "device_unavailable", "GPU": "device_unavailable",
    "BF16": "device_unavailable", "VOCODER": "device_unavailable", "MEMORY": "not_enough_memory",
    "UNREACHABLE": "download", "HTTP": "download", "RESUME": "bad_input", "TRAINING_MEMORY": "not_enough_memory",
    "TRAINING_DISK": "disk_full", "TRAINING_DIVERGED": "bad_input", "QUANTIZED": "bad_input",
}


def _kind(reason: Reason) -> str:
    return next(kind for prefix, kind in KIND_OF.items() if reason.name.startswith(prefix))


def _control_texts(*roots: QWidget) -> set[str]:
    """Every button, label, tab and menu text a user can see in these windows (without '&')."""
    texts: set[str] = set()
    for root in roots:
        for button in root.findChildren(QAbstractButton):
            texts.add(button.text())
        for label in root.findChildren(QLabel):
            texts.add(label.text())
        for tabs in root.findChildren(QTabWidget):
            texts.update(tabs.tabText(i) for i in range(tabs.count()))
        for action in root.actions() + [a for menu in root.findChildren(QWidget) for a in menu.actions()]:
            texts.add(action.text())
    return {t.replace("&", "") for t in texts} | {t.replace("&", "").rstrip("…") for t in texts}


def test_every_reason_has_words_and_they_name_only_controls_that_exist(qtbot: QtBot) -> None:
    assert set(_BY_REASON) == set(Reason) == set(SAMPLE_FACTS), "a reason without GUI words"
    window = MainWindow()
    dialog = SettingsDialog(AppSettings(), window, probe=lambda: SystemInfo((), None))
    qtbot.addWidget(window)
    controls = _control_texts(window, dialog) | {"File"}
    places = {settings_place(tab) for tab in (MODEL_TAB, AUDIO_TAB, CONVERSATION_TAB)} | {f"File → {SETUP_ACTION}"}
    for place in places:
        for name in place.split(" → "):
            assert name in controls, f"{place!r}: no control shows {name!r}"
    for reason, facts in SAMPLE_FACTS.items():
        words = describe(_kind(reason), "developer message", fix="neutral fix", reason=reason, facts=facts)
        assert words.fix and words.fix != "neutral fix", reason
        text = f"{words.text} {words.fix}"
        for at in (m.start() for m in re.finditer("File → ", text)):
            assert any(text.startswith(place, at) for place in places), f"{reason.value}: {text[at:at + 40]!r}"
        for name in re.findall(r"“([^”]+)”", text):
            if name == "CPU" or name in {str(v) for v in facts.values()}:  # a choice in “Run on”, or a fact
                continue
            assert name in controls, f"{reason.value}: the words name {name!r}, which no control shows"
    assert wait_for_background(30_000)


def test_the_fixes_are_true() -> None:
    facts = SAMPLE_FACTS[Reason.PORTAUDIO_MISSING]
    portaudio = describe("audio_device", "m", reason=Reason.PORTAUDIO_MISSING, facts=facts)
    assert "libportaudio2" in portaudio.fix and "Reinstall" not in portaudio.fix  # type: ignore[operator]
    offline = describe("download", "m", reason=Reason.UNREACHABLE, facts=SAMPLE_FACTS[Reason.UNREACHABLE])
    assert offline.text == "No internet connection (could not reach huggingface.co)."
    missing = describe("download", "m", reason=Reason.HTTP_STATUS, facts=SAMPLE_FACTS[Reason.HTTP_STATUS])
    assert missing.text == "huggingface.co answered 404 Not Found: the file is not there (it may have moved)."
    memory = describe("not_enough_memory", "m", reason=Reason.MEMORY_SHORT, facts=SAMPLE_FACTS[Reason.MEMORY_SHORT])
    assert memory.text == "The model in fp16 needs about 18.0 GB of GPU memory; 7.0 GB is free."


# Words that would name a control (a button, a menu, a command-line option) in the engine's advice.
CONTROL_WORDS = re.compile(r"Settings|click|button|menu|Refresh|--[a-z]")
INTERFACE_MODULES = ("engine/__main__.py", "/cli.py", "engine/bench/")  # the CLI's own words live there


def _fix_strings(path: Path) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        values: list[ast.AST] = []
        if isinstance(node, ast.Call):
            values = [kw.value for kw in node.keywords if kw.arg == "fix"]
        elif isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id.startswith(("FIX_", "_FIX")) for t in node.targets
        ):
            values = [node.value]
        for value in values:
            found += [n.value for n in ast.walk(value) if isinstance(n, ast.Constant) and isinstance(n.value, str)]
    return found


def test_the_engines_advice_names_no_controls() -> None:
    offenders = []
    checked = 0
    for path in sorted((ROOT / "engine").rglob("*.py")):
        rel = path.relative_to(ROOT).as_posix()
        if any(part in rel for part in INTERFACE_MODULES):
            continue
        for text in _fix_strings(path):
            checked += 1
            if CONTROL_WORDS.search(text):
                offenders.append(f"{rel}: {text!r}")
    assert checked > 50  # the scan really finds the engine's fix texts
    assert offenders == [], "\n".join(offenders)


def test_one_builder_for_the_wizard_the_settings_and_the_main_window(qtbot: QtBot, tmp_path: Path) -> None:
    """The folder named by ``--model`` (through the engine's Failed) and in the wizard read the same."""
    missing = tmp_path / "no-such-model"
    errors = [
        ModelMissing("The model folder does not exist.", path=missing, fix="Choose the Omni model folder."),
        ModelCorrupt("The safetensors header is damaged.", path=missing / "model.safetensors", fix="Download again."),
        ModelMissing("No Whisper speech encoder found.", path=missing, reason=Reason.ENCODER_NOT_FOUND,
                     facts=SAMPLE_FACTS[Reason.ENCODER_NOT_FOUND]),
        NotEnoughMemory("needs more", reason=Reason.MEMORY_SHORT, facts=SAMPLE_FACTS[Reason.MEMORY_SHORT]),
        DeviceUnavailable("CUDA was requested.", reason=Reason.CUDA_UNAVAILABLE),
        AudioDeviceError("No microphone found.", reason=Reason.NO_DEVICE, facts={"direction": "input"}),
        DownloadError("x", reason=Reason.UNREACHABLE, facts=SAMPLE_FACTS[Reason.UNREACHABLE]),
    ]
    for exc in errors:
        words = describe_error(exc)
        assert describe_failed(Failed.of(exc)) == words
        assert error_text(exc) == words.plain()
        if exc.path is not None:
            assert str(exc.path) in words.plain()


@pytest.fixture
def missing_model_app(qtbot: QtBot, tmp_path: Path) -> Controller:
    path = save(AppSettings(), tmp_path / "settings.json")
    args = argparse.Namespace(settings=path, model=tmp_path / "no-such-model", speech_encoder=None, vocoder=None)
    controller = Controller(args)  # the real engine
    qtbot.addWidget(controller.window)
    yield controller
    controller.shutdown()


def test_a_bad_model_option_names_the_folder_like_the_wizard(
    qtbot: QtBot, tmp_path: Path, missing_model_app: Controller
) -> None:
    """``./omnitalk --model DIR`` with a wrong DIR: the dialog names DIR, in the wizard's words."""
    controller = missing_model_app
    controller.window.show()
    controller.start()
    qtbot.waitUntil(lambda: bool(controller.window.findChildren(QMessageBox, "failureDialog")), timeout=120_000)
    box = controller.window.findChildren(QMessageBox, "failureDialog")[0]
    folder = tmp_path / "no-such-model"
    assert str(folder) in box.informativeText()
    with pytest.raises(ModelMissing) as info:
        check_model_folders(folder, None, None)  # what the wizard's "Check the files" runs
    wizard_words = describe_error(info.value)
    assert box.text() == wizard_words.text and box.informativeText() == wizard_words.details()
    assert str(folder) in controller.window.status_label.text()
    wizard = SetupWizard(probe=lambda: SystemInfo((), None))
    qtbot.addWidget(wizard)
    wizard.existing_page.model_edit.setText(str(folder))
    wizard.existing_page.vocoder_edit.setText(str(folder))
    with qtbot.waitSignal(wizard.validationFinished, timeout=20_000):
        wizard.existing_page.check_button.click()
    assert wizard.existing_page.result_label.text() == wizard_words.plain()
    assert wait_for_background(30_000)
