"""First-run setup: download the model (after the licence) or point OmniTalk at files already on disk.

Pages: choice → licence → space and GPU check → download → done, or choice → existing files → done.
``SetupWizard.model_paths()`` gives the folders, ``licence_accepted()`` and ``recommended_quant()``
what to store in the settings. Listing, downloading, disk and GPU checks and folder validation run
in the background (app.tasks); the Downloader's progress is marshalled to the UI thread.

The download order: the hub listing → the index file (it tells whether the shards hold the Whisper
encoder) → the other Omni files into ``model_dir`` → Whisper large-v3 into the same folder only if
the shards lack it → the vocoder files into ``vocoder_dir``. Every address is a ``DownloadSource``
field, so tests point the wizard at a server on 127.0.0.1.
"""

from __future__ import annotations

import logging
import shutil
import threading
from collections.abc import Callable
from pathlib import Path

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QButtonGroup,
    QCheckBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QProgressBar,
    QPushButton,
    QRadioButton,
    QTextBrowser,
    QVBoxLayout,
    QWidget,
    QWizard,
    QWizardPage,
)

from app.gpu_info import (
    QUANT_LABELS,
    Estimates,
    Estimator,
    ModelCheck,
    ModelChecker,
    SystemInfo,
    SystemProbe,
    check_model_folders,
    estimate_all,
    gb,
    probe_system,
    recommend_quant,
    size_text,
)
from app.settings import AppSettings
from app.settings_dialog import ERROR_COLOUR, OK_COLOUR, coloured, error_text, path_row
from app.tasks import on_main, run_in_background
from engine.config import OFFICIAL_DIMS
from engine.errors import Cancelled, EngineError
from engine.model_download import (
    DownloadPlan,
    DownloadSource,
    plan_download,
    run_download,
)
from engine.paths import models_dir
from engine.store import (
    DISK_MARGIN_BYTES,
    Downloader,
    DownloadProgress,
    ModelPaths,
    default_model_paths,
)

logger = logging.getLogger(__name__)

SECONDS_PER_MINUTE = 60
SECONDS_PER_HOUR = 3600
MB = 1_000_000
PROGRESS_STEPS = 1000  # QProgressBar resolution

PAGE_CHOICE, PAGE_LICENCE, PAGE_CHECK, PAGE_DOWNLOAD, PAGE_EXISTING, PAGE_DONE = range(6)

LICENCE_HTML = """
<p><b>The LLaMA-Omni weights are for academic, non-commercial use only.</b></p>
<p>ICTNLP's <a href="https://huggingface.co/ICTNLP/Llama-3.1-8B-Omni">Llama-3.1-8B-Omni</a> may be used,
changed and shared for research and study. You may <b>not</b> use it, or anything made from it,
commercially. Credit the authors (cite the LLaMA-Omni paper) and share changed versions under the same
terms, in the spirit of CC&nbsp;BY-NC-SA&nbsp;4.0.</p>
<p>The model is built on Meta's Llama&nbsp;3.1, so the
<a href="https://www.llama.com/llama3_1/license/">Llama 3.1 Community License</a> and its Acceptable Use
Policy apply as well.</p>
<p>The speech encoder (OpenAI Whisper large-v3) is MIT-licensed. The unit vocoder is published by Meta's
fairseq project under its own terms.</p>
<p>OmniTalk itself is open source (Apache-2.0); these terms are about the model files it downloads.</p>
"""


def _free_bytes(path: Path) -> int:
    """Free space on the drive that holds ``path`` (or would, once created)."""
    existing = path
    while not existing.exists() and existing.parent != existing:
        existing = existing.parent
    return shutil.disk_usage(existing).free


def time_left(seconds: float) -> str:
    if seconds < SECONDS_PER_MINUTE:
        return "less than a minute left"
    if seconds < SECONDS_PER_HOUR:
        return f"about {round(seconds / SECONDS_PER_MINUTE)} min left"
    hours, rest = divmod(int(seconds), SECONDS_PER_HOUR)
    return f"about {hours} h {rest // SECONDS_PER_MINUTE} min left"


def progress_text(p: DownloadProgress) -> tuple[str, str]:
    """("model-00001-of-00004.safetensors (2 of 9)", "45% · 35.2 MB/s · about 6 min left")."""
    name = f"{Path(p.file).name} ({p.file_index + 1} of {p.n_files})"
    stats = []
    if p.file_total:
        stats.append(f"{100 * p.file_done / p.file_total:.0f}% of {size_text(p.file_total)}")
    else:
        stats.append(size_text(p.file_done))
    if p.speed_bps > 0:
        stats.append(f"{p.speed_bps / MB:.1f} MB/s")
    if p.eta_s is not None:
        stats.append(time_left(p.eta_s))
    return name, " · ".join(stats)


# ------------------------------------------------------------------------------------------ pages


class ChoicePage(QWizardPage):
    def __init__(self) -> None:
        super().__init__()
        self.setTitle("Welcome to OmniTalk")
        self.setSubTitle("OmniTalk needs the LLaMA-Omni model (about 18 GB) and a small voice model.")
        self.download_radio = QRadioButton("Download the model (about 18.5 GB; it can take a while)")
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


