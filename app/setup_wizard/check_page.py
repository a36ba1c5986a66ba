"""Space and graphics card: the hub's file list against the free disk space, and the GPU summary.

A failed check says why in words (app/error_words.py: "No internet connection (could not reach
huggingface.co)", an HTTP status in words), logs the details, and "Check again" shows each try
("Checking again (try 2)…", then the time of the last try), so a retry is visibly a retry.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING

from PySide6.QtWidgets import QFileDialog, QFormLayout, QLabel, QLineEdit, QPushButton, QWizardPage

from app.setup_wizard.page_ids import PAGE_DOWNLOAD
from app.setup_wizard.texts import MB
from app.tasks import run_in_background
from app.widgets import ERROR_COLOUR, coloured, error_text, path_row
from engine.errors import EngineError
from engine.model_download import DownloadPlan, plan_download
from engine.preflight import size_text
from engine.store import DISK_MARGIN_BYTES

if TYPE_CHECKING:
    from app.setup_wizard.wizard import SetupWizard

logger = logging.getLogger(__name__)


class CheckPage(QWizardPage):
    def __init__(self, wizard: SetupWizard) -> None:
        super().__init__()
        self._wizard = wizard
        self.setTitle("Space and graphics card")
        self.setSubTitle("Checking what the download needs and what this PC has.")
        self.plan: DownloadPlan | None = None
        self._fits_disk = False
        self._generation = 0
        self.tries = 0  # checks started since the page was shown
        self.root_edit = QLineEdit(str(wizard.models_root))
        self.root_edit.setReadOnly(True)
        self.change_button = QPushButton("Change…")
        self.change_button.clicked.connect(self._choose_root)
        self.disk_label = QLabel()
        self.disk_label.setWordWrap(True)
        self.gpu_label = QLabel()
        self.gpu_label.setWordWrap(True)
        self.retry_button = QPushButton("Check again")
        self.retry_button.clicked.connect(self.start_check)
        self.retry_button.hide()
        form = QFormLayout(self)
        form.addRow("Download to", path_row(self.root_edit, self.change_button))
        form.addRow("Disk space", self.disk_label)
        form.addRow("Graphics card", self.gpu_label)
        form.addRow("", self.retry_button)
        wizard.systemChecked.connect(self._show_gpu)

    def nextId(self) -> int:
        return PAGE_DOWNLOAD

    def initializePage(self) -> None:
        self._show_gpu()
        self.tries = 0
        self.start_check()

    def isComplete(self) -> bool:
        return self.plan is not None and self._fits_disk

    def _choose_root(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Where should OmniTalk keep the model?", self.root_edit.text())
        if folder:
            self._wizard.models_root = Path(folder)
            self.root_edit.setText(folder)
            self.start_check()

    def start_check(self) -> None:
        self._generation += 1
        self.tries += 1
        generation = self._generation
        self.plan, self._fits_disk = None, False
        self.retry_button.hide()
        again = f"Checking again (try {self.tries}): asking" if self.tries > 1 else "Asking"
        self.disk_label.setText(f"{again} the model hub for the file list…")
        coloured(self.disk_label, None)
        self.completeChanged.emit()
        wizard = self._wizard
        source, paths, downloader = wizard.source, wizard.download_paths(), wizard.new_downloader()
        disk_free = wizard.disk_free

        def check() -> tuple[DownloadPlan, int]:
            plan = plan_download(source, paths, downloader, lambda: False)
            return plan, disk_free(paths.model_dir)

        run_in_background(
            check,
            lambda result: self._on_checked(generation, *result),
            lambda exc: self._on_failed(generation, exc),
            context=self,
        )

    def _on_checked(self, generation: int, plan: DownloadPlan, free: int) -> None:
        if generation != self._generation:
            return
        self.plan = plan
        missing = plan.missing_bytes()
        self._fits_disk = free >= missing + DISK_MARGIN_BYTES
        whisper = " including the Whisper speech encoder," if plan.needs_whisper else ""
        have = plan.total_bytes - missing
        already = f" ({size_text(have)} is already here)" if have >= MB else ""
        text = (
            f"{plan.n_files} files,{whisper} {size_text(plan.total_bytes)} in all; "
            f"{size_text(missing)} to download{already}. "
        )
        if self._fits_disk:
            self.disk_label.setText(text + f"{size_text(free)} is free on that drive.")
            coloured(self.disk_label, None)
        else:
            short = size_text(missing + DISK_MARGIN_BYTES - free)
            self.disk_label.setText(
                text + f"Only {size_text(free)} is free on that drive: free {short} more "
                "or choose a folder on another drive."
            )
            coloured(self.disk_label, ERROR_COLOUR)
            self.retry_button.show()
        self.completeChanged.emit()
        self._wizard.checkFinished.emit(self._fits_disk)

    def _on_failed(self, generation: int, exc: BaseException) -> None:
        if generation != self._generation:
            return
        unexpected = not isinstance(exc, OSError | EngineError)
        logger.warning("Download check failed (try %d): %s", self.tries, exc, exc_info=unexpected)
        when = time.strftime("%H:%M:%S")
        tried = f"Tried {self.tries} times, last at {when}." if self.tries > 1 else f"Tried at {when}."
        self.disk_label.setText(f"{error_text(exc)}\n{tried}")
        coloured(self.disk_label, ERROR_COLOUR)
        self.retry_button.show()
        self._wizard.checkFinished.emit(False)

    def _show_gpu(self) -> None:
        self.gpu_label.setText(self._wizard.gpu_summary())
