"""Main window behaviour with a fake engine: push-to-talk, hotkey, streaming transcript, status, errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from PySide6.QtCore import QEvent, Qt
from PySide6.QtGui import QKeyEvent
from PySide6.QtWidgets import QApplication
from pytestqt.qtbot import QtBot

from app.answer_archive import AnswerArchive
from app.bridge import EngineBridge
from app.main_window import MainWindow
from app.settings import AppSettings
from engine.events import (
    AudioChunk,
    ConversationReset,
    EngineState,
    Failed,
    Listening,
    PlayAudio,
    Ready,
    SendText,
    SlowDevice,
    StateChanged,
    TextDelta,
    TurnFinished,
    TurnMetrics,
    TurnStarted,
)
from tests.app.fake_engine import FakeEngine

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"


@pytest.fixture
def setup(qtbot: QtBot):  # type: ignore[no-untyped-def]
    engines: list[FakeEngine] = []

    def factory(on_event):  # type: ignore[no-untyped-def]
        engines.append(FakeEngine(on_event))
        return engines[-1]

    bridge = EngineBridge(factory)
    window = MainWindow(bridge, AppSettings())
    qtbot.addWidget(window)
    window.show()
    qtbot.waitExposed(window)
    window.activateWindow()
    engine = engines[0]
    engine.emit(Ready("tiny"), StateChanged(EngineState.READY))
    qtbot.waitUntil(lambda: window.talk_button.isEnabled())
    return window, engine


def _key(window: MainWindow, kind: QEvent.Type, key: Qt.Key, repeat: bool = False,
         mods: Qt.KeyboardModifier = Qt.KeyboardModifier.NoModifier) -> None:
    QApplication.sendEvent(window.text_input, QKeyEvent(kind, key, mods, "", repeat))


def test_hold_button_talks(setup, qtbot: QtBot) -> None:  # type: ignore[no-untyped-def]
    window, engine = setup
    qtbot.mousePress(window.talk_button, Qt.MouseButton.LeftButton)
    qtbot.mouseRelease(window.talk_button, Qt.MouseButton.LeftButton)
    assert engine.kinds()[-2:] == ["StartTurn", "StopTurn"]


def test_hotkey_with_auto_repeat_sends_one_press_and_one_release(setup, qtbot: QtBot) -> None:  # type: ignore[no-untyped-def]
    window, engine = setup
    before = len(engine.commands)
    _key(window, QEvent.Type.KeyPress, Qt.Key.Key_F9)
    for _ in range(15):  # what X11 auto-repeat delivers while the key is held
        _key(window, QEvent.Type.KeyRelease, Qt.Key.Key_F9, repeat=True)
        _key(window, QEvent.Type.KeyPress, Qt.Key.Key_F9, repeat=True)
    _key(window, QEvent.Type.KeyRelease, Qt.Key.Key_F9)
    qtbot.waitUntil(lambda: engine.kinds()[before:] == ["StartTurn", "StopTurn"])
    assert window.text_input.text() == ""  # the talk key never types into the box


def test_unflagged_key_repeat_is_recognised(setup, qtbot: QtBot) -> None:  # type: ignore[no-untyped-def]
    """Under Xvfb, repeats arrive as plain release+press pairs; they must not end the turn."""
    window, engine = setup
    before = len(engine.commands)
    _key(window, QEvent.Type.KeyPress, Qt.Key.Key_F9)
    for _ in range(10):
        _key(window, QEvent.Type.KeyRelease, Qt.Key.Key_F9)
        _key(window, QEvent.Type.KeyPress, Qt.Key.Key_F9)
        qtbot.wait(20)
    assert engine.kinds()[before:] == ["StartTurn"]
    _key(window, QEvent.Type.KeyRelease, Qt.Key.Key_F9)
    qtbot.waitUntil(lambda: engine.kinds()[before:] == ["StartTurn", "StopTurn"])


def test_hotkey_needs_exact_modifiers_and_esc_cancels(setup) -> None:  # type: ignore[no-untyped-def]
    window, engine = setup
    before = len(engine.commands)
    _key(window, QEvent.Type.KeyPress, Qt.Key.Key_F9, mods=Qt.KeyboardModifier.ControlModifier)
    _key(window, QEvent.Type.KeyRelease, Qt.Key.Key_F9, mods=Qt.KeyboardModifier.ControlModifier)
    QApplication.processEvents()
    assert engine.commands[before:] == []
    _key(window, QEvent.Type.KeyPress, Qt.Key.Key_Escape)
    assert engine.kinds()[before:] == ["Cancel"]


def test_toggle_mode(setup, qtbot: QtBot) -> None:  # type: ignore[no-untyped-def]
    window, engine = setup
    window.apply_settings(AppSettings(hold_to_talk=False))
    assert window.talk_button.text().startswith("Click to talk")
    before = len(engine.commands)
    qtbot.mouseClick(window.talk_button, Qt.MouseButton.LeftButton)
    assert engine.kinds()[before:] == ["StartTurn"] and window.talk_button.isChecked()
    qtbot.mouseClick(window.talk_button, Qt.MouseButton.LeftButton)
    assert engine.kinds()[before:] == ["StartTurn", "StopTurn"] and not window.talk_button.isChecked()


def test_listening_status_and_meter(setup, qtbot: QtBot) -> None:  # type: ignore[no-untyped-def]
    window, engine = setup
    engine.emit(StateChanged(EngineState.LISTENING), Listening(-20.0, 3.0, 27.0))
    qtbot.waitUntil(lambda: window.status_label.text() == "Listening… 27 s left")
    assert window.level_meter.isVisible() and window.level_meter.value() == 67
    assert window.stop_button.isEnabled()
    engine.emit(StateChanged(EngineState.THINKING))
    qtbot.waitUntil(lambda: window.status_label.text() == "Thinking…")
    assert not window.level_meter.isVisible()


def test_a_slow_device_says_why_the_answer_waits(setup, qtbot: QtBot) -> None:  # type: ignore[no-untyped-def]
    window, engine = setup
    engine.emit(TurnStarted(1, "text", "Hi", 0.0), StateChanged(EngineState.THINKING), SlowDevice(1, 0.6, 4.4))
    qtbot.waitUntil(lambda: window.status_label.text().startswith("Slow device"))
    assert "0.6× real time" in window.status_label.text() and "about 4 s" in window.status_label.text()
    engine.emit(StateChanged(EngineState.SPEAKING))
    qtbot.waitUntil(lambda: window.status_label.text() == "Speaking… (slow device; Esc to stop)")
    engine.emit(TurnStarted(2, "text", "Again", 0.0), StateChanged(EngineState.SPEAKING))  # a fast answer
    qtbot.waitUntil(lambda: window.status_label.text() == "Speaking… (Esc to stop)")


def test_save_answers_keeps_each_spoken_answer(qtbot: QtBot, tmp_path: Path) -> None:
    """``--save-answers DIR``: the engine's audio for each finished turn becomes a WAV file."""
    engines: list[FakeEngine] = []
    bridge = EngineBridge(lambda on_event: engines.append(FakeEngine(on_event)) or engines[-1])
    AnswerArchive(bridge, tmp_path / "answers")
    first, second = np.full(800, 0.25, np.float32), np.linspace(-0.5, 0.5, 1600, dtype=np.float32)
    engines[0].emit(AudioChunk(3, first), AudioChunk(3, second))
    engines[0].emit(TurnFinished(3, "Hi.", False, TurnMetrics()))
    path = tmp_path / "answers" / "turn-3-answer.wav"
    qtbot.waitUntil(path.exists)
    saved, rate = sf.read(str(path), dtype="float32")
    assert rate == 16_000 and np.array_equal(saved, np.concatenate([first, second]))


