"""Welcome: download the model, or use files already on disk."""

from __future__ import annotations

from PySide6.QtWidgets import QButtonGroup, QRadioButton, QVBoxLayout, QWizardPage

from app.setup_wizard.page_ids import PAGE_EXISTING, PAGE_LICENCE
from engine.preflight import ModelSize, size_text


class ChoicePage(QWizardPage):
    def __init__(self, catalogue: ModelSize) -> None:
        super().__init__()
        self.setTitle("Welcome to OmniTalk")
        self.setSubTitle("OmniTalk needs the LLaMA-Omni model and a small voice model to talk with you.")
        self.download_radio = QRadioButton(
            f"Download the model (about {size_text(catalogue.file_bytes)}; it can take a while)"
        )
        self.existing_radio = QRadioButton("I already have the files")
        self.download_radio.setChecked(True)
        group = QButtonGroup(self)
        group.addButton(self.download_radio)
        group.addButton(self.existing_radio)
        layout = QVBoxLayout(self)
        layout.addWidget(self.download_radio)
        layout.addWidget(self.existing_radio)
        layout.addStretch(1)

    def nextId(self) -> int:
        return PAGE_LICENCE if self.download_radio.isChecked() else PAGE_EXISTING
