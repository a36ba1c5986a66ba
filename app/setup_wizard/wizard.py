"""First-run setup: download the model (after the licence) or point OmniTalk at files already on disk.

Pages: choice → licence → space and GPU check → download → done, or choice → existing files → done.
``SetupWizard.model_paths()`` gives the folders, ``licence_accepted()`` what to store in the settings.
Listing, downloading, disk and GPU checks and folder validation run in the background (app.tasks);
the Downloader's progress is marshalled to the UI thread. Size and memory figures come from
``engine.preflight.model_size`` (the official release's until files are chosen or downloaded, then
those files'), and the recommended precision from ``recommend_quant``: the rule the settings'
"Automatic" and the engine use too.

The download order: the hub listing → the index file (it tells whether the shards hold the Whisper
encoder) → the other Omni files into ``model_dir`` → Whisper large-v3 into the same folder only if
the shards lack it → the vocoder files into ``vocoder_dir``. Every address is a ``DownloadSource``
field, so tests point the wizard at a server on 127.0.0.1.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Callable
from pathlib import Path

from PySide6.QtCore import Signal
from PySide6.QtWidgets import QWidget, QWizard

from app.settings import AppSettings
from app.setup_wizard.check_page import CheckPage
from app.setup_wizard.choice_page import ChoicePage
from app.setup_wizard.done_page import DonePage
from app.setup_wizard.download_page import DownloadPage
from app.setup_wizard.existing_page import ExistingPage
from app.setup_wizard.licence_page import LicencePage
from app.setup_wizard.page_ids import (
    PAGE_CHECK,
    PAGE_CHOICE,
    PAGE_DONE,
    PAGE_DOWNLOAD,
    PAGE_EXISTING,
    PAGE_LICENCE,
)
from app.tasks import run_in_background
from app.words import QUANT_LABELS
from engine.config import QuantMode
from engine.model_download import DownloadSource
from engine.paths import models_dir
from engine.preflight import (
    ModelChecker,
    ModelSize,
    Sizer,
    SystemInfo,
    SystemProbe,
    check_model_folders,
    gb,
    model_size,
    probe_system,
    recommend_quant,
    size_text,
)
from engine.store import Downloader, ModelPaths, default_model_paths

logger = logging.getLogger(__name__)


def _free_bytes(path: Path) -> int:
    """Free space on the drive that holds ``path`` (or would, once created)."""
    existing = path
    while not existing.exists() and existing.parent != existing:
        existing = existing.parent
    return shutil.disk_usage(existing).free


class SetupWizard(QWizard):
    """Shown when no model is installed; ``exec()``, then read ``model_paths()`` and friends."""

    systemChecked = Signal()  # GPUs and memory estimates are known (again: new files, new figures)
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
        sizer: Sizer = model_size,
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
        self.sizer = sizer
        self.system: SystemInfo | None = None
        self._max_new_tokens = AppSettings().max_new_tokens
        # The official release's figures (arithmetic, no disk) until files are chosen or downloaded.
        self.figures: ModelSize = sizer(None, max_new_tokens=self._max_new_tokens)
        self._size_generation = 0

        self.choice_page = ChoicePage(self.figures)
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
        self.validationFinished.connect(self._files_ready)
        self.downloadFinished.connect(self._files_ready)
        run_in_background(probe, self._on_system, self._on_system_failed, context=self)

    # ------------------------------------------------------------------------------ results

    def download_paths(self) -> ModelPaths:
        return default_model_paths(self.models_root)

    def downloading(self) -> bool:
        return self.choice_page.download_radio.isChecked()

    def model_paths(self) -> ModelPaths:
        return self.download_paths() if self.downloading() else self.existing_page.model_paths()

    def licence_accepted(self) -> bool:
        return bool(self.field("licenceAccepted"))

    def recommended_quant(self) -> QuantMode | None:
        if self.system is None:
            return None
        return recommend_quant(self.figures.memory, self.system.target("auto"))

    def _files_ready(self, ok: bool) -> None:
        if ok:
            self.measure_model()

    def measure_model(self) -> None:
        """Figures for the chosen or downloaded files (their real sizes and dims), in the background."""
        self._size_generation += 1
        generation, sizer, paths, tokens = self._size_generation, self.sizer, self.model_paths(), self._max_new_tokens

        def measured(figures: ModelSize) -> None:
            if generation == self._size_generation:
                self.figures = figures
                self.systemChecked.emit()

        run_in_background(
            lambda: sizer(paths.model_dir, paths.speech_encoder, paths.vocoder_dir, max_new_tokens=tokens),
            measured,
            lambda exc: logger.warning("Could not measure %s: %s", paths.model_dir, exc),
            context=self,
        )

    # --------------------------------------------------------------------------- GPU summary

    def _on_system(self, system: SystemInfo) -> None:
        self.system = system
        self.systemChecked.emit()

    def _on_system_failed(self, exc: BaseException) -> None:
        logger.warning("Could not look at the GPU: %s", exc)
        self.system = SystemInfo(gpus=(), ram_free_bytes=None)
        self.systemChecked.emit()

    def gpu_summary(self) -> str:
        if self.system is None:
            return "Looking at your graphics card…"
        target = self.system.target("auto")
        quant = recommend_quant(self.figures.memory, target)
        needed = self.figures.memory[(target.device_type, quant)]
        if target.device_type == "cpu":
            head = "No NVIDIA graphics card found: OmniTalk will run on the processor, which is very slow."
        else:
            head = f"{target.name} with {gb(target.free_bytes)} free of {gb(target.total_bytes)}."
        advice = f"Recommended precision: {QUANT_LABELS[quant]}, needs about {size_text(needed)}."
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
