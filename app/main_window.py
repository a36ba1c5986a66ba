"""The main window: push-to-talk button and hotkey, status that is always true, live transcript, text box.

All engine work goes through the bridge; every handler here returns at once.
"""

from __future__ import annotations

import logging

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

from app.audio_banner import AudioBanner
from app.bridge import EngineBridge
from app.error_words import NO_SPEAKER_NOTE, describe_failed
from app.global_hotkey import GlobalHotkey
from app.help_dialogs import LogsDialog, about_text
from app.icons import app_icon
from app.settings import AppSettings
from app.tasks import run_in_background
from app.transcript import TranscriptView
from app.words import FINETUNE_ACTION, LOGS_ACTION, SETTINGS_ACTION, SETUP_ACTION
from engine.events import (
    EngineState,
    Failed,
    ModelInfo,
    Ready,
    SlowDevice,
    StateChanged,
    TurnFinished,
    TurnStarted,
)
from engine.paths import log_dir

logger = logging.getLogger(__name__)

WINDOW_SIZE_PX = (600, 720)
METER_FLOOR_DBFS = -60.0
# Key auto-repeat arrives as release+press pairs every 25-40 ms, and not every platform flags them
# (Xvfb's do not reach us as auto-repeat). A release only counts once no press follows this soon.
RELEASE_DEBOUNCE_MS = 60

# Failures that stop the app from working until the user acts get a dialog, not just the status line.
DIALOG_KINDS = ("model_missing", "model_corrupt", "model_incompatible", "not_enough_memory", "device_unavailable")
LOG_FILE_NAME = "omnitalk.log"  # main.py writes it in log_dir()


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
    setupRequested = Signal()  # File → Set up model…
    finetuneRequested = Signal()  # File → Fine-tuning…: Settings → Fine-tuning

    def __init__(self, bridge: EngineBridge | None = None, settings: AppSettings | None = None) -> None:
        super().__init__()
        self.bridge = bridge
        self.settings = settings or AppSettings()
        self.setWindowTitle("OmniTalk")
        self.setWindowIcon(app_icon())  # the About box and dialogs take their icon from here
        self.resize(*WINDOW_SIZE_PX)
        self._state = EngineState.IDLE
        self._talk_down = False  # the talk key/button is held (or toggled on)
        self._slow_turn = False  # the current answer is held back on a slow device (SlowDevice)
        self._model_ready = False
        self.global_hotkey: GlobalHotkey | None = None
        self.model_summary: str | None = None
        self.model_info: ModelInfo | None = None
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
        self.audio_banner = AudioBanner()
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
        layout.addWidget(self.audio_banner)
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
        self.setup_action = QAction(SETUP_ACTION, self)
        self.setup_action.setToolTip("Download the model, or choose model files you already have")
        self.setup_action.triggered.connect(self.setupRequested)
        file_menu.addAction(self.setup_action)
        self.settings_action = QAction("&" + SETTINGS_ACTION, self)
        self.settings_action.setShortcut(QKeySequence("Ctrl+,"))
        self.settings_action.triggered.connect(self.settingsRequested)
        file_menu.addAction(self.settings_action)
        self.finetune_action = QAction(FINETUNE_ACTION, self)
        self.finetune_action.triggered.connect(self.finetuneRequested)
        file_menu.addAction(self.finetune_action)
        file_menu.addSeparator()
        self.quit_action = QAction("&Quit", self)
        self.quit_action.setShortcut(QKeySequence.StandardKey.Quit)
        self.quit_action.triggered.connect(self.close)
        file_menu.addAction(self.quit_action)

        help_menu = self.menuBar().addMenu("&Help")
        self.show_logs_action = QAction("&" + LOGS_ACTION, self)
        self.show_logs_action.triggered.connect(self.show_logs)
        help_menu.addAction(self.show_logs_action)
        self.copy_report_action = QAction("&Copy diagnostic report", self)
        self.copy_report_action.setToolTip("Versions, GPU and folders for a bug report (nothing from the conversation)")
        self.copy_report_action.triggered.connect(self.copy_diagnostic_report)
        help_menu.addAction(self.copy_report_action)
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
        bridge.devicesListed.connect(self.audio_banner.show_listing)
        self.audio_banner.rescanRequested.connect(lambda: bridge.list_devices(True))

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
            EngineState.IDLE: f"No model loaded. Use File → {SETUP_ACTION} to download one or choose your files.",
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

    def _on_ready(self, ready: Ready) -> None:
        self._model_ready = True
        self.status_label.setToolTip(ready.summary)
        self.model_summary = ready.summary
        self.model_info = ready.info
        logger.info("Model ready: %s (%s)", ready.summary, ready.info)
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
        words = describe_failed(failed)
        logger.warning("Engine reported %s (%s): %s [%s]", failed.kind, failed.reason, failed.message, failed.path)
        if failed.kind == "audio_device" and failed.turn_id is not None:
            # The answer was shown but could not be spoken: say so on the card and in the banner.
            self.transcript.mark_text_only(failed.turn_id)
            self.audio_banner.speaker_failed(failed)
            self._set_status(f"Answered in text only: {NO_SPEAKER_NOTE.split(': ', 1)[1]}.")
            return
        self._set_status(f"{words.title}: {words.plain()}")
        if failed.kind in DIALOG_KINDS:
            box = QMessageBox(QMessageBox.Icon.Warning, f"OmniTalk: {words.title}", words.text, parent=self)
            box.setInformativeText(words.details() or "See Help → Show logs for details.")
            box.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
            box.setObjectName("failureDialog")
            box.open()  # window-modal, never blocks the event loop

    # ---------------------------------------------------------------------- help

    def show_logs(self) -> None:
        """Open the log folder in the desktop's file manager; without one, show where it is."""
        folder = log_dir()
        if QDesktopServices.openUrl(QUrl.fromLocalFile(str(folder))):
            return
        logger.warning("No program opened the log folder %s; showing its path instead", folder)
        dialog = LogsDialog(folder / LOG_FILE_NAME, self)
        dialog.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
        dialog.open()

    def copy_diagnostic_report(self) -> None:
        """Help → Copy diagnostic report: collected in the background (imports torch), then copied."""
        from app.self_check import diagnostic_report

        self.copy_report_action.setEnabled(False)
        self._set_status("Collecting the diagnostic report…")
        summary = self.model_summary

        def copied(report: str) -> None:
            self.copy_report_action.setEnabled(True)
            QApplication.clipboard().setText(report)
            self._set_status("The diagnostic report is on the clipboard: paste it into your bug report.")

        def failed(exc: BaseException) -> None:
            self.copy_report_action.setEnabled(True)
            self._set_status(f"The diagnostic report could not be collected: {exc}")

        run_in_background(lambda: diagnostic_report(summary), copied, failed, context=self)

    def show_about(self) -> None:
        text = about_text(self.model_info, self.audio_banner.status_text, self.model_summary)
        QMessageBox.about(self, "About OmniTalk", text)

    def on_started(self) -> None:
        """Called once the event loop runs (the window is visible)."""
        logger.info("Main window shown")

    def closeEvent(self, event: QCloseEvent) -> None:
        self._set_global_hotkey(None)
        app = QApplication.instance()
        if app is not None:
            app.removeEventFilter(self)
        super().closeEvent(event)

