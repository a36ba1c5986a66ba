"""At start: if the model would run on the CPU (no NVIDIA driver, a CPU-only torch, CUDA that fails),
a dialog says what is wrong and how to fix it, and offers to continue on the CPU.

The check (``installer.device_check``) imports torch and runs nvidia-smi, so it runs as a
background task once the window is up. A situation the user has accepted ("Continue on the CPU")
is remembered by its key in ``device-check.json`` in the settings folder and not asked about again;
a different one (the driver was installed, but now torch is the CPU build) is. "Quit OmniTalk"
closes the window. ``OMNITALK_GPU_CHECK=skip`` turns the check off (a PC that is meant to run on
the CPU, the test suite). Owner: the UI thread (this object lives in it; the probe only returns data).
"""

from __future__ import annotations

import html
import json
import logging
import os
from collections.abc import Callable
from pathlib import Path

from PySide6.QtCore import QObject, Qt, Signal
from PySide6.QtWidgets import QApplication, QMainWindow, QMessageBox, QWidget

from app.tasks import run_in_background
from engine.heap import import_long_lived
from engine.paths import config_dir
from installer.device_check import DeviceProblem, DeviceState, device_problem, probe

logger = logging.getLogger(__name__)

SKIP_ENV = "OMNITALK_GPU_CHECK"
STATE_FILE_NAME = "device-check.json"
CONTINUE_TEXT = "Continue on the CPU"
QUIT_TEXT = "Quit OmniTalk"


def accepted_keys(path: Path) -> set[str]:
    try:
        return set(json.loads(path.read_text(encoding="utf-8")).get("accepted", []))
    except (OSError, ValueError, AttributeError):
        return set()


def remember_accepted(path: Path, key: str) -> None:
    keys = accepted_keys(path) | {key}
    try:
        path.write_text(json.dumps({"accepted": sorted(keys)}, indent=2), encoding="utf-8")
    except OSError:
        logger.warning("could not remember the accepted device problem in %s", path, exc_info=True)


class DeviceProblemDialog(QMessageBox):
    """What is wrong, how to fix it (selectable, so commands can be copied), continue or quit."""

    def __init__(self, problem: DeviceProblem, parent: QWidget | None = None) -> None:
        super().__init__(QMessageBox.Icon.Warning, f"OmniTalk: {problem.title}", "", parent=parent)
        self.setObjectName("deviceProblemDialog")
        self.setText(f"<b>{html.escape(problem.title)}</b>")  # a headline: not every desktop shows the title
        self.setInformativeText(
            f"{problem.message}\n\nHow to fix it: {problem.fix}\n\nYou can also continue on the CPU (slow)."
        )
        self.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.continue_button = self.addButton(CONTINUE_TEXT, QMessageBox.ButtonRole.AcceptRole)
        self.quit_button = self.addButton(QUIT_TEXT, QMessageBox.ButtonRole.RejectRole)
        self.setDefaultButton(self.continue_button)
        self.setEscapeButton(self.continue_button)  # closing the box is not a request to quit


class DeviceCheck(QObject):
    """Probe in the background, then ask about a new problem. ``checked`` carries the problem (or None)."""

    checked = Signal(object)  # DeviceProblem | None, after the probe (before the user answers)
    answered = Signal(bool)  # True: continue on the CPU; False: quit

    def __init__(
        self,
        window: QMainWindow,
        *,
        probe_fn: Callable[[], DeviceState] = probe,
        state_path: Path | None = None,
    ) -> None:
        super().__init__(window)
        self._window = window
        self._probe = probe_fn
        self._state_path = state_path
        self.dialog: DeviceProblemDialog | None = None

    def _probe_job(self) -> DeviceState:
        # This thread may be the first to import torch while the UI runs (and the model loads).
        import_long_lived(optional=("torch",))
        return self._probe()

    @property
    def state_path(self) -> Path:
        return self._state_path or config_dir() / STATE_FILE_NAME

    def start(self) -> None:
        run_in_background(self._probe_job, self._on_probed, self._on_probe_failed, context=self)

    def _on_probe_failed(self, exc: BaseException) -> None:
        logger.warning("the GPU check at start failed: %r", exc)
        self.checked.emit(None)

    def _on_probed(self, state: DeviceState) -> None:
        problem = device_problem(state)
        logger.info("GPU check at start: %s", problem or "CUDA works")
        if problem is not None and problem.key in accepted_keys(self.state_path):
            problem = None
        self.checked.emit(problem)
        if problem is None:
            return
        # Above the setup wizard when it is open (both are window-modal).
        parent = QApplication.activeModalWidget() or self._window
        self.dialog = DeviceProblemDialog(problem, parent)
        self.dialog.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
        self.dialog.finished.connect(lambda _result, key=problem.key: self._on_answer(key))
        self.dialog.open()

    def _on_answer(self, key: str) -> None:
        dialog = self.dialog
        self.dialog = None
        go_on = dialog is not None and dialog.clickedButton() is dialog.continue_button
        if go_on:
            remember_accepted(self.state_path, key)
        self.answered.emit(go_on)
        if not go_on:
            self._window.close()


def start_device_check(window: QMainWindow) -> DeviceCheck | None:
    """Start the check for ``window`` (it owns the checker), unless ``OMNITALK_GPU_CHECK=skip``."""
    if os.environ.get(SKIP_ENV, "").strip().lower() == "skip":
        logger.info("GPU check at start skipped (%s=skip)", SKIP_ENV)
        return None
    check = DeviceCheck(window)
    check.start()
    return check
