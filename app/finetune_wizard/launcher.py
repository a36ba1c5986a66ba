"""The fine-tune wizard's place in the running app: opening it with the current model, making room
on the GPU for a training and loading the conversation model again, "Use it now", and quitting
while a training runs (asked first; the training stops with a checkpoint that the next wizard
offers to resume).

Owner: the Controller (app/application.py) creates one ``FinetuneLauncher`` and keeps adapter
switching itself (``use_adapter``: SetAdapter without a reload).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

import shiboken6
from PySide6.QtCore import QEvent, QObject, Qt
from PySide6.QtWidgets import QMessageBox

from app.finetune_wizard.wizard import FinetuneWizard

if TYPE_CHECKING:
    from app.application import Controller
    from app.settings_dialog import SettingsDialog

logger = logging.getLogger(__name__)

QUIT_QUESTION = (
    "A fine-tune is still training. Quit anyway? The training stops after saving its progress; "
    "the fine-tune wizard offers to resume it next time."
)


class FinetuneLauncher(QObject):
    def __init__(self, controller: Controller) -> None:
        super().__init__(controller.window)
        self.controller = controller
        self.wizard: FinetuneWizard | None = None  # the last one opened (may be closed)
        controller.window.installEventFilter(self)

    def open(self, settings_dialog: SettingsDialog | None = None) -> FinetuneWizard | None:
        """Settings → Fine-tuning → New fine-tune…: the wizard, on top of the settings dialog
        (None while no model folder is set: there is nothing to fine-tune)."""
        c = self.controller
        s = c.settings
        if not s.model_dir:
            return None
        wizard = FinetuneWizard(
            Path(s.model_dir),
            settings_dialog if settings_dialog is not None else c.window,
            speech_encoder=Path(s.speech_encoder) if s.speech_encoder else None,
            device=None if s.gpu == "auto" else s.gpu,
            bridge=c.bridge,
            model_ready=c.model_ready,
            model_on_gpu=c.model_ready and c.model_on_gpu,
            adapter_in_use=Path(s.adapter_dir) if s.adapter_dir else None,
        )
        wizard.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
        self.wizard = wizard
        wizard.unloadRequested.connect(self.unload_for_training)
        wizard.reloadRequested.connect(self.reload_after_training)
        wizard.adapterFinished.connect(lambda path, use_now: self._finished(path, use_now, settings_dialog))
        wizard.open()
        return wizard

    def training_running(self) -> bool:
        wizard = self.wizard
        return wizard is not None and shiboken6.isValid(wizard) and wizard.train_page.running

    def unload_for_training(self) -> None:
        self.controller.model_ready = False
        self.controller.bridge.unload_model()

    def reload_after_training(self) -> None:
        if self.controller.settings.model_dir:
            self.controller.load_model()

    def _finished(self, adapter: Path, use_now: bool, settings_dialog: SettingsDialog | None) -> None:
        if use_now:
            self.controller.use_adapter(adapter)
        if settings_dialog is not None and shiboken6.isValid(settings_dialog) and settings_dialog.isVisible():
            settings_dialog.finetune_tab.show_settings(self.controller.settings)
            settings_dialog.finetune_tab.select(adapter)

    def shutdown(self) -> None:
        """The app quits: a training still running stops with a checkpoint (Resume next time)."""
        if self.wizard is not None and shiboken6.isValid(self.wizard):
            self.wizard.stop_training_for_exit()

    def eventFilter(self, watched: QObject, event: QEvent) -> bool:
        """The main window's close: asked first while a training runs (the window needs no part in it)."""
        if event.type() == QEvent.Type.Close and self.training_running():
            answer = QMessageBox.question(
                self.controller.window,
                "OmniTalk",
                QUIT_QUESTION,
                QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.No,
                QMessageBox.StandardButton.No,
            )
            if answer != QMessageBox.StandardButton.Yes:
                event.ignore()
                return True
        return False
