"""What a newcomer meets in the main window: the audio banner at start-up, a way back to the setup
wizard, answers that wrap instead of scrolling sideways, and a log path when no file manager opens."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest
from PySide6.QtCore import QPoint
from PySide6.QtGui import QDesktopServices, QGuiApplication
from PySide6.QtWidgets import QApplication, QMessageBox, QWizard
from pytestqt.qtbot import QtBot

from app.application import Controller
from app.help_dialogs import LogsDialog
from app.main_window import MainWindow
from app.settings import AppSettings, save
from app.settings_dialog import SettingsDialog
from app.setup_wizard import PAGE_EXISTING, SetupWizard
from app.tasks import wait_for_background
from engine.audio.backend import AudioDevice, SoundDeviceBackend
from engine.errors import AudioDeviceError
from engine.events import (
    DevicesListed,
    Failed,
    ListDevices,
    LoadModel,
    Ready,
    SendText,
    TextDelta,
    TurnFinished,
    TurnMetrics,
    TurnStarted,
)
from engine.paths import log_dir
from engine.tiny import TinyPaths, write_tiny_set

from .fake_engine import FakeEngine

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
MIC = AudioDevice(1, "USB Mic", "ALSA", 1, 0, 48000, is_default_input=True)
SPEAKER = AudioDevice(3, "Speakers", "ALSA", 0, 2, 48000, is_default_output=True)


@pytest.fixture(autouse=True)
def _no_leftover_tasks() -> object:
    yield
    assert wait_for_background(30_000)


def _controller(qtbot: QtBot, tmp_path: Path, settings: AppSettings) -> tuple[Controller, FakeEngine]:
    engines: list[FakeEngine] = []

    def factory(on_event):  # type: ignore[no-untyped-def]
        engines.append(FakeEngine(on_event))
        return engines[-1]

    path = save(settings, tmp_path / "settings.json")
    args = argparse.Namespace(settings=path, model=None, speech_encoder=None, vocoder=None)
    controller = Controller(args, engine_factory=factory)
    qtbot.addWidget(controller.window)
    controller.window.show()
    qtbot.waitExposed(controller.window)
    return controller, engines[0]


def _portaudio_missing() -> AudioDeviceError:
    """The error the real backend raises on a PC without libportaudio2."""
    try:
        SoundDeviceBackend().query_devices()
    except AudioDeviceError as exc:
        return exc
    raise AssertionError("PortAudio was found")


def _shot(window: MainWindow, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    QApplication.processEvents()
    assert window.grab().toImage().save(str(ARTIFACTS / f"first_run_{name}.png"))


def test_no_portaudio_shows_a_banner_at_start_and_typed_questions_answer_in_text(
    qtbot: QtBot, tmp_path: Path, no_portaudio: None
) -> None:
    controller, engine = _controller(qtbot, tmp_path, AppSettings(model_dir=str(tmp_path / "omni")))
    window = controller.window
    controller.start()
    kinds = engine.kinds()
    assert kinds.index("ListDevices") < kinds.index("LoadModel"), "devices are asked for before any model"
    assert ListDevices(rescan=False) in engine.commands

    error = _portaudio_missing()
    engine.emit(DevicesListed((), False, Failed.of(error)))
    qtbot.waitUntil(window.audio_banner.isVisible)
    banner = window.audio_banner.label.text()
    assert "PortAudio" in banner and "libportaudio2" in banner and "Reinstall" not in banner
    assert "answers are text-only: no speaker" in banner.lower()

    engine.emit(Ready("tiny model", None))
    qtbot.waitUntil(window.text_input.isEnabled)
    window.text_input.setText("What is the capital of France?")
    window.send_typed()
    assert SendText("What is the capital of France?") in engine.commands
    engine.emit(
        TurnStarted(1, "text", "What is the capital of France?", 0.0),
        TextDelta(1, "Paris."),
        Failed.of(error, turn_id=1),  # the engine could not open a speaker for the answer
        TurnFinished(1, "Paris.", False, TurnMetrics()),
    )
    qtbot.waitUntil(lambda: 1 in window.transcript.cards and window.transcript.cards[1].answer_text == "Paris.")
    card = window.transcript.cards[1]
    qtbot.waitUntil(lambda: "answers are text-only: no speaker" in card.note_label.text())
    assert window.status_label.text() == "Answered in text only: no speaker."
    assert not window.findChildren(QMessageBox, "failureDialog")  # no modal dialog for a missing speaker
    assert window.audio_banner.status_text == "the PortAudio sound library is missing"  # Help → About's line
    _shot(window, "no_portaudio")

    window.audio_banner.rescan_button.click()  # after installing the library
    assert engine.commands[-1] == ListDevices(rescan=True)
    engine.emit(DevicesListed((MIC, SPEAKER), True))
    qtbot.waitUntil(lambda: not window.audio_banner.isVisible())
    controller.shutdown()


def test_no_devices_at_start_says_which_are_missing(qtbot: QtBot, tmp_path: Path) -> None:
    controller, engine = _controller(qtbot, tmp_path, AppSettings(model_dir=str(tmp_path / "omni")))
    controller.start()
    engine.emit(DevicesListed((), False))  # PortAudio works, no sound server or card
    window = controller.window
    qtbot.waitUntil(window.audio_banner.isVisible)
    text = window.audio_banner.label.text()
    assert "No microphone or speaker found" in text and "Look for devices again" in text
    assert "answers are text-only: no speaker" in text.lower()
    engine.emit(DevicesListed((SPEAKER,), True))
    qtbot.waitUntil(lambda: "No microphone found" in window.audio_banner.label.text())
    assert "typed questions still work" in window.audio_banner.label.text().lower()
    assert window.audio_banner.status_text == "0 microphone(s), 1 speaker(s)"
    controller.shutdown()


def _wizards(window: MainWindow) -> list[SetupWizard]:
    return [w for w in window.findChildren(SetupWizard) if w.isVisible()]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> TinyPaths:
    return write_tiny_set(tmp_path_factory.mktemp("tiny"), seed=0)


def test_the_wizard_can_be_opened_again_after_cancel(qtbot: QtBot, tmp_path: Path) -> None:
    controller, _engine = _controller(qtbot, tmp_path, AppSettings())
    window = controller.window
    controller.start()  # first run: no model, the wizard opens
    qtbot.waitUntil(lambda: len(_wizards(window)) == 1)
    _wizards(window)[0].reject()  # "Cancel"
    qtbot.waitUntil(lambda: not _wizards(window))
    assert [a.text() for a in window.menuBar().actions()[0].menu().actions()][:3] == [
        "&New conversation",
        "Set up model…",
        "&Settings…",
    ]
    window.setup_action.trigger()  # File → Set up model…
    qtbot.waitUntil(lambda: len(_wizards(window)) == 1)
    _wizards(window)[0].reject()
    controller.shutdown()


def test_settings_download_button_opens_the_wizard_and_keeps_its_result(
    qtbot: QtBot, tmp_path: Path, tiny: TinyPaths
) -> None:
    controller, engine = _controller(qtbot, tmp_path, AppSettings(model_dir=str(tmp_path / "gone")))
    window = controller.window
    controller.open_settings()
    dialog = next(d for d in window.findChildren(SettingsDialog) if d.isVisible())
    dialog.model_tab.download_button.click()  # Settings → Model → Download…
    qtbot.waitUntil(lambda: bool(dialog.findChildren(SetupWizard)))
    wizard = dialog.findChildren(SetupWizard)[0]
    qtbot.waitUntil(wizard.isVisible)
    wizard.choice_page.existing_radio.setChecked(True)
    wizard.next()
    assert wizard.currentId() == PAGE_EXISTING
    page = wizard.existing_page
    page.model_edit.setText(str(tiny.omni))
    page.vocoder_edit.setText(str(tiny.vocoder))
    with qtbot.waitSignal(wizard.validationFinished, timeout=20_000) as checked:
        page.check_button.click()
    assert checked.args == [True], page.result_label.text()
    wizard.next()
    wizard.button(QWizard.WizardButton.FinishButton).click()
    qtbot.waitUntil(lambda: dialog.model_tab.model_dir_edit.text() == str(tiny.omni))
    assert controller.settings.model_dir == str(tiny.omni)
    assert LoadModel(tiny.omni, None, tiny.vocoder, "auto", None) in engine.commands
    dialog.accept()  # OK keeps the wizard's folders
    assert controller.settings.model_dir == str(tiny.omni)
    controller.shutdown()


def test_a_long_unbroken_answer_wraps_and_keeps_its_buttons_on_screen(qtbot: QtBot) -> None:
    window = MainWindow()
    qtbot.addWidget(window)
    window.show()
    qtbot.waitExposed(window)
    long_word = "https://example.org/" + "x" * 3000
    window.transcript.start_turn(TurnStarted(1, "text", "Spell it: " + "y" * 500, 0.0))
    window.transcript.append_text(1, long_word)
    window.transcript.finish_turn(TurnFinished(1, long_word, False, TurnMetrics()))
    card = window.transcript.cards[1]
    qtbot.waitUntil(lambda: card.answer_label.text() != "…")
    QApplication.processEvents()
    view = window.transcript.viewport()
    assert window.transcript.horizontalScrollBar().maximum() == 0
    assert not window.transcript.horizontalScrollBar().isVisible()
    assert card.width() <= view.width()
    for button in (card.copy_button, card.replay_button):
        right = button.mapTo(view, QPoint(button.width(), 0)).x()
        assert 0 < right <= view.width(), f"{button.text()} is off-screen ({right} > {view.width()})"
    card.copy_button.click()
    assert QGuiApplication.clipboard().text() == long_word  # copied as it came, no break marks
    _shot(window, "long_answer")


def test_show_logs_without_a_file_manager_offers_the_path(
    qtbot: QtBot, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    window = MainWindow()
    qtbot.addWidget(window)
    opened: list[str] = []
    monkeypatch.setattr(QDesktopServices, "openUrl", lambda url: opened.append(url.toLocalFile()) or False)
    window.show_logs_action.trigger()
    assert opened == [str(log_dir())]
    dialog = next(d for d in window.findChildren(LogsDialog))
    qtbot.waitUntil(dialog.isVisible)
    expected = str(log_dir() / "omnitalk.log")
    assert dialog.path_label.text() == expected
    dialog.copy_button.click()
    assert QGuiApplication.clipboard().text() == expected
    assert any("No program opened the log folder" in r.getMessage() for r in caplog.records)
    dialog.reject()

    monkeypatch.setattr(QDesktopServices, "openUrl", lambda url: True)  # a desktop that opens folders
    window.show_logs()
    assert not [d for d in window.findChildren(LogsDialog) if d.isVisible()]
