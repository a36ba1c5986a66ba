"""The settings dialog: model files and memory fit, latency, conversation, audio devices, talk key, look.

``SettingsDialog(settings, parent).exec()`` then ``result_settings()`` gives the edited
``AppSettings``; fields the dialog does not show (adapter, licence, window geometry) pass through
unchanged. Every control's range matches ``app.settings._RANGES``, so the result is always valid.
Folder checks, GPU probing, memory estimates and device scans run in the background (app.tasks);
the dialog never waits for them.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from PySide6.QtCore import Qt, QTimer, Signal
from PySide6.QtGui import QKeySequence
from PySide6.QtWidgets import (
    QAbstractButton,
    QButtonGroup,
    QCheckBox,
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QKeySequenceEdit,
    QLabel,
    QLineEdit,
    QPlainTextEdit,
    QPushButton,
    QRadioButton,
    QSizePolicy,
    QSlider,
    QSpinBox,
    QTabWidget,
    QVBoxLayout,
    QWidget,
)

from app.gpu_info import (
    QUANT_LABELS,
    Estimates,
    Estimator,
    ModelCheck,
    ModelChecker,
    SystemInfo,
    SystemProbe,
    Target,
    check_model_folders,
    estimate_all,
    fit,
    gb,
    probe_system,
)
from app.settings import _RANGES, THEMES, AppSettings
from app.tasks import run_in_background
from engine.audio.backend import AudioDevice
from engine.audio.devices import list_devices, refresh_devices
from engine.config import DEFAULT_SYSTEM_PROMPT, OFFICIAL_DIMS, OmniDims
from engine.errors import EngineError

logger = logging.getLogger(__name__)

DEFAULT_TALK_KEY = AppSettings().talk_key
# Keys the main window already uses (Esc stops an answer, Enter sends typed text, Tab moves focus).
RESERVED_KEYS = ("Esc", "Return", "Enter", "Tab", "Backtab")
TALK_KEY_HINT = "Click the box, then press the key or combination to use (for example Ctrl+Space)."
UNIT_MS = 20  # one speech unit = 320 samples at 16 kHz (the vocoder's code_hop_size)
ESTIMATE_DELAY_MS = 200  # wait for the answer-length spin box to settle before re-estimating
ERROR_COLOUR = "#c62828"
OK_COLOUR = "#2e7d32"
THEME_LABELS = {"system": "Follow the system", "light": "Light", "dark": "Dark"}
DialogDevices = Callable[[], list[AudioDevice]]


@dataclass(frozen=True, slots=True)
class LatencyPreset:
    name: str
    first_chunk_units: int  # units before the first audio plays
    chunk_units: int  # units per later piece


LATENCY_PRESETS = (
    LatencyPreset("Fastest reply", 5, 20),
    LatencyPreset("Balanced", AppSettings().first_chunk_units, AppSettings().chunk_units),
    LatencyPreset("Smoother", 20, 80),
    LatencyPreset("Best quality", 40, 160),
)


def error_text(exc: BaseException) -> str:
    """What the user reads for a failure: the EngineError's message and fix, else the exception."""
    if isinstance(exc, EngineError):
        where = f"\n{exc.path}" if exc.path is not None else ""
        fix = f"\n{exc.fix}" if exc.fix else ""
        return f"{exc.message}{where}{fix}"
    return f"{type(exc).__name__}: {exc}"


def coloured(label: QLabel, colour: str | None) -> None:
    label.setStyleSheet(f"color: {colour};" if colour else "")


def _path_or_none(edit: QLineEdit) -> str | None:
    text = edit.text().strip()
    return str(Path(text).expanduser()) if text else None


def path_row(edit: QLineEdit, *buttons: QPushButton) -> QWidget:
    """A path field with its Browse… buttons on one line."""
    row = QWidget()
    box = QHBoxLayout(row)
    box.setContentsMargins(0, 0, 0, 0)
    box.addWidget(edit, 1)
    for button in buttons:
        box.addWidget(button)
    return row


def _int_spin(name: str) -> QSpinBox:
    """A spin box limited to the range settings.py accepts for ``name``."""
    low, high = _RANGES[name]
    box = QSpinBox()
    box.setRange(int(low), int(high))
    box.setValue(int(getattr(AppSettings(), name)))
    return box


