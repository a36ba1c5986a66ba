"""Settings → Model: the model folders (checked in the background) and where/how precisely it runs.

Each precision shows its memory estimate for the chosen device; the chosen one is compared with the
device's free memory. "Automatic" is the precision ``engine.preflight.recommend_quant`` picks for
that device (what the setup wizard recommends and what the engine loads). The figures come from
``engine.preflight.model_size`` for the folders that passed the check (the official release's until
then). Estimates depend on the longest answer (the KV cache), which the Conversation tab owns: the
dialog calls :meth:`ModelTab.schedule_estimates` when it changes. "Download…" asks for the setup
wizard (``setupRequested``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from PySide6.QtCore import Qt, QTimer, Signal
from PySide6.QtWidgets import (
    QAbstractButton,
    QButtonGroup,
    QComboBox,
    QFileDialog,
    QFormLayout,
    QGroupBox,
    QLabel,
    QLineEdit,
    QPushButton,
    QRadioButton,
    QSizePolicy,
    QVBoxLayout,
    QWidget,
)

from app.settings import AUTO_QUANT, AppSettings
from app.tasks import run_in_background
from app.widgets import ERROR_COLOUR, OK_COLOUR, button_row, coloured, error_text, path_or_none, path_row
from app.words import DOWNLOAD_BUTTON, ENCODER_ROW, PRECISION_ROW, QUANT_LABELS, RUN_ON_ROW
from engine.errors import EngineError
from engine.preflight import (
    ModelCheck,
    ModelChecker,
    ModelSize,
    Sizer,
    SystemInfo,
    SystemProbe,
    Target,
    fit,
    recommend_quant,
    size_text,
)

logger = logging.getLogger(__name__)

ESTIMATE_DELAY_MS = 200  # wait for the answer-length spin box to settle before re-estimating


AUTO_LABEL = "Automatic"


class ModelTab(QWidget):
    validationFinished = Signal(bool)  # the folder check ended (True: the files are usable)
    estimatesUpdated = Signal()
    setupRequested = Signal()  # "Download…": open the setup wizard

    def __init__(
        self,
        *,
        probe: SystemProbe,
        sizer: Sizer,
        check_model: ModelChecker,
        max_new_tokens: Callable[[], int],
    ) -> None:
        super().__init__()
        self._probe, self._sizer, self._check_model = probe, sizer, check_model
        self._max_new_tokens = max_new_tokens
        self._system: SystemInfo | None = None
        self._checked_paths: tuple[Path, Path | None, Path | None] | None = None  # passed the check
        self._size: ModelSize | None = None
        self._estimate_generation = 0
        self._check_generation = 0

        self.model_dir_edit = QLineEdit()
        self.model_dir_edit.setPlaceholderText("Folder with config.json and model-*.safetensors")
        self.encoder_edit = QLineEdit()
        self.encoder_edit.setPlaceholderText("Optional: only if the model folder lacks the Whisper encoder")
        self.vocoder_dir_edit = QLineEdit()
        self.vocoder_dir_edit.setPlaceholderText("Folder with g_00500000 and config.json")
        model_browse = QPushButton("Browse…")
        model_browse.clicked.connect(lambda: self._pick_folder(self.model_dir_edit, "Choose the Omni model folder"))
        encoder_file = QPushButton("File…")
        encoder_file.clicked.connect(self._pick_encoder_file)
        encoder_folder = QPushButton("Folder…")
        encoder_folder.clicked.connect(lambda: self._pick_folder(self.encoder_edit, "Choose a whisper-large-v3 folder"))
        vocoder_browse = QPushButton("Browse…")
        vocoder_browse.clicked.connect(lambda: self._pick_folder(self.vocoder_dir_edit, "Choose the vocoder folder"))
        self.validate_button = QPushButton("Validate")
        self.validate_button.setSizePolicy(QSizePolicy.Policy.Maximum, QSizePolicy.Policy.Fixed)
        self.validate_button.setToolTip("Check the folders without loading the model")
        self.validate_button.clicked.connect(self.validate_model)
        self.validation_label = QLabel("Not checked yet.")
        self.validation_label.setWordWrap(True)
        self.validation_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.download_button = QPushButton(DOWNLOAD_BUTTON)
        self.download_button.setSizePolicy(QSizePolicy.Policy.Maximum, QSizePolicy.Policy.Fixed)
        self.download_button.setToolTip("Open the setup wizard: download the model, or choose files you have")
        self.download_button.clicked.connect(self.setupRequested)

        files = QGroupBox("Model files")
        form = QFormLayout(files)
        form.addRow("Omni model folder", path_row(self.model_dir_edit, model_browse))
        form.addRow(ENCODER_ROW, path_row(self.encoder_edit, encoder_file, encoder_folder))
        form.addRow("Vocoder folder", path_row(self.vocoder_dir_edit, vocoder_browse))
        for edit in (self.model_dir_edit, self.encoder_edit, self.vocoder_dir_edit):
            edit.textEdited.connect(self._paths_changed)
        form.addRow("", button_row(self.validate_button, self.download_button))
        form.addRow(self.validation_label)

        self.gpu_combo = QComboBox()
        self.gpu_combo.currentIndexChanged.connect(lambda _index: self._show_fit())
        self.quant_group = QButtonGroup(self)
        self.quant_buttons: dict[str, QRadioButton] = {}
        quant_box = QVBoxLayout()
        for quant, label in ((AUTO_QUANT, AUTO_LABEL), *QUANT_LABELS.items()):
            button = QRadioButton(label)
            button.setProperty("quant", quant)
            self.quant_group.addButton(button)
            self.quant_buttons[quant] = button
            quant_box.addWidget(button)
        self.quant_group.buttonToggled.connect(self._quant_toggled)
        self.fit_label = QLabel()
        self.fit_label.setObjectName("fitLabel")
        self.fit_label.setWordWrap(True)
        self.estimate_source_label = QLabel()
        self.estimate_source_label.setWordWrap(True)
        self.estimate_source_label.setStyleSheet("color: palette(mid);")
        performance = QGroupBox("Performance")
        perf_form = QFormLayout(performance)
        perf_form.addRow(RUN_ON_ROW, self.gpu_combo)
        perf_form.addRow(PRECISION_ROW, quant_box)
        perf_form.addRow(self.fit_label)
        perf_form.addRow(self.estimate_source_label)

        layout = QVBoxLayout(self)
        layout.addWidget(files)
        layout.addWidget(performance)
        layout.addStretch(1)

        self._estimate_timer = QTimer(self)
        self._estimate_timer.setSingleShot(True)
        self._estimate_timer.setInterval(ESTIMATE_DELAY_MS)
        self._estimate_timer.timeout.connect(self._start_estimates)

    def start(self, settings: AppSettings) -> None:
        """Begin the background work once the dialog shows ``settings``: probe, estimate, check."""
        run_in_background(self._probe, self._on_probed, self._on_probe_failed, context=self)
        self._start_estimates()  # the official release's figures until the folders pass the check
        if settings.model_dir:
            self.validate_model()

    # ------------------------------------------------------------------------ settings <-> widgets

    def show_settings(self, s: AppSettings, *, with_paths: bool = True) -> None:
        if with_paths:
            self.show_paths(s)
        self._fill_gpu_combo(s.gpu)
        self.quant_buttons[s.quant].setChecked(True)

    def show_paths(self, s: AppSettings) -> None:
        self.model_dir_edit.setText(s.model_dir or "")
        self.encoder_edit.setText(s.speech_encoder or "")
        self.vocoder_dir_edit.setText(s.vocoder_dir or "")
        self._paths_changed()

    def changes(self, base: AppSettings) -> dict[str, Any]:
        checked = self.quant_group.checkedButton()
        return {
            "model_dir": path_or_none(self.model_dir_edit),
            "speech_encoder": path_or_none(self.encoder_edit),
            "vocoder_dir": path_or_none(self.vocoder_dir_edit),
            "quant": str(checked.property("quant")) if checked is not None else base.quant,
            "gpu": str(self.gpu_combo.currentData()),
        }

    # ---------------------------------------------------------------------------- model files

    def _pick_folder(self, edit: QLineEdit, title: str) -> None:
        folder = QFileDialog.getExistingDirectory(self, title, edit.text() or str(Path.home()))
        if folder:
            edit.setText(folder)
            self._paths_changed()

    def _pick_encoder_file(self) -> None:
        start = self.encoder_edit.text() or self.model_dir_edit.text() or str(Path.home())
        path, _filter = QFileDialog.getOpenFileName(
            self, "Choose Whisper large-v3.pt", start, "Whisper checkpoint (*.pt);;All files (*)"
        )
        if path:
            self.encoder_edit.setText(path)
            self._paths_changed()

    def _paths_changed(self) -> None:
        self._check_generation += 1  # an answer about the old paths no longer applies
        self.validate_button.setEnabled(True)
        self.validation_label.setText("Not checked yet.")
        coloured(self.validation_label, None)

    def validate_model(self) -> None:
        model_dir = path_or_none(self.model_dir_edit)
        if model_dir is None:
            self.validation_label.setText("Choose the Omni model folder first.")
            coloured(self.validation_label, ERROR_COLOUR)
            self.validationFinished.emit(False)
            return
        encoder = path_or_none(self.encoder_edit)
        vocoder = path_or_none(self.vocoder_dir_edit)
        self._check_generation += 1
        generation = self._check_generation
        self.validate_button.setEnabled(False)
        self.validation_label.setText("Checking the files…")
        coloured(self.validation_label, None)
        checker = self._check_model
        paths = (Path(model_dir), Path(encoder) if encoder else None, Path(vocoder) if vocoder else None)
        run_in_background(
            lambda: checker(*paths),
            lambda result: self._on_checked(generation, result, paths),
            lambda exc: self._on_check_failed(generation, exc),
            context=self,
        )

    def _on_checked(
        self, generation: int, result: ModelCheck, paths: tuple[Path, Path | None, Path | None]
    ) -> None:
        if generation != self._check_generation:
            return
        self.validate_button.setEnabled(True)
        self.validation_label.setText(f"✓ Found {result.summary}.")
        coloured(self.validation_label, OK_COLOUR)
        self._checked_paths = paths
        self._start_estimates()
        self.validationFinished.emit(True)

    def _on_check_failed(self, generation: int, exc: BaseException) -> None:
        if generation != self._check_generation:
            return
        if not isinstance(exc, EngineError | OSError):
            logger.error("Model folder check failed unexpectedly", exc_info=exc)
        self.validate_button.setEnabled(True)
        self.validation_label.setText(error_text(exc))
        coloured(self.validation_label, ERROR_COLOUR)
        if self._checked_paths is not None:  # the figures were for other folders
            self._checked_paths = None
            self._start_estimates()
        self.validationFinished.emit(False)

    # ------------------------------------------------------------------------- memory and GPU

    def _fill_gpu_combo(self, choice: str) -> None:
        rows = self._system.choices() if self._system else [("auto", "Automatic"), ("cpu", "CPU, slow")]
        if choice not in {value for value, _label in rows}:
            rows.insert(-1, (choice, f"GPU {choice.partition(':')[2]} (not found)"))
        self.gpu_combo.blockSignals(True)
        self.gpu_combo.clear()
        for value, label in rows:
            self.gpu_combo.addItem(label, value)
        self.gpu_combo.setCurrentIndex(self.gpu_combo.findData(choice))
        self.gpu_combo.blockSignals(False)
        self._show_fit()

    def _on_probed(self, system: SystemInfo) -> None:
        self._system = system
        self._fill_gpu_combo(str(self.gpu_combo.currentData()))

    def _on_probe_failed(self, exc: BaseException) -> None:
        logger.warning("GPU/RAM probe failed: %s", exc)
        self._system = SystemInfo(gpus=(), ram_free_bytes=None)
        self._fill_gpu_combo(str(self.gpu_combo.currentData()))

    def schedule_estimates(self) -> None:
        """Re-estimate shortly (the answer length is still being edited)."""
        self._estimate_timer.start()

    def _start_estimates(self) -> None:
        self._estimate_generation += 1
        generation, sizer, paths = self._estimate_generation, self._sizer, self._checked_paths or (None, None, None)
        tokens = self._max_new_tokens()
        run_in_background(
            lambda: sizer(*paths, max_new_tokens=tokens),
            lambda size: self._on_estimates(generation, size),
            lambda exc: self._on_estimate_failed(generation, exc),
            context=self,
        )

    def _on_estimates(self, generation: int, size: ModelSize) -> None:
        if generation != self._estimate_generation:
            return
        self._size = size
        self._show_fit()
        self.estimatesUpdated.emit()

    def recommended_quant(self) -> str | None:
        """What "Automatic" means for the chosen device now (None until sizes and memory are known)."""
        if self._size is None or self._system is None:
            return None
        return recommend_quant(self._size.memory, self._target())

    def _on_estimate_failed(self, generation: int, exc: BaseException) -> None:
        if generation == self._estimate_generation:
            logger.error("Memory estimate failed", exc_info=exc)
            self.fit_label.setText(f"The memory estimate failed: {error_text(exc)}")
            coloured(self.fit_label, ERROR_COLOUR)

    def _quant_toggled(self, _button: QAbstractButton, checked: bool) -> None:
        if checked:
            self._show_fit()

    def _target(self) -> Target:
        choice = str(self.gpu_combo.currentData())
        if self._system is not None:
            return self._system.target(choice)
        device_type = "cpu" if choice == "cpu" else "cuda"
        return Target(choice, device_type, "CPU" if device_type == "cpu" else "your GPU", None)

    def _show_fit(self) -> None:
        """Per-mode estimates on the radio buttons; the chosen one against the target's free memory."""
        checked = self.quant_group.checkedButton()
        if self._size is None or checked is None:
            self.fit_label.setText("Estimating how much memory each precision needs…")
            coloured(self.fit_label, None)
            self.fit_label.setProperty("fits", "pending")
            return
        target, memory = self._target(), self._size.memory
        for quant, button in self.quant_buttons.items():
            if quant != AUTO_QUANT:
                button.setText(f"{QUANT_LABELS[quant]}  —  about {size_text(memory[(target.device_type, quant)])}")  # type: ignore[index]
        auto = self.recommended_quant()
        auto_button = self.quant_buttons[AUTO_QUANT]
        if auto is None:
            auto_button.setText(f"{AUTO_LABEL} (the best precision that fits; checking how much memory is free…)")
        else:
            need = size_text(memory[(target.device_type, auto)])
            auto_button.setText(f"{AUTO_LABEL}: {QUANT_LABELS[auto]}  —  about {need}")  # type: ignore[index]
        chosen = str(checked.property("quant"))
        if chosen == AUTO_QUANT:
            chosen = auto or recommend_quant(memory, target)
        needed = memory[(target.device_type, chosen)]
        result = fit(needed, target)
        self.fit_label.setText(result.text)
        coloured(self.fit_label, ERROR_COLOUR if result.fits is False else None)
        self.fit_label.setProperty("fits", {True: "yes", False: "no", None: "unknown"}[result.fits])
        if self._system is None:
            need = size_text(needed)
            self.fit_label.setText(f"This needs about {need} of {target.memory_word}; checking how much is free…")
            self.fit_label.setProperty("fits", "pending")
        if self._size.from_files and self._checked_paths is not None:
            source = f"the model in {self._checked_paths[0]} ({size_text(self._size.file_bytes)} of files)"
        else:
            source = f"the official Llama-3.1-8B-Omni ({size_text(self._size.file_bytes)} to download)"
        self.estimate_source_label.setText(
            f"Estimates for {source}, answers up to {self._max_new_tokens()} tokens."
        )