def test_streamed_answer_replay_and_copy(setup, qtbot: QtBot) -> None:  # type: ignore[no-untyped-def]
    window, engine = setup
    pcm = np.full(1600, 0.1, np.float32)
    engine.emit(
        TurnStarted(1, "speech", "", 2.5, np.zeros(100, np.float32)),
        TextDelta(1, "The capital"), TextDelta(1, " is Paris"), AudioChunk(1, pcm), TextDelta(1, ".")
    )
    qtbot.waitUntil(lambda: 1 in window.transcript.cards and window.transcript.cards[1].answer_text.endswith("."))
    card = window.transcript.cards[1]
    assert card.answer_text == "The capital is Paris."
    assert "2.5 s" in card.user_label.text()
    engine.emit(TurnFinished(1, "The capital is Paris.", False, TurnMetrics(first_audio_ms=180.0, tokens_per_s=22.0)))
    qtbot.waitUntil(lambda: "first audio 180 ms" in card.note_label.text())
    assert card.replay_button.isEnabled()
    before = len(engine.commands)
    qtbot.mouseClick(card.replay_button, Qt.MouseButton.LeftButton)
    assert engine.kinds()[before:] == ["Cancel", "PlayAudio"]
    replayed = engine.commands[-1]
    assert isinstance(replayed, PlayAudio) and np.array_equal(replayed.pcm, pcm)
    qtbot.mouseClick(card.copy_button, Qt.MouseButton.LeftButton)
    assert QApplication.clipboard().text() == "The capital is Paris."
    ARTIFACTS.mkdir(exist_ok=True)
    window.grab().save(str(ARTIFACTS / "main_window_conversation.png"))


