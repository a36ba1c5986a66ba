"""The main window: push-to-talk button and hotkey, status that is always true, live transcript, text box.

All engine work goes through the bridge; every handler here returns at once.
"""

from __future__ import annotations

import importlib.metadata
import logging
import platform

from PySide6.QtCore import QEvent, QObject, Qt, QTimer, QUrl, Signal
from PySide6.QtGui import QAction, QCloseEvent, QDesktopServices, QKeyEvent, QKeySequence
from PySide6.QtWidgets import (
    QApplication,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QMainWindow,
    QMessageBox,
    QProgressBar,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from app.bridge import EngineBridge
from app.global_hotkey import GlobalHotkey
from app.settings import AppSettings
from app.transcript import TranscriptView
from engine.events import EngineState, Failed, SlowDevice, StateChanged, TurnFinished, TurnStarted
from engine.paths import log_dir
from engine.version import __version__

logger = logging.getLogger(__name__)

WINDOW_SIZE_PX = (600, 720)
METER_FLOOR_DBFS = -60.0
# Key auto-repeat arrives as release+press pairs every 25-40 ms, and not every platform flags them
# (Xvfb's do not reach us as auto-repeat). A release only counts once no press follows this soon.
RELEASE_DEBOUNCE_MS = 60

# Failures that stop the app from working until the user acts get a dialog, not just the status line.
DIALOG_KINDS = ("model_missing", "model_corrupt", "model_incompatible", "not_enough_memory", "device_unavailable")
FAILURE_TITLES = {
    "model_missing": "Model not found",
    "model_corrupt": "Model files damaged",
    "model_incompatible": "Not a LLaMA-Omni model",
    "not_enough_memory": "Not enough memory",
    "audio_device": "Audio device problem",
    "bad_input": "Cannot use that input",
    "disk_full": "Disk full",
    "download": "Download failed",
    "device_unavailable": "GPU not available",
}


def _package_version(name: str) -> str:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def _gpu_text() -> str:
    from engine.preflight import list_gpus

    gpus = list_gpus()
    if not gpus:
        return "no NVIDIA GPU found"
    return "; ".join(f"{g.name} ({g.total_bytes / 1e9:.1f} GB)" for g in gpus)


def _onnxruntime_providers() -> str:
    try:
        import onnxruntime

        return ", ".join(onnxruntime.get_available_providers())
    except ImportError:
        return "onnxruntime not installed"


def about_text(model_summary: str | None = None) -> str:
    """Versions, GPU and onnxruntime providers for Help → About."""
    rows = [
        ("OmniTalk", __version__),
        ("Python", platform.python_version()),
        ("PySide6", _package_version("PySide6-Essentials")),
        ("torch", _package_version("torch")),
        ("transformers", _package_version("transformers")),
        ("onnxruntime-gpu", _package_version("onnxruntime-gpu")),
        ("System", f"{platform.system()} {platform.release()} ({platform.machine()})"),
        ("GPU", _gpu_text()),
        ("onnxruntime providers available", _onnxruntime_providers()),
        ("Model", model_summary or "not loaded"),
    ]
    return "\n".join(f"{name}: {version}" for name, version in rows)


def key_matches(event: QKeyEvent, sequence: str) -> bool:
    """Exact match of a key event against a one-key sequence such as "F9" or "Ctrl+Space"."""
    keys = QKeySequence(sequence)
    if keys.count() == 0:
        return False
    combo = keys[0]  # type: ignore[index]  # PySide6's stubs lack QKeySequence.__getitem__
    modifiers = event.modifiers() & ~Qt.KeyboardModifier.KeypadModifier
    return event.key() == combo.key() and modifiers == combo.keyboardModifiers()


class MainWindow(QMainWindow):
    settingsRequested = Signal()

    def __init__(self, bridge: EngineBridge | None = None, settings: AppSettings | None = None) -> None:
        super().__init__()
        self.bridge = bridge
        self.settings = settings or AppSettings()
        self.setWindowTitle("OmniTalk")
        self.resize(*WINDOW_SIZE_PX)
        self._state = EngineState.IDLE
        self._talk_down = False  # the talk key/button is held (or toggled on)
        self._slow_turn = False  # the current answer is held back on a slow device (SlowDevice)
        self._model_ready = False
        self.global_hotkey: GlobalHotkey | None = None
        self.model_summary: str | None = None
        self._release_timer = QTimer(self)
        self._release_timer.setSingleShot(True)
        self._release_timer.setInterval(RELEASE_DEBOUNCE_MS)
        self._release_timer.timeout.connect(self._key_release_settled)

        self.status_label = QLabel("No model loaded")
        self.status_label.setObjectName("status")
        self.status_label.setWordWrap(True)
        self.level_meter = QProgressBar()
        self.level_meter.setObjectName("levelMeter")
        self.level_meter.setRange(0, 100)
        self.level_meter.setTextVisible(False)
        self.level_meter.setMaximumHeight(10)
        self.level_meter.hide()
        self.talk_button = QPushButton()
        self.talk_button.setObjectName("talkButton")
        self.talk_button.setMinimumHeight(96)
        self.talk_button.pressed.connect(self._button_pressed)
        self.talk_button.released.connect(self._button_released)
        self.stop_button = QPushButton("Stop (Esc)")
        self.stop_button.setObjectName("stopButton")
        self.stop_button.clicked.connect(self.cancel)
        self.new_button = QPushButton("New conversation")
        self.new_button.clicked.connect(self.new_conversation)
        self.transcript = TranscriptView()
        self.transcript.replayRequested.connect(self._replay)
        self.text_input = QLineEdit()
        self.text_input.setPlaceholderText("…or type a question and press Enter")
        self.text_input.returnPressed.connect(self.send_typed)
        self.send_button = QPushButton("Send")
        self.send_button.clicked.connect(self.send_typed)

        controls = QHBoxLayout()
        controls.addWidget(self.stop_button)
        controls.addStretch(1)
        controls.addWidget(self.new_button)
        typing_row = QHBoxLayout()
        typing_row.addWidget(self.text_input, 1)
        typing_row.addWidget(self.send_button)
        layout = QVBoxLayout()
        layout.addWidget(self.status_label)
        layout.addWidget(self.level_meter)
        layout.addWidget(self.talk_button)
        layout.addLayout(controls)
        layout.addWidget(self.transcript, 1)
        layout.addLayout(typing_row)
        central = QWidget()
        central.setLayout(layout)
        self.setCentralWidget(central)
        self._build_menus()
        self._connect_bridge()
        self.apply_settings(self.settings)
        self._show_state(EngineState.IDLE)
        app = QApplication.instance()
        if app is not None:
            app.installEventFilter(self)

    # ----------------------------------------------------------------- construction

    def _build_menus(self) -> None:
        file_menu = self.menuBar().addMenu("&File")
        self.new_action = QAction("&New conversation", self)
        self.new_action.setShortcut(QKeySequence.StandardKey.New)
        self.new_action.triggered.connect(self.new_conversation)
        file_menu.addAction(self.new_action)
        self.settings_action = QAction("&Settings…", self)
        self.settings_action.setShortcut(QKeySequence("Ctrl+,"))
        self.settings_action.triggered.connect(self.settingsRequested)
        file_menu.addAction(self.settings_action)
        file_menu.addSeparator()
        self.quit_action = QAction("&Quit", self)
        self.quit_action.setShortcut(QKeySequence.StandardKey.Quit)
        self.quit_action.triggered.connect(self.close)
        file_menu.addAction(self.quit_action)

        help_menu = self.menuBar().addMenu("&Help")
        self.show_logs_action = QAction("Show &logs", self)
        self.show_logs_action.triggered.connect(self.show_logs)
        help_menu.addAction(self.show_logs_action)
        self.about_action = QAction("&About OmniTalk", self)
        self.about_action.triggered.connect(self.show_about)
        help_menu.addAction(self.about_action)

    def _connect_bridge(self) -> None:
        bridge = self.bridge
        if bridge is None:
            return
        bridge.stateChanged.connect(self._on_state)
        bridge.loadProgress.connect(self._on_load_progress)
        bridge.ready.connect(self._on_ready)
        bridge.listening.connect(self._on_listening)
        bridge.recordingLimit.connect(
            lambda limit_s: self._set_status(f"Stopped listening at {limit_s:.0f} s (the model hears 30 s at most).")
        )
        bridge.turnIgnored.connect(lambda reason, hint: self._set_status(hint))
        bridge.turnStarted.connect(self._on_turn_started)
        bridge.slowDevice.connect(self._on_slow_device)
        bridge.textDelta.connect(self.transcript.append_text)
        bridge.audioChunk.connect(self.transcript.append_audio)
        bridge.turnFinished.connect(self._on_turn_finished)
        bridge.conversationReset.connect(self.transcript.clear)
        bridge.failed.connect(self._on_failed)

    def apply_settings(self, settings: AppSettings) -> None:
        self.settings = settings
        mode = "Hold to talk" if settings.hold_to_talk else "Click to talk"
        self.talk_button.setText(f"{mode}  ({settings.talk_key})")
        self.talk_button.setCheckable(not settings.hold_to_talk)
        self._set_global_hotkey(settings.talk_key if settings.global_hotkey else None)

    def _set_global_hotkey(self, sequence: str | None) -> None:
        if self.global_hotkey is not None:
            self.global_hotkey.stop()
            self.global_hotkey.deleteLater()
            self.global_hotkey = None
        if sequence is None:
            return
        try:
            hotkey = GlobalHotkey(sequence, self)
        except ValueError as exc:
            self._set_status(f"The global hotkey {sequence!r} cannot be used: {exc}")
            return
        hotkey.pressed.connect(self._global_pressed)
        hotkey.released.connect(self._global_released)
        hotkey.unavailable.connect(lambda reason: self._set_status(reason + " The key still works in this window."))
        if hotkey.start():
            self.global_hotkey = hotkey
        else:
            hotkey.deleteLater()

    def _global_pressed(self) -> None:
        if self.isActiveWindow():
            return  # the in-window hotkey already handled it
        if self.settings.hold_to_talk or not self._talk_down:
            self.talk_pressed()
        else:
            self.talk_released()

    def _global_released(self) -> None:
        if not self.isActiveWindow() and self.settings.hold_to_talk:
            self.talk_released()

    # ---------------------------------------------------------------- user actions

    def talk_pressed(self) -> None:
        if self._talk_down:
            return
        self._talk_down = True
        logger.info("Talk key down")
        if self.bridge is not None:
            self.bridge.press()

    def talk_released(self) -> None:
        if not self._talk_down:
            return
        self._talk_down = False
        logger.info("Talk key up")
        if self.bridge is not None:
            self.bridge.release()

    def _button_pressed(self) -> None:
        if self.settings.hold_to_talk:
            self.talk_pressed()

    def _button_released(self) -> None:
        if self.settings.hold_to_talk or self._talk_down:
            self.talk_released()
        else:
            self.talk_pressed()
        self.talk_button.setChecked(self._talk_down and not self.settings.hold_to_talk)

    def cancel(self) -> None:
        self._talk_down = False
        self.talk_button.setChecked(False)
        if self.bridge is not None:
            self.bridge.cancel()

    def new_conversation(self) -> None:
        if self.bridge is not None:
            self.bridge.cancel()
            self.bridge.new_conversation()

    def send_typed(self) -> None:
        text = self.text_input.text().strip()
        if not text or self.bridge is None:
            return
        self.bridge.cancel()
        self.bridge.send_text(text)
        self.text_input.clear()

    def _replay(self, pcm: object) -> None:
        if self.bridge is not None and pcm is not None:
            self.bridge.cancel()
            self.bridge.play(pcm)

    def eventFilter(self, watched: QObject, event: QEvent) -> bool:
        """The talk key works anywhere in the window (also while typing); auto-repeat is ignored."""
        if event.type() in (QEvent.Type.KeyPress, QEvent.Type.KeyRelease) and self.isActiveWindow():
            key_event: QKeyEvent = event  # type: ignore[assignment]
            if key_matches(key_event, self.settings.talk_key):
                if key_event.isAutoRepeat():
                    return True
                if event.type() == QEvent.Type.KeyRelease:
                    self._release_timer.start()  # released for real only if no press follows
                elif self._release_timer.isActive():
                    self._release_timer.stop()  # release+press pair: key repeat, still held
                elif self.settings.hold_to_talk or not self._talk_down:
                    self.talk_pressed()
                else:
                    self.talk_released()
                return True
            if event.type() == QEvent.Type.KeyPress and key_event.key() == Qt.Key.Key_Escape:
                self.cancel()
                return True
        return super().eventFilter(watched, event)

    def _key_release_settled(self) -> None:
        if self.settings.hold_to_talk:
            self.talk_released()

    # ------------------------------------------------------------ engine -> window

    def _set_status(self, text: str) -> None:
        self.status_label.setText(text)

    def _on_state(self, event: StateChanged) -> None:
        self._show_state(event.state, event.detail)

    def _show_state(self, state: EngineState, detail: str = "") -> None:
        self._state = state
        key = self.settings.talk_key
        texts = {
            EngineState.IDLE: "No model loaded. Open File → Settings to choose or download one.",
            EngineState.LOADING: "Loading the model…",
            EngineState.READY: f"Ready. Hold {key} (or the button) and speak.",
            EngineState.LISTENING: "Listening…",
            EngineState.THINKING: "Thinking…",
            EngineState.SPEAKING: f"Speaking… ({'slow device; ' if self._slow_turn else ''}Esc to stop)",
            EngineState.ERROR: detail or "Something went wrong.",
        }
        # A READY/IDLE that carries a reason keeps the message the reason's own event just showed.
        keeps_message = state in (EngineState.READY, EngineState.IDLE) and detail and detail != "cancelled"
        if not keeps_message:
            self._set_status(texts[state])
        self.level_meter.setVisible(state is EngineState.LISTENING)
        busy = state in (EngineState.LISTENING, EngineState.THINKING, EngineState.SPEAKING)
        self.stop_button.setEnabled(busy)
        usable = self._model_ready and state is not EngineState.LOADING
        self.talk_button.setEnabled(usable)
        self.text_input.setEnabled(usable)
        self.send_button.setEnabled(usable)
        self.new_button.setEnabled(usable)
        self.talk_button.setToolTip("" if usable else "Available once a model is loaded")

    def _on_load_progress(self, fraction: float, message: str) -> None:
        self._set_status(f"Loading the model… {fraction * 100:.0f}%  {message}")

    def _on_ready(self, summary: str) -> None:
        self._model_ready = True
        self.status_label.setToolTip(summary)
        self.model_summary = summary
        logger.info("Model ready: %s", summary)
        self._show_state(EngineState.READY)

    def _on_listening(self, level_dbfs: float, elapsed_s: float, remaining_s: float) -> None:
        fill = (max(level_dbfs, METER_FLOOR_DBFS) - METER_FLOOR_DBFS) / -METER_FLOOR_DBFS
        self.level_meter.setValue(round(100 * fill))
        self._set_status(f"Listening… {remaining_s:.0f} s left")

    def _on_slow_device(self, event: SlowDevice) -> None:
        """This PC makes speech slower than it plays: the answer waits so it does not stutter."""
        self._slow_turn = True
        self._set_status(
            f"Slow device: this PC makes speech at {event.speed:.1f}× real time, so the answer starts in about "
            f"{max(1, round(event.wait_s))} s and then plays without gaps."
        )

    def _on_turn_started(self, started: TurnStarted) -> None:
        self._slow_turn = False
        self.transcript.start_turn(started)

    def _on_turn_finished(self, finished: TurnFinished) -> None:
        self.transcript.finish_turn(finished)
        card = self.transcript.cards.get(finished.turn_id)
        shown = card.answer_text if card is not None else ""
        logger.info("Transcript turn %d shows %d characters: %r", finished.turn_id, len(shown), shown[:200])

    def _on_failed(self, failed: Failed) -> None:
        title = FAILURE_TITLES.get(failed.kind, "Something went wrong")
        text = f"{title}: {failed.message}"
        if failed.fix:
            text += f"\n{failed.fix}"
        self._set_status(text)
        logger.warning("Engine reported %s: %s", failed.kind, failed.message)
        if failed.kind in DIALOG_KINDS:
            box = QMessageBox(QMessageBox.Icon.Warning, f"OmniTalk: {title}", failed.message, parent=self)
            box.setInformativeText(failed.fix or "See Help → Show logs for details.")
            box.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
            box.setObjectName("failureDialog")
            box.open()  # window-modal, never blocks the event loop

    # ---------------------------------------------------------------------- help

    def show_logs(self) -> None:
        QDesktopServices.openUrl(QUrl.fromLocalFile(str(log_dir())))

    def show_about(self) -> None:
        QMessageBox.about(self, "About OmniTalk", about_text(self.model_summary))

    def on_started(self) -> None:
        """Called once the event loop runs (the window is visible)."""
        logger.info("Main window shown")

    def closeEvent(self, event: QCloseEvent) -> None:
        self._set_global_hotkey(None)
        app = QApplication.instance()
        if app is not None:
            app.removeEventFilter(self)
        super().closeEvent(event)
