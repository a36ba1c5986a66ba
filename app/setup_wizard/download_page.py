"""The download itself: per-file and total progress, pause/resume, retry with the error in words."""

from __future__ import annotations

import logging
import threading
from typing import TYPE_CHECKING

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QHBoxLayout, QLabel, QProgressBar, QPushButton, QVBoxLayout, QWizardPage

from app.setup_wizard.page_ids import PAGE_DONE
from app.setup_wizard.texts import progress_text
from app.tasks import on_main, run_in_background
from app.widgets import ERROR_COLOUR, OK_COLOUR, coloured, error_text
from engine.errors import Cancelled, EngineError
from engine.model_download import plan_download, run_download
from engine.preflight import size_text
from engine.store import DownloadProgress, ModelPaths

if TYPE_CHECKING:
    from app.setup_wizard.wizard import SetupWizard

logger = logging.getLogger(__name__)

PROGRESS_STEPS = 1000  # QProgressBar resolution


class DownloadPage(QWizardPage):
    def __init__(self, wizard: SetupWizard) -> None:
        super().__init__()
        self._wizard = wizard
        self.setTitle("Downloading the model")
        self.setSubTitle("You can pause at any time; the next start continues where it stopped.")
        self._cancel: threading.Event | None = None
        self._finished = False
        self._done_paths: ModelPaths | None = None  # what a finished download put in place
        self.file_label = QLabel("Starting…")
        self.file_bar = QProgressBar()
        self.file_bar.setRange(0, PROGRESS_STEPS)
        self.stats_label = QLabel()
        self.total_bar = QProgressBar()
        self.total_bar.setRange(0, PROGRESS_STEPS)
        self.total_label = QLabel()
        self.message_label = QLabel()
        self.message_label.setWordWrap(True)
        self.message_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.cancel_button = QPushButton("Pause download")
        self.cancel_button.clicked.connect(self.cancel)
        self.retry_button = QPushButton("Retry")
        self.retry_button.clicked.connect(self.start)
        self.retry_button.hide()
        buttons = QHBoxLayout()
        buttons.addStretch(1)
        buttons.addWidget(self.retry_button)
        buttons.addWidget(self.cancel_button)
        layout = QVBoxLayout(self)
        layout.addWidget(self.file_label)
        layout.addWidget(self.file_bar)
        layout.addWidget(self.stats_label)
        layout.addSpacing(12)
        layout.addWidget(QLabel("All files"))
        layout.addWidget(self.total_bar)
        layout.addWidget(self.total_label)
        layout.addWidget(self.message_label)
        layout.addStretch(1)
        layout.addLayout(buttons)

    def nextId(self) -> int:
        return PAGE_DONE

    def isComplete(self) -> bool:
        return self._finished and self._done_paths == self._wizard.download_paths()

    @property
    def running(self) -> bool:
        return self._cancel is not None

    def initializePage(self) -> None:
        if not self.isComplete():
            self.start()

    def cleanupPage(self) -> None:
        """Back: stop the download (what is on disk is kept)."""
        self.cancel()

    def start(self) -> None:
        if self.running:
            return
        cancel = threading.Event()
        self._cancel = cancel
        self._finished = False
        self.retry_button.hide()
        self.cancel_button.show()
        self.cancel_button.setEnabled(True)
        self.message_label.setText("")
        coloured(self.message_label, None)
        self.completeChanged.emit()
        wizard = self._wizard
        source, paths, downloader = wizard.source, wizard.download_paths(), wizard.new_downloader()
        progress = on_main(self._on_progress, context=self)

        def job() -> ModelPaths:
            plan = plan_download(source, paths, downloader, cancel.is_set)
            return run_download(plan, downloader, progress, cancel.is_set)

        run_in_background(job, self._on_done, self._on_failed, context=self)

    def cancel(self) -> None:
        if self._cancel is not None:
            self._cancel.set()
            self.cancel_button.setEnabled(False)
            self.file_label.setText("Pausing…")

    def _on_progress(self, p: DownloadProgress) -> None:
        if not self.running:
            return  # a late report after the job ended
        name, stats = progress_text(p)
        self.file_label.setText(f"Downloading {name}")
        self.stats_label.setText(stats)
        if p.file_total:
            self.file_bar.setRange(0, PROGRESS_STEPS)
            self.file_bar.setValue(round(PROGRESS_STEPS * min(1.0, p.file_done / p.file_total)))
        else:
            self.file_bar.setRange(0, 0)  # busy indicator: size unknown
        if p.total:
            self.total_bar.setValue(round(PROGRESS_STEPS * min(1.0, p.done / p.total)))
            self.total_label.setText(f"{size_text(p.done)} of {size_text(p.total)}")
        self._wizard.downloadProgressed.emit(p)

    def _on_done(self, paths: ModelPaths) -> None:
        self._cancel = None
        self._finished = True
        self._done_paths = paths
        self.file_bar.setRange(0, PROGRESS_STEPS)
        self.file_bar.setValue(PROGRESS_STEPS)
        self.total_bar.setValue(PROGRESS_STEPS)
        self.file_label.setText("All files are downloaded and checked.")
        self.stats_label.setText("")
        self.message_label.setText(f"Model: {paths.model_dir}\nVoice: {paths.vocoder_dir}")
        coloured(self.message_label, OK_COLOUR)
        self.cancel_button.hide()
        self.completeChanged.emit()
        self._wizard.downloadFinished.emit(True)

    def _on_failed(self, exc: BaseException) -> None:
        self._cancel = None
        self.file_bar.setRange(0, PROGRESS_STEPS)
        self.cancel_button.hide()
        self.retry_button.show()
        self.stats_label.setText("")
        if isinstance(exc, Cancelled):
            self.file_label.setText("Paused.")
            self.message_label.setText("What was downloaded is kept; Resume continues where it stopped.")
            coloured(self.message_label, None)
            self.retry_button.setText("Resume")
        else:
            unexpected = not isinstance(exc, EngineError | OSError)
            logger.warning("Model download stopped: %s", exc, exc_info=exc if unexpected else None)
            self.file_label.setText("The download stopped.")
            self.message_label.setText(error_text(exc))
            coloured(self.message_label, ERROR_COLOUR)
            self.retry_button.setText("Retry")
        self._wizard.downloadFinished.emit(False)