def test_typed_turn_and_new_conversation(setup, qtbot: QtBot) -> None:  # type: ignore[no-untyped-def]
    window, engine = setup
    window.text_input.setText("  Hello there ")
    qtbot.keyClick(window.text_input, Qt.Key.Key_Return)
    assert engine.kinds()[-2:] == ["Cancel", "SendText"]
    assert engine.commands[-1] == SendText("Hello there") and window.text_input.text() == ""
    engine.emit(TurnStarted(1, "text", "Hello there", 0.0))
    qtbot.waitUntil(lambda: 1 in window.transcript.cards)
    window.new_action.trigger()
    assert engine.kinds()[-2:] == ["Cancel", "NewConversation"]
    engine.emit(ConversationReset())
    qtbot.waitUntil(lambda: window.transcript.cards == {})


def test_failure_shows_what_to_do(setup, qtbot: QtBot) -> None:  # type: ignore[no-untyped-def]
    window, engine = setup
    engine.emit(
        Failed("audio_device", "No microphone found.", "Plug in a microphone or pick one in Settings."),
        StateChanged(EngineState.READY, "No microphone found."),
    )
    qtbot.waitUntil(lambda: "Audio device problem" in window.status_label.text())
    assert "Plug in a microphone" in window.status_label.text()
    assert window.talk_button.isEnabled()  # the app stays usable


def test_controls_disabled_until_a_model_is_ready(qtbot: QtBot) -> None:
    window = MainWindow(EngineBridge(FakeEngine), AppSettings())
    qtbot.addWidget(window)
    assert not window.talk_button.isEnabled() and not window.text_input.isEnabled()
    assert "File → Set up model…" in window.status_label.text()  # the way to a model


def test_a_model_failure_opens_a_dialog_that_says_what_to_do(setup, qtbot: QtBot) -> None:  # type: ignore[no-untyped-def]
    from PySide6.QtWidgets import QMessageBox

    window, engine = setup
    engine.emit(Failed("model_corrupt", "Shard 2 is truncated.", "Download the model again."))
    qtbot.waitUntil(lambda: window.findChild(QMessageBox, "failureDialog") is not None)
    box = window.findChild(QMessageBox, "failureDialog")
    assert box.text() == "Shard 2 is truncated." and box.informativeText() == "Download the model again."
    assert "Model files damaged" in box.windowTitle()
    box.accept()


def test_themes_change_the_palette(qtbot: QtBot) -> None:
    from PySide6.QtGui import QPalette

    from app.theme import apply_theme

    app = QApplication.instance()
    apply_theme(app, "dark")
    dark = app.palette().color(QPalette.ColorRole.Window).lightness()
    apply_theme(app, "light")
    light = app.palette().color(QPalette.ColorRole.Window).lightness()
    apply_theme(app, "system")
    assert dark < 80 < light
