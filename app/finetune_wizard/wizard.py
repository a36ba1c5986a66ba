"""The fine-tune wizard: data → check → options → training → results → name it.

Opened from Settings → Fine-tuning → "New fine-tune…". The data is saved as it is typed (a draft
that a later wizard offers to continue); the check and the training run in the engine's
subprocess (``python -m engine finetune``) so a crash or an out-of-memory never takes the app
down; a run cut short is offered for resuming the next time. On Finish, ``adapterFinished(path,
use_now)`` tells the controller; trying the adapter on the Results page switches the app's engine
to it, and closing without "Use it now" switches back.

Closing while training runs asks first, then stops the run with a checkpoint (Resume continues it).
"""

from __future__ import annotations

import logging
from pathlib import Path

from PySide6.QtCore import Signal
from PySide6.QtWidgets import QMessageBox, QWidget, QWizard

from app.bridge import EngineBridge
from app.finetune_wizard.check_page import CheckPage
from app.finetune_wizard.data_page import DataPage
from app.finetune_wizard.draft import Draft
from app.finetune_wizard.finish_page import FinishPage
from app.finetune_wizard.options_page import OptionsPage
from app.finetune_wizard.process import STOP_GRACE_MS
from app.finetune_wizard.results_page import ResultsPage
from app.finetune_wizard.state import WizardState
from app.finetune_wizard.texts import WIZARD_TITLE
from app.finetune_wizard.train_page import TrainPage

logger = logging.getLogger(__name__)

PAGE_DATA, PAGE_CHECK, PAGE_OPTIONS, PAGE_TRAIN, PAGE_RESULTS, PAGE_FINISH = range(6)
MIN_SIZE_PX = (760, 680)


class FinetuneWizard(QWizard):
    adapterFinished = Signal(object, bool)  # adapter folder, use it now
    unloadRequested = Signal()  # the training needs the GPU memory of the conversation model
    reloadRequested = Signal()  # the training ended: load the conversation model again

    def __init__(
        self,
        model_dir: Path,
        parent: QWidget | None = None,
        *,
        speech_encoder: Path | None = None,
        device: str | None = None,
        bridge: EngineBridge | None = None,
        model_ready: bool = False,
        model_on_gpu: bool = False,
        adapter_in_use: Path | None = None,
        draft: Draft | None = None,
        python: str | None = None,
        ask: bool = True,
    ) -> None:
        super().__init__(parent)
        self.setWindowTitle(WIZARD_TITLE)
        self.setMinimumSize(*MIN_SIZE_PX)
        self.setWizardStyle(QWizard.WizardStyle.ModernStyle)
        self.bridge = bridge
        self.adapter_in_use = adapter_in_use
        self.state = WizardState(model_dir, draft or Draft(), speech_encoder, device)
        if ask:
            self._offer_draft()
        self.data_page = DataPage(self.state.draft, bridge)
        self.check_page = CheckPage(self.state, python)
        self.options_page = OptionsPage(self.state)
        self.train_page = TrainPage(self.state, python, model_on_gpu=model_on_gpu)
        self.train_page.unloadRequested.connect(self.unloadRequested)
        self.train_page.reloadRequested.connect(self.reloadRequested)
        self.results_page = ResultsPage(self.state, bridge, model_ready)
        self.finish_page = FinishPage(self.state)
        for page_id, page in (
            (PAGE_DATA, self.data_page),
            (PAGE_CHECK, self.check_page),
            (PAGE_OPTIONS, self.options_page),
            (PAGE_TRAIN, self.train_page),
            (PAGE_RESULTS, self.results_page),
            (PAGE_FINISH, self.finish_page),
        ):
            self.setPage(page_id, page)
        if self.state.resume:
            self.setStartId(PAGE_TRAIN)
        self.setButtonText(QWizard.WizardButton.FinishButton, "Finish")
        self._closing = False

    def _offer_draft(self) -> None:
        """A run cut short can resume; pairs from last time can be continued or cleared."""
        draft = self.state.draft
        if self.state.load_run():
            answer = QMessageBox.question(
                self,
                WIZARD_TITLE,
                "A fine-tune stopped before it finished. Continue it where it stopped?",
                QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.No,
            )
            if answer == QMessageBox.StandardButton.Yes:
                self.state.resume = True
                return
            self.state.out = None
            self.state.forget_run()
        if not draft.is_empty():
            n = len(draft.pairs()) + len(draft.added())
            answer = QMessageBox.question(
                self,
                WIZARD_TITLE,
                f"Continue with the questions and answers from last time ({n} item{'s' * (n != 1)})?",
                QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.No,
            )
            if answer == QMessageBox.StandardButton.No:
                draft.clear()

    # ------------------------------------------------------------------------ closing

    def accept(self) -> None:
        # QWizard validates the last page in done(), after accept(): validate (rename) first.
        if not self.validateCurrentPage():
            return
        if self.currentId() == PAGE_FINISH and self.state.adapter is not None:
            use_now = self.finish_page.use_check.isChecked()
            if not use_now:
                self._switch_back()
            self.adapterFinished.emit(self.state.adapter, use_now)
        super().accept()

    def reject(self) -> None:
        if self._closing:
            return
        if self.train_page.running:
            answer = QMessageBox.question(
                self,
                WIZARD_TITLE,
                "The training is still running. Stop it? You can resume it the next time you open this wizard.",
                QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.No,
            )
            if answer != QMessageBox.StandardButton.Yes:
                return
            self._closing = True
            self.train_page.process.finished.connect(lambda *_: self._close_rejected())
            self.train_page.stop()
            return
        self.check_page.process.stop(0)
        self._close_rejected()

    def stop_training_for_exit(self) -> None:
        """The app is quitting: stop a running check or training (the training saves a checkpoint
        first, within STOP_GRACE_MS, then is killed)."""
        self.check_page.process.stop(0)
        if self.train_page.running:
            self.train_page.process.stop()
            if not self.train_page.process.wait_stopped(STOP_GRACE_MS):
                logger.warning("The training did not stop in time at exit")

    def _close_rejected(self) -> None:
        self._switch_back()
        super().reject()

    def _switch_back(self) -> None:
        """Trying the adapter switched the app's engine to it: back to what was in use."""
        if self.results_page.tried and self.bridge is not None:
            self.results_page.tried = False
            self.bridge.set_adapter(self.adapter_in_use)
