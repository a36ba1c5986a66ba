"""Ready: where the files are and what the GPU can run; Finish loads the model."""

from __future__ import annotations

from typing import TYPE_CHECKING

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QLabel, QVBoxLayout, QWizardPage

from app.setup_wizard.page_ids import PAGE_DONE
from engine.preflight import size_text

if TYPE_CHECKING:
    from app.setup_wizard.wizard import SetupWizard


class DonePage(QWizardPage):
    def __init__(self, wizard: SetupWizard) -> None:
        super().__init__()
        self._wizard = wizard
        self.setTitle("Ready")
        self.setSubTitle("OmniTalk loads the model when you click Finish.")
        self.summary = QLabel()
        self.summary.setWordWrap(True)
        self.summary.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        layout = QVBoxLayout(self)
        layout.addWidget(self.summary)
        layout.addStretch(1)
        wizard.systemChecked.connect(self._refresh)

    def initializePage(self) -> None:
        self._refresh()

    def _refresh(self) -> None:
        if self._wizard.currentId() != PAGE_DONE:
            return
        paths, figures = self._wizard.model_paths(), self._wizard.figures
        lines = [f"Model: {paths.model_dir}", f"Voice (vocoder): {paths.vocoder_dir}"]
        if paths.speech_encoder is not None:
            lines.append(f"Speech encoder: {paths.speech_encoder}")
        if figures.from_files:
            lines.append(f"Files: {size_text(figures.file_bytes)} on disk")
        lines += ["", self._wizard.gpu_summary(), "", "You can change all of this later in Settings."]
        self.summary.setText("\n".join(lines))