class CheckPage(QWizardPage):
    def __init__(self, wizard: SetupWizard) -> None:
        super().__init__()
        self._wizard = wizard
        self.setTitle("Space and graphics card")
        self.setSubTitle("Checking what the download needs and what this PC has.")
        self.plan: DownloadPlan | None = None
        self._fits_disk = False
        self._generation = 0
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
        generation = self._generation
        self.plan, self._fits_disk = None, False
        self.retry_button.hide()
        self.disk_label.setText("Asking the model hub for the file list…")
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
        self.disk_label.setText(error_text(exc))
        coloured(self.disk_label, ERROR_COLOUR)
        self.retry_button.show()
        self._wizard.checkFinished.emit(False)

    def _show_gpu(self) -> None:
        self.gpu_label.setText(self._wizard.gpu_summary())


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
            if not isinstance(exc, EngineError | OSError):
                logger.error("Model download failed unexpectedly", exc_info=exc)
            self.file_label.setText("The download stopped.")
            self.message_label.setText(error_text(exc))
            coloured(self.message_label, ERROR_COLOUR)
            self.retry_button.setText("Retry")
        self._wizard.downloadFinished.emit(False)


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
        paths = self._wizard.model_paths()
        lines = [f"Model: {paths.model_dir}", f"Voice (vocoder): {paths.vocoder_dir}"]
        if paths.speech_encoder is not None:
            lines.append(f"Speech encoder: {paths.speech_encoder}")
        lines += ["", self._wizard.gpu_summary(), "", "You can change all of this later in Settings."]
        self.summary.setText("\n".join(lines))


# ----------------------------------------------------------------------------------------- wizard


class SetupWizard(QWizard):
    """Shown when no model is installed; ``exec()``, then read ``model_paths()`` and friends."""

    systemChecked = Signal()  # GPUs and memory estimates are known
    checkFinished = Signal(bool)  # the space check ended (True: the download can start)
    downloadProgressed = Signal(object)  # DownloadProgress, whole set
    downloadFinished = Signal(bool)  # True: done; False: failed or paused
    validationFinished = Signal(bool)  # "I have the files" check ended

    def __init__(
        self,
        parent: QWidget | None = None,
        *,
        source: DownloadSource | None = None,
        models_root: Path | None = None,
        downloader_factory: Callable[[], Downloader] = Downloader,
        probe: SystemProbe = probe_system,
        estimator: Estimator = estimate_all,
        check_model: ModelChecker = check_model_folders,
        disk_free: Callable[[Path], int] = _free_bytes,
    ) -> None:
        super().__init__(parent)
        self.setWindowTitle("Set up OmniTalk")
        self.setWizardStyle(QWizard.WizardStyle.ModernStyle)
        self.setMinimumSize(640, 480)
        self.source = source or DownloadSource()
        self.models_root = models_root or models_dir()
        self.new_downloader = downloader_factory
        self.check_model = check_model
        self.disk_free = disk_free
        self.system: SystemInfo | None = None
        self.estimates: Estimates | None = None

        self.choice_page = ChoicePage()
        self.licence_page = LicencePage()
        self.check_page = CheckPage(self)
        self.download_page = DownloadPage(self)
        self.existing_page = ExistingPage(self)
        self.done_page = DonePage(self)
        for page_id, page in (
            (PAGE_CHOICE, self.choice_page),
            (PAGE_LICENCE, self.licence_page),
            (PAGE_CHECK, self.check_page),
            (PAGE_DOWNLOAD, self.download_page),
            (PAGE_EXISTING, self.existing_page),
            (PAGE_DONE, self.done_page),
        ):
            self.setPage(page_id, page)
        self.setStartId(PAGE_CHOICE)

        max_tokens = AppSettings().max_new_tokens

        def look() -> tuple[SystemInfo, Estimates]:
            return probe(), estimator(OFFICIAL_DIMS, max_tokens)

        run_in_background(look, self._on_system, self._on_system_failed, context=self)

    # ------------------------------------------------------------------------------ results

    def download_paths(self) -> ModelPaths:
        return default_model_paths(self.models_root)

    def downloading(self) -> bool:
        return self.choice_page.download_radio.isChecked()

    def model_paths(self) -> ModelPaths:
        return self.download_paths() if self.downloading() else self.existing_page.model_paths()

    def licence_accepted(self) -> bool:
        return bool(self.field("licenceAccepted"))

    def recommended_quant(self) -> str | None:
        if self.system is None or self.estimates is None:
            return None
        return recommend_quant(self.estimates, self.system.target("auto"))

    # --------------------------------------------------------------------------- GPU summary

    def _on_system(self, result: tuple[SystemInfo, Estimates]) -> None:
        self.system, self.estimates = result
        self.systemChecked.emit()

    def _on_system_failed(self, exc: BaseException) -> None:
        logger.warning("Could not look at the GPU: %s", exc)
        self.system = SystemInfo(gpus=(), ram_free_bytes=None)
        self.systemChecked.emit()

    def gpu_summary(self) -> str:
        if self.system is None:
            return "Looking at your graphics card…"
        target = self.system.target("auto")
        if self.estimates is None:
            return f"{target.name}: {gb(target.free_bytes)} free. (The memory estimate is not available.)"
        quant = recommend_quant(self.estimates, target)
        needed = self.estimates[(target.device_type, quant)]
        if target.device_type == "cpu":
            head = "No NVIDIA graphics card found: OmniTalk will run on the processor, which is very slow."
        else:
            head = f"{target.name} with {gb(target.free_bytes)} free of {gb(target.total_bytes)}."
        advice = f"Recommended precision: {QUANT_LABELS[quant]}, needs about {gb(needed)}."
        if target.free_bytes is not None and needed > target.free_bytes:
            advice += (
                f" That is more than the {gb(target.free_bytes)} free: close other programs that use "
                f"the {target.memory_word}, or expect it not to load."
            )
        return f"{head}\n{advice}"

    # ------------------------------------------------------------------------------ closing

    def reject(self) -> None:
        self.download_page.cancel()  # the .part files stay for next time
        super().reject()
