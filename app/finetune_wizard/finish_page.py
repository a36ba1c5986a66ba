"""Page 6: name the adapter (its folder is renamed) and choose whether to use it now."""

from __future__ import annotations

from PySide6.QtWidgets import QCheckBox, QFormLayout, QLabel, QLineEdit, QWizardPage

from app.finetune_wizard.state import WizardState
from app.finetune_wizard.texts import FINISH_PAGE
from app.widgets import ERROR_COLOUR, coloured, error_text
from engine.errors import EngineError
from engine.finetune.library import rename_adapter


class FinishPage(QWizardPage):
    def __init__(self, state: WizardState) -> None:
        super().__init__()
        self.state = state
        self.setTitle(FINISH_PAGE)
        self.setSubTitle("Give your adapter a name you will recognise in Settings → Fine-tuning.")
        self.name_edit = QLineEdit()
        self.use_check = QCheckBox("Use it now")
        self.use_check.setChecked(True)
        self.error_label = QLabel()
        self.error_label.setWordWrap(True)
        coloured(self.error_label, ERROR_COLOUR)
        form = QFormLayout(self)
        form.addRow("Name", self.name_edit)
        form.addRow("", self.use_check)
        form.addRow(self.error_label)
        self.name_edit.textChanged.connect(lambda _text: self.completeChanged.emit())

    def initializePage(self) -> None:
        if self.state.adapter is not None:
            self.name_edit.setText(self.state.adapter.name)

    def isComplete(self) -> bool:
        return bool(self.name_edit.text().strip())

    def validatePage(self) -> bool:
        assert self.state.adapter is not None
        try:
            self.state.adapter = rename_adapter(self.state.adapter, self.name_edit.text())
        except (EngineError, OSError) as exc:
            self.error_label.setText(error_text(exc))
            return False
        return True