def _float_spin(name: str, decimals: int) -> QDoubleSpinBox:
    low, high = _RANGES[name]
    box = QDoubleSpinBox()
    box.setDecimals(decimals)
    box.setRange(low, high)
    box.setValue(float(getattr(AppSettings(), name)))
    return box


class SettingsDialog(QDialog):
    testMicrophoneRequested = Signal(object)  # device key or None (system default)
    testSpeakerRequested = Signal(object)
    validationFinished = Signal(bool)  # the folder check ended (True: the files are usable)
    estimatesUpdated = Signal()

    def __init__(
        self,
        settings: AppSettings,
        parent: QWidget | None = None,
        *,
        probe: SystemProbe = probe_system,
        estimator: Estimator = estimate_all,
        check_model: ModelChecker = check_model_folders,
        devices: DialogDevices = list_devices,
        rescan_devices: DialogDevices = refresh_devices,
    ) -> None:
        super().__init__(parent)
        self.setWindowTitle("OmniTalk settings")
        self.setMinimumSize(660, 560)
        self._base = settings
        self._probe, self._estimator, self._check_model = probe, estimator, check_model
        self._devices, self._rescan_devices = devices, rescan_devices
        self._system: SystemInfo | None = None
        self._dims: OmniDims = OFFICIAL_DIMS
        self._dims_source = "the official Llama-3.1-8B-Omni"
        self._estimates: Estimates | None = None
        self._estimate_generation = 0
        self._check_generation = 0
        self._talk_key = settings.talk_key
        self._audio_devices: list[AudioDevice] | None = None  # None until the first scan answers

        self.tabs = QTabWidget()
        self.tabs.addTab(self._model_tab(), "Model")
        self.tabs.addTab(self._conversation_tab(), "Conversation")
        self.tabs.addTab(self._audio_tab(), "Audio")
        self.tabs.addTab(self._controls_tab(), "Controls")
        self.tabs.addTab(self._look_tab(), "Appearance")
        buttons = QDialogButtonBox.StandardButton
        self.button_box = QDialogButtonBox(buttons.Ok | buttons.Cancel | buttons.RestoreDefaults)
        self.button_box.accepted.connect(self.accept)
        self.button_box.rejected.connect(self.reject)
        restore = self.button_box.button(buttons.RestoreDefaults)
        restore.setToolTip("Every setting back to its default; your model folders are kept.")
        restore.clicked.connect(self.restore_defaults)
        layout = QVBoxLayout(self)
        layout.addWidget(self.tabs)
        layout.addWidget(self.button_box)

        self._estimate_timer = QTimer(self)
        self._estimate_timer.setSingleShot(True)
        self._estimate_timer.setInterval(ESTIMATE_DELAY_MS)
        self._estimate_timer.timeout.connect(self._start_estimates)

        self._show(settings)
        self.max_tokens_spin.valueChanged.connect(lambda _value: self._estimate_timer.start())
        run_in_background(self._probe, self._on_probed, self._on_probe_failed, context=self)
        self._start_estimates()
        self._scan_devices(self._devices)
        if settings.model_dir:
            self.validate_model()

    # ------------------------------------------------------------------------------ building

    def _model_tab(self) -> QWidget:
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

        files = QGroupBox("Model files")
        form = QFormLayout(files)
        form.addRow("Omni model folder", path_row(self.model_dir_edit, model_browse))
        form.addRow("Whisper encoder", path_row(self.encoder_edit, encoder_file, encoder_folder))
        form.addRow("Vocoder folder", path_row(self.vocoder_dir_edit, vocoder_browse))
        for edit in (self.model_dir_edit, self.encoder_edit, self.vocoder_dir_edit):
            edit.textEdited.connect(self._paths_changed)
        form.addRow("", self.validate_button)
        form.addRow(self.validation_label)

        self.gpu_combo = QComboBox()
        self.gpu_combo.currentIndexChanged.connect(lambda _index: self._show_fit())
        self.quant_group = QButtonGroup(self)
        self.quant_buttons: dict[str, QRadioButton] = {}
        quant_box = QVBoxLayout()
        for quant, label in QUANT_LABELS.items():
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
        perf_form.addRow("Run on", self.gpu_combo)
        perf_form.addRow("Precision", quant_box)
        perf_form.addRow(self.fit_label)
        perf_form.addRow(self.estimate_source_label)

        page = QWidget()
        layout = QVBoxLayout(page)
        layout.addWidget(files)
        layout.addWidget(performance)
        layout.addStretch(1)
        return page

    def _conversation_tab(self) -> QWidget:
        self.latency_slider = QSlider(Qt.Orientation.Horizontal)
        self.latency_slider.setRange(0, len(LATENCY_PRESETS) - 1)
        self.latency_slider.setTickPosition(QSlider.TickPosition.TicksBelow)
        self.latency_slider.setPageStep(1)
        self.latency_slider.valueChanged.connect(self._preset_chosen)
        self.latency_label = QLabel()
        self.latency_label.setWordWrap(True)
        self.first_chunk_spin = _int_spin("first_chunk_units")
        self.chunk_spin = _int_spin("chunk_units")
        for box in (self.first_chunk_spin, self.chunk_spin):
            box.setSuffix(" units")
            box.valueChanged.connect(self._chunks_changed)
        ends = QHBoxLayout()
        ends.addWidget(QLabel("Faster reply"))
        ends.addStretch(1)
        ends.addWidget(QLabel("Smoother speech"))
        latency = QGroupBox("Latency and speech quality")
        latency_form = QFormLayout(latency)
        latency_form.addRow(self.latency_slider)
        latency_form.addRow(ends)
        latency_form.addRow("First piece", self.first_chunk_spin)
        latency_form.addRow("Later pieces", self.chunk_spin)
        latency_form.addRow(self.latency_label)

        self.prompt_edit = QPlainTextEdit()
        self.prompt_edit.setPlaceholderText(f"Empty: the model's default —\n{DEFAULT_SYSTEM_PROMPT}")
        self.prompt_edit.setTabChangesFocus(True)
        self.prompt_edit.setMinimumHeight(80)
        self.prompt_reset = QPushButton("Reset")
        self.prompt_reset.setToolTip("Use the model's default system prompt")
        self.prompt_reset.clicked.connect(self.prompt_edit.clear)
        prompt_row = QHBoxLayout()
        prompt_row.addWidget(self.prompt_edit, 1)
        prompt_row.addWidget(self.prompt_reset, 0, Qt.AlignmentFlag.AlignTop)
        self.temperature_spin = _float_spin("temperature", decimals=2)
        self.temperature_spin.setSingleStep(0.05)
        self.temperature_spin.setSpecialValueText("0 (same answer every time)")
        self.max_tokens_spin = _int_spin("max_new_tokens")
        self.max_tokens_spin.setSingleStep(16)
        self.max_tokens_spin.setSuffix(" tokens")
        answers = QGroupBox("Answers")
        answers_form = QFormLayout(answers)
        answers_form.addRow("System prompt", prompt_row)
        answers_form.addRow("Temperature", self.temperature_spin)
        answers_form.addRow("Longest answer", self.max_tokens_spin)

        page = QWidget()
        layout = QVBoxLayout(page)
        layout.addWidget(latency)
        layout.addWidget(answers)
        layout.addStretch(1)
        return page

    def _audio_tab(self) -> QWidget:
        self.input_combo = QComboBox()
        self.output_combo = QComboBox()
        self.test_mic_button = QPushButton("Test")
        self.test_mic_button.setToolTip("Record a few seconds and play them back")
        self.test_mic_button.clicked.connect(lambda: self.testMicrophoneRequested.emit(self.input_combo.currentData()))
        self.test_speaker_button = QPushButton("Test")
        self.test_speaker_button.setToolTip("Play a short sound")
        self.test_speaker_button.clicked.connect(
            lambda: self.testSpeakerRequested.emit(self.output_combo.currentData())
        )
        self.rescan_button = QPushButton("Look for devices again")
        self.rescan_button.clicked.connect(lambda: self._scan_devices(self._rescan_devices))
        self.audio_status = QLabel()
        self.audio_status.setWordWrap(True)
        self.earcons_check = QCheckBox("Play a short sound when listening starts and stops")
        devices = QGroupBox("Devices")
        form = QFormLayout(devices)
        for label, combo, button in (
            ("Microphone", self.input_combo, self.test_mic_button),
            ("Speaker", self.output_combo, self.test_speaker_button),
        ):
            row = QHBoxLayout()
            row.addWidget(combo, 1)
            row.addWidget(button)
            form.addRow(label, row)
        form.addRow(self.rescan_button)
        form.addRow(self.audio_status)
        page = QWidget()
        layout = QVBoxLayout(page)
        layout.addWidget(devices)
        layout.addWidget(self.earcons_check)
        layout.addStretch(1)
        return page

    def _controls_tab(self) -> QWidget:
        self.talk_key_edit = QKeySequenceEdit()
        self.talk_key_edit.setMaximumSequenceLength(1)
        self.talk_key_edit.setToolTip("Click here, then press the key (or key combination) to use")
        self.talk_key_edit.keySequenceChanged.connect(self._talk_key_changed)
        self.talk_key_edit.editingFinished.connect(self._talk_key_finished)
        self.talk_key_reset = QPushButton(f"Use {DEFAULT_TALK_KEY}")
        self.talk_key_reset.clicked.connect(lambda: self._set_talk_key(DEFAULT_TALK_KEY))
        self.talk_key_note = QLabel()
        self.talk_key_note.setWordWrap(True)
        key_row = QHBoxLayout()
        key_row.addWidget(self.talk_key_edit, 1)
        key_row.addWidget(self.talk_key_reset)
        self.hold_radio = QRadioButton("Hold the key while you speak")
        self.toggle_radio = QRadioButton("Press once to start, again to stop")
        self.global_hotkey_check = QCheckBox("Also works while OmniTalk is in the background (global hotkey)")
        box = QGroupBox("Talk key")
        form = QFormLayout(box)
        form.addRow("Key", key_row)
        form.addRow(self.talk_key_note)
        form.addRow(self.hold_radio)
        form.addRow(self.toggle_radio)
        form.addRow(self.global_hotkey_check)
        page = QWidget()
        layout = QVBoxLayout(page)
        layout.addWidget(box)
        layout.addStretch(1)
        return page

    def _look_tab(self) -> QWidget:
        self.theme_combo = QComboBox()
        for theme in THEMES:
            self.theme_combo.addItem(THEME_LABELS[theme], theme)
        page = QWidget()
        form = QFormLayout(page)
        form.addRow("Theme", self.theme_combo)
        return page

    # ------------------------------------------------------------------------ settings <-> widgets

    def _show(self, s: AppSettings, *, with_paths: bool = True) -> None:
        if with_paths:
            self.model_dir_edit.setText(s.model_dir or "")
            self.encoder_edit.setText(s.speech_encoder or "")
            self.vocoder_dir_edit.setText(s.vocoder_dir or "")
        self._fill_gpu_combo(s.gpu)
        self.quant_buttons[s.quant].setChecked(True)
        self.prompt_edit.setPlainText(s.system_prompt)
        self.temperature_spin.setValue(s.temperature)
        self.max_tokens_spin.setValue(s.max_new_tokens)
        self.first_chunk_spin.setValue(s.first_chunk_units)
        self.chunk_spin.setValue(s.chunk_units)
        self._chunks_changed()
        self._fill_device_combo(self.input_combo, self._audio_devices, s.input_device)
        self._fill_device_combo(self.output_combo, self._audio_devices, s.output_device)
        self.earcons_check.setChecked(s.earcons)
        self._set_talk_key(s.talk_key)
        (self.hold_radio if s.hold_to_talk else self.toggle_radio).setChecked(True)
        self.global_hotkey_check.setChecked(s.global_hotkey)
        self.theme_combo.setCurrentIndex(max(0, self.theme_combo.findData(s.theme)))

    def result_settings(self) -> AppSettings:
        checked = self.quant_group.checkedButton()
        return self._base.replace(
            model_dir=_path_or_none(self.model_dir_edit),
            speech_encoder=_path_or_none(self.encoder_edit),
            vocoder_dir=_path_or_none(self.vocoder_dir_edit),
            quant=str(checked.property("quant")) if checked is not None else self._base.quant,
            gpu=str(self.gpu_combo.currentData()),
            system_prompt=self.prompt_edit.toPlainText().strip(),
            temperature=round(float(self.temperature_spin.value()), 2),
            max_new_tokens=int(self.max_tokens_spin.value()),
            first_chunk_units=int(self.first_chunk_spin.value()),
            chunk_units=int(self.chunk_spin.value()),
            input_device=self.input_combo.currentData(),
            output_device=self.output_combo.currentData(),
            earcons=self.earcons_check.isChecked(),
            talk_key=self._talk_key,
            hold_to_talk=self.hold_radio.isChecked(),
            global_hotkey=self.global_hotkey_check.isChecked(),
            theme=str(self.theme_combo.currentData()),
        )

    def restore_defaults(self) -> None:
        """Defaults everywhere except the model folders (finding them again is a chore)."""
        self._show(AppSettings(), with_paths=False)

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
        model_dir = _path_or_none(self.model_dir_edit)
        if model_dir is None:
            self.validation_label.setText("Choose the Omni model folder first.")
            coloured(self.validation_label, ERROR_COLOUR)
            self.validationFinished.emit(False)
            return
        encoder = _path_or_none(self.encoder_edit)
        vocoder = _path_or_none(self.vocoder_dir_edit)
        self._check_generation += 1
        generation = self._check_generation
        self.validate_button.setEnabled(False)
        self.validation_label.setText("Checking the files…")
        coloured(self.validation_label, None)
        checker = self._check_model
        run_in_background(
            lambda: checker(Path(model_dir), Path(encoder) if encoder else None, Path(vocoder) if vocoder else None),
            lambda result: self._on_checked(generation, result, model_dir),
            lambda exc: self._on_check_failed(generation, exc),
            context=self,
        )

    def _on_checked(self, generation: int, result: ModelCheck, model_dir: str) -> None:
        if generation != self._check_generation:
            return
        self.validate_button.setEnabled(True)
        self.validation_label.setText(f"✓ Found {result.summary}.")
        coloured(self.validation_label, OK_COLOUR)
        self._dims, self._dims_source = result.dims, f"the model in {model_dir}"
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

    def _start_estimates(self) -> None:
        self._estimate_generation += 1
        generation, dims, estimator = self._estimate_generation, self._dims, self._estimator
        tokens = int(self.max_tokens_spin.value())
        run_in_background(
            lambda: estimator(dims, tokens),
            lambda estimates: self._on_estimates(generation, estimates),
            lambda exc: self._on_estimate_failed(generation, exc),
            context=self,
        )

    def _on_estimates(self, generation: int, estimates: Estimates) -> None:
        if generation != self._estimate_generation:
            return
        self._estimates = estimates
        self._show_fit()
        self.estimatesUpdated.emit()

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
        if self._estimates is None or checked is None:
            self.fit_label.setText("Estimating how much memory each precision needs…")
            coloured(self.fit_label, None)
            self.fit_label.setProperty("fits", "pending")
            return
        target = self._target()
        for quant, button in self.quant_buttons.items():
            button.setText(f"{QUANT_LABELS[quant]}  —  about {gb(self._estimates[(target.device_type, quant)])}")
        needed = self._estimates[(target.device_type, str(checked.property("quant")))]
        result = fit(needed, target)
        self.fit_label.setText(result.text)
        coloured(self.fit_label, ERROR_COLOUR if result.fits is False else None)
        self.fit_label.setProperty("fits", {True: "yes", False: "no", None: "unknown"}[result.fits])
        if self._system is None:
            self.fit_label.setText(f"This needs about {gb(needed)} of {target.memory_word}; checking how much is free…")
            self.fit_label.setProperty("fits", "pending")
        self.estimate_source_label.setText(
            f"Estimates for {self._dims_source}, answers up to {self.max_tokens_spin.value()} tokens."
        )

    # ---------------------------------------------------------------------------- latency

    def _preset_chosen(self, index: int) -> None:
        preset = LATENCY_PRESETS[index]
        for box, value in ((self.first_chunk_spin, preset.first_chunk_units), (self.chunk_spin, preset.chunk_units)):
            box.blockSignals(True)
            box.setValue(value)
            box.blockSignals(False)
        self._chunks_changed()

    def _chunks_changed(self) -> None:
        first, chunk = int(self.first_chunk_spin.value()), int(self.chunk_spin.value())
        presets = [(p.first_chunk_units, p.chunk_units) for p in LATENCY_PRESETS]
        match = presets.index((first, chunk)) if (first, chunk) in presets else None
        if match is not None:
            self.latency_slider.blockSignals(True)
            self.latency_slider.setValue(match)
            self.latency_slider.blockSignals(False)
        name = LATENCY_PRESETS[match].name if match is not None else "Custom"
        self.latency_label.setText(
            f"{name}: speech starts after {first * UNIT_MS / 1000:.1f} s of generated audio, "
            f"then plays in {chunk * UNIT_MS / 1000:.1f} s pieces. Bigger pieces sound smoother on slow GPUs."
        )

    # ------------------------------------------------------------------------------ audio

    def _fill_device_combo(self, combo: QComboBox, devices: list[AudioDevice] | None, chosen: str | None) -> None:
        is_input = combo is self.input_combo
        usable = [d for d in devices or [] if (d.is_input if is_input else d.is_output)]
        names = [d.name for d in usable]
        combo.clear()
        combo.addItem("System default", None)
        for device in usable:
            # Windows lists one device under several host APIs: name the API only when it matters.
            label = device.name if names.count(device.name) == 1 else f"{device.name} ({device.host_api})"
            combo.addItem(label, device.key)
            combo.setItemData(combo.count() - 1, device.key, Qt.ItemDataRole.ToolTipRole)
        if chosen is not None and combo.findData(chosen) < 0:
            missing = "not connected" if devices is not None else "looking…"
            combo.addItem(f"{chosen} ({missing})", chosen)
        combo.setCurrentIndex(combo.findData(chosen) if chosen is not None else 0)

    def _scan_devices(self, scan: DialogDevices) -> None:
        self.rescan_button.setEnabled(False)
        self.audio_status.setText("Looking for audio devices…")
        coloured(self.audio_status, None)
        run_in_background(scan, self._on_devices, self._on_devices_failed, context=self)

    def _on_devices(self, devices: list[AudioDevice]) -> None:
        self._audio_devices = devices
        self.rescan_button.setEnabled(True)
        for combo in (self.input_combo, self.output_combo):
            self._fill_device_combo(combo, devices, combo.currentData())
        n_in = sum(d.is_input for d in devices)
        n_out = sum(d.is_output for d in devices)
        if n_in and n_out:
            self.audio_status.setText(f"Found {n_in} microphone(s) and {n_out} speaker(s).")
            coloured(self.audio_status, None)
        else:
            missing = " or ".join(w for w, n in (("microphone", n_in), ("speaker", n_out)) if not n)
            self.audio_status.setText(f"No {missing} found. Connect one, then look again.")
            coloured(self.audio_status, ERROR_COLOUR)

    def _on_devices_failed(self, exc: BaseException) -> None:
        self.rescan_button.setEnabled(True)
        self.audio_status.setText(error_text(exc))
        coloured(self.audio_status, ERROR_COLOUR)

    def show_audio_test_result_for(self, kind: str, ok: bool, text: str) -> None:
        """Slot for the engine bridge's ``deviceTested(kind, ok, message)``."""
        label = "Microphone" if kind == "input" else "Speaker"
        self.show_audio_test_result(f"{label}: {text}", ok)

    def show_audio_test_result(self, text: str, ok: bool) -> None:
        """For the caller that ran a microphone or speaker test."""
        self.audio_status.setText(text)
        coloured(self.audio_status, None if ok else ERROR_COLOUR)

    # ------------------------------------------------------------------------------ talk key

    def _set_talk_key(self, key: str) -> None:
        self._talk_key = key
        self.talk_key_edit.blockSignals(True)
        self.talk_key_edit.setKeySequence(QKeySequence(key))
        self.talk_key_edit.blockSignals(False)
        self.talk_key_note.setText(TALK_KEY_HINT)
        coloured(self.talk_key_note, None)

    def _talk_key_changed(self, sequence: QKeySequence) -> None:
        if sequence.count() == 0:
            return  # recording just started; keep the previous key until a new one arrives
        text = sequence.toString(QKeySequence.SequenceFormat.PortableText)  # one combo: maximumSequenceLength 1
        if text in RESERVED_KEYS:
            self._set_talk_key(self._talk_key)
            self.talk_key_note.setText(f"{text} is taken (Esc stops an answer, Enter sends text); choose another key.")
            coloured(self.talk_key_note, ERROR_COLOUR)
            return
        self._talk_key = text
        self.talk_key_note.setText(TALK_KEY_HINT)
        coloured(self.talk_key_note, None)

    def _talk_key_finished(self) -> None:
        if self.talk_key_edit.keySequence().isEmpty():
            self._set_talk_key(self._talk_key)
