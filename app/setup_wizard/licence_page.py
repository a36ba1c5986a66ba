"""The model licence; Next stays off until it is accepted."""

from __future__ import annotations

from PySide6.QtWidgets import QCheckBox, QTextBrowser, QVBoxLayout, QWizardPage

from app.setup_wizard.page_ids import PAGE_CHECK
from app.setup_wizard.texts import LICENCE_HTML


class LicencePage(QWizardPage):
    def __init__(self) -> None:
        super().__init__()
        self.setTitle("Model licence")
        self.setSubTitle("Please read the terms of the model files.")
        self.text = QTextBrowser()
        self.text.setOpenExternalLinks(True)
        self.text.setHtml(LICENCE_HTML)
        self.accept_check = QCheckBox("I accept: I will use the model for non-commercial purposes only")
        self.registerField("licenceAccepted*", self.accept_check)  # '*': Next stays off until ticked
        layout = QVBoxLayout(self)
        layout.addWidget(self.text, 1)
        layout.addWidget(self.accept_check)

    def nextId(self) -> int:
        return PAGE_CHECK
