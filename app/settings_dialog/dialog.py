"""The settings dialog: one tab per concern, each a widget that shows and returns its own fields.

``SettingsDialog(settings, parent).exec()`` then ``result_settings()`` gives the edited
``AppSettings``; fields no tab shows (licence, window geometry) pass through unchanged. The
Fine-tuning tab acts at once (``useAdapterRequested``); its ``changes`` keep what it shows.
Settings → Model → "Download…" emits ``setupRequested``; the controller opens the setup wizard
and hands its result back through :meth:`use_model`.
Every control's range matches ``app.settings._RANGES``, so the result is always valid. Folder
checks, GPU probing and memory estimates run in the background (app.tasks); audio devices are the
engine's (``devicesRequested`` → ``ListDevices``, answered in :meth:`show_devices`). The dialog
never waits.
"""

from __future__ import annotations

from PySide6.QtCore import Signal
from PySide6.QtGui import QShowEvent
from PySide6.QtWidgets import QDialog, QDialogButtonBox, QTabWidget, QVBoxLayout, QWidget

from app.error_words import describe_failed
from app.settings import AppSettings
from app.settings_dialog.audio_tab import AudioTab
from app.settings_dialog.controls_tab import ControlsTab
from app.settings_dialog.conversation_tab import ConversationTab
from app.settings_dialog.finetune_tab import FinetuneTab
from app.settings_dialog.look_tab import LookTab
from app.settings_dialog.model_tab import ModelTab
from app.words import AUDIO_TAB, CONVERSATION_TAB, FINETUNE_TAB, MODEL_TAB
from engine.events import DeviceChecked, DevicesListed
from engine.preflight import (
    ModelChecker,
    Sizer,
    SystemProbe,
    check_model_folders,
    model_size,
    probe_system,
)

MIN_SIZE_PX = (660, 560)


class SettingsDialog(QDialog):
    devicesRequested = Signal(bool)  # rescan: the engine closes its streams, scans, reopens
    testMicrophoneRequested = Signal(object)  # device key or None (system default)
    testSpeakerRequested = Signal(object)
    setupRequested = Signal()  # Settings → Model → Download…
    useAdapterRequested = Signal(object)  # Settings → Fine-tuning → Use / Don't use (Path or None)
    finetuneRequested = Signal()  # Settings → Fine-tuning → New fine-tune…

    def __init__(
        self,
        settings: AppSettings,
        parent: QWidget | None = None,
        *,
        probe: SystemProbe = probe_system,
        sizer: Sizer = model_size,
        check_model: ModelChecker = check_model_folders,
    ) -> None:
        super().__init__(parent)
        self.setWindowTitle("OmniTalk settings")
        self.setMinimumSize(*MIN_SIZE_PX)
        self._base = settings
        self._asked_for_devices = False

        self.conversation_tab = ConversationTab()
        self.model_tab = ModelTab(
            probe=probe,
            sizer=sizer,
            check_model=check_model,
            max_new_tokens=lambda: int(self.conversation_tab.max_tokens_spin.value()),
        )
        self.audio_tab = AudioTab()
        self.controls_tab = ControlsTab()
        self.look_tab = LookTab()
        self.finetune_tab = FinetuneTab()
        self.tabs = QTabWidget()
        self.tabs.addTab(self.model_tab, MODEL_TAB)
        self.tabs.addTab(self.conversation_tab, CONVERSATION_TAB)
        self.tabs.addTab(self.audio_tab, AUDIO_TAB)
        self.tabs.addTab(self.controls_tab, "Controls")
        self.tabs.addTab(self.look_tab, "Appearance")
        self.tabs.addTab(self.finetune_tab, FINETUNE_TAB)
        self.finetune_tab.useAdapterRequested.connect(self.useAdapterRequested)
        self.finetune_tab.newFinetuneRequested.connect(self.finetuneRequested)
        buttons = QDialogButtonBox.StandardButton
        self.button_box = QDialogButtonBox(buttons.Ok | buttons.Cancel | buttons.RestoreDefaults)
        self.button_box.accepted.connect(self.accept)
        self.button_box.rejected.connect(self.reject)
        restore = self.button_box.button(buttons.RestoreDefaults)
        restore.setToolTip("Every setting back to its default; your model folders are kept.")
        restore.clicked.connect(self.restore_defaults)
        layout = QVBoxLayout(self)
        layout.addWidget(self.tabs)
        layout.addWidget(self.button_box)

        self.audio_tab.devicesRequested.connect(self.devicesRequested)
        self.model_tab.setupRequested.connect(self.setupRequested)
        self.audio_tab.testMicrophoneRequested.connect(self.testMicrophoneRequested)
        self.audio_tab.testSpeakerRequested.connect(self.testSpeakerRequested)
        self._show(settings)
        self.conversation_tab.max_tokens_spin.valueChanged.connect(lambda _value: self.model_tab.schedule_estimates())
        self.model_tab.start(settings)

    def showEvent(self, event: QShowEvent) -> None:
        super().showEvent(event)
        if not self._asked_for_devices:  # connections are made by now
            self._asked_for_devices = True
            self.audio_tab.request_devices(rescan=False)

    def _show(self, s: AppSettings, *, with_paths: bool = True) -> None:
        self.model_tab.show_settings(s, with_paths=with_paths)
        self.conversation_tab.show_settings(s)
        self.audio_tab.show_settings(s)
        self.controls_tab.show_settings(s)
        self.look_tab.show_settings(s)
        if with_paths:
            self.finetune_tab.show_settings(s)

    def result_settings(self) -> AppSettings:
        return self._base.replace(
            **self.model_tab.changes(self._base),
            **self.conversation_tab.changes(),
            **self.audio_tab.changes(),
            **self.controls_tab.changes(),
            **self.look_tab.changes(),
            **self.finetune_tab.changes(),
        )

    def show_tab(self, title: str) -> None:
        """Open on the tab called ``title`` (File → Fine-tuning… opens on Fine-tuning)."""
        for index in range(self.tabs.count()):
            if self.tabs.tabText(index) == title:
                self.tabs.setCurrentIndex(index)

    def use_model(self, settings: AppSettings) -> None:
        """The setup wizard (opened from here) finished: show its model folders, checked again."""
        self._base = self._base.replace(
            model_dir=settings.model_dir, speech_encoder=settings.speech_encoder, vocoder_dir=settings.vocoder_dir
        )
        self.model_tab.show_paths(settings)
        self.model_tab.validate_model()

    def restore_defaults(self) -> None:
        """Defaults everywhere except the model folders (finding them again is a chore)."""
        self._show(AppSettings(), with_paths=False)

    # ---------------------------------------------------------------- answers from the engine

    def show_devices(self, listed: DevicesListed) -> None:
        """Slot for the bridge's ``devicesListed``."""
        self.audio_tab.show_devices(listed)

    def show_audio_test_result_for(self, checked: DeviceChecked) -> None:
        """Slot for the bridge's ``deviceTested``: a failed test in the same words as anywhere else."""
        label = "Microphone" if checked.kind == "input" else "Speaker"
        text = describe_failed(checked.error).plain() if checked.error is not None else checked.message
        self.audio_tab.show_audio_test_result(f"{label}: {text}", checked.ok)
