"""Files already on disk: three paths, checked in the background without loading the model."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from PySide6.QtCore import Qt
from PySide6.QtWidgets import (
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QVBoxLayout,
    QWizardPage,
)

from app.setup_wizard.page_ids import PAGE_DONE
from app.tasks import run_in_background
from app.widgets import ERROR_COLOUR, OK_COLOUR, coloured, error_text, path_row
from engine.preflight import ModelCheck
from engine.store import ModelPaths

if TYPE_CHECKING:
    from app.setup_wizard.wizard import SetupWizard


class ExistingPage(QWizardPage):
    def __init__(self, wizard: SetupWizard) -> None:
        super().__init__()
        self._wizard = wizard
        self.setTitle("Your model files")
        self.setSubTitle("Choose the folders; OmniTalk checks them without loading the model.")
        self._checked: tuple[str, str, str] | None = None  # the paths that passed the check
        self._generation = 0
        self.model_edit = QLineEdit()
        self.model_edit.setPlaceholderText("Llama-3.1-8B-Omni folder (config.json, model-*.safetensors)")
        self.encoder_edit = QLineEdit()
        self.encoder_edit.setPlaceholderText("Optional: Whisper large-v3.pt, if the model folder lacks the encoder")
        self.vocoder_edit = QLineEdit()
        self.vocoder_edit.setPlaceholderText("Folder with g_00500000 and config.json")
        rows = (
            ("Omni model folder", self.model_edit, "Choose the Llama-3.1-8B-Omni folder", False),
            ("Whisper encoder", self.encoder_edit, "Choose Whisper large-v3.pt", True),
            ("Vocoder folder", self.vocoder_edit, "Choose the unit vocoder folder", False),
        )
        form = QFormLayout()
        for label, edit, title, is_file in rows:
            browse = QPushButton("Browse…")
            browse.clicked.connect(lambda _checked=False, e=edit, t=title, f=is_file: self._browse(e, t, f))
            edit.textChanged.connect(self._paths_changed)
            form.addRow(label, path_row(edit, browse))
        self.check_button = QPushButton("Check the files")
        self.check_button.clicked.connect(self.validate)
        self.result_label = QLabel("Not checked yet.")
        self.result_label.setWordWrap(True)
        self.result_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.licence_note = QLabel("The LLaMA-Omni weights are for non-commercial use only (see their licence).")
        self.licence_note.setWordWrap(True)
        button_row = QHBoxLayout()
        button_row.addWidget(self.check_button)
        button_row.addStretch(1)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addLayout(button_row)
        layout.addWidget(self.result_label)
        layout.addStretch(1)
        layout.addWidget(self.licence_note)

    def nextId(self) -> int:
        return PAGE_DONE

    def _paths(self) -> tuple[str, str, str]:
        return (self.model_edit.text().strip(), self.encoder_edit.text().strip(), self.vocoder_edit.text().strip())

    def isComplete(self) -> bool:
        return self._checked is not None and self._checked == self._paths()

    def model_paths(self) -> ModelPaths:
        model, encoder, vocoder = (Path(p).expanduser() if p else None for p in self._paths())
        assert model is not None and vocoder is not None, "only called once the check passed"
        return ModelPaths(model_dir=model, vocoder_dir=vocoder, speech_encoder=encoder)

    def _browse(self, edit: QLineEdit, title: str, is_file: bool) -> None:
        start = edit.text() or str(Path.home())
        if is_file:
            chosen, _filter = QFileDialog.getOpenFileName(
                self, title, start, "Whisper checkpoint (*.pt);;All files (*)"
            )
        else:
            chosen = QFileDialog.getExistingDirectory(self, title, start)
        if chosen:
            edit.setText(chosen)

    def _paths_changed(self) -> None:
        self._generation += 1
        self.check_button.setEnabled(True)
        self.result_label.setText("Not checked yet.")
        coloured(self.result_label, None)
        self.completeChanged.emit()

    def validate(self) -> None:
        model, encoder, vocoder = self._paths()
        if not model or not vocoder:
            self.result_label.setText("Choose the Omni model folder and the vocoder folder.")
            coloured(self.result_label, ERROR_COLOUR)
            self._wizard.validationFinished.emit(False)
            return
        self._generation += 1
        generation, paths, checker = self._generation, self._paths(), self._wizard.check_model
        self.check_button.setEnabled(False)
        self.result_label.setText("Checking the files…")
        coloured(self.result_label, None)
        run_in_background(
            lambda: checker(
                Path(model).expanduser(), Path(encoder).expanduser() if encoder else None, Path(vocoder).expanduser()
            ),
            lambda result: self._on_checked(generation, paths, result),
            lambda exc: self._on_failed(generation, exc),
            context=self,
        )

    def _on_checked(self, generation: int, paths: tuple[str, str, str], result: ModelCheck) -> None:
        if generation != self._generation:
            return
        self._checked = paths
        self.check_button.setEnabled(True)
        self.result_label.setText(f"✓ Found {result.summary}.")
        coloured(self.result_label, OK_COLOUR)
        self.completeChanged.emit()
        self._wizard.validationFinished.emit(True)

    def _on_failed(self, generation: int, exc: BaseException) -> None:
        if generation != self._generation:
            return
        self.check_button.setEnabled(True)
        self.result_label.setText(error_text(exc))
        coloured(self.result_label, ERROR_COLOUR)
        self._wizard.validationFinished.emit(False)
