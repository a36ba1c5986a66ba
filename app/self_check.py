"""``omnitalk --self-check`` and Help → "Copy diagnostic report": what a user sends with a bug report.

``--self-check`` (from a checkout: ``./omnitalk --self-check``; from a frozen build: ``OmniTalk
--self-check``) imports every heavy dependency, opens the main window offscreen, answers one turn
with the tiny model and prints the report (also saved as ``self-check.txt`` in the log folder);
exit code 0 when everything works, 1 with the failing checks and their fixes otherwise. It never
needs a model download, a display or a GPU; what it finds about the GPU is reported
(``installer.device_check``), as a warning where the model would run on the CPU.

The in-app report (``diagnostic_report``) is the same without the turn and the window (the app is
running): versions, GPU, folders. Nothing from the conversation is in either.

No Qt import at module level: the report must come out even when PySide6 is what is broken.
"""

from __future__ import annotations

import logging
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from engine.self_check import (
    FAIL,
    INFO,
    OK,
    WARN,
    Check,
    Dependency,
    check_import,
    dependency_checks,
    environment_lines,
    format_report,
    reinstall_fix,
)

logger = logging.getLogger(__name__)

TITLE = "OmniTalk self-check"
REPORT_TITLE = "OmniTalk diagnostic report"
REPORT_FILE_NAME = "self-check.txt"
QT_DEPENDENCIES = (
    Dependency("PySide6.QtWidgets", "PySide6-Essentials", "the window"),
    Dependency("PySide6.QtSvg", "PySide6-Essentials", "the icon"),
)
# pynput needs a display to import on Linux; without one the global hotkey is simply unavailable.
OPTIONAL_APP_DEPENDENCIES = (Dependency("pynput", "pynput", "the global hotkey", required=False),)


def gpu_check() -> Check:
    """Whether the model can run on an NVIDIA GPU here (a warning with the fix when not)."""
    from installer.device_check import device_problem, probe

    started = time.perf_counter()
    try:
        state = probe()
    except Exception as exc:  # a broken torch install must not hide the rest of the report
        logger.info("self-check: the GPU probe failed", exc_info=True)
        return Check("GPU", FAIL, f"the check failed: {exc}", reinstall_fix(), time.perf_counter() - started)
    took = time.perf_counter() - started
    problem = device_problem(state)
    if problem is not None:
        return Check("GPU", WARN, f"{problem.title}: {problem.message}", problem.fix, took)
    gpu = state.gpu.describe() if state.gpu else "CUDA"
    return Check("GPU", OK, f"torch {state.torch.torch_version} (CUDA {state.torch.cuda}) on {gpu}", seconds=took)


def display_check() -> Check:
    """Whether Qt could open a real window here (the self-check itself runs offscreen)."""
    from installer.qt_platform import platform_problem

    problem = platform_problem()
    if problem is None:
        return Check("display", INFO, "Qt's platform plugin can load here")
    return Check("display", WARN, problem.splitlines()[0], "\n".join(problem.splitlines()[1:]).strip())


def window_check() -> Check:
    """Create the application and the main window offscreen, paint it, close it."""
    started = time.perf_counter()
    try:
        from app.application import create_app
        from app.main_window import MainWindow

        app = create_app()
        window = MainWindow()
        window.show()
        app.processEvents()
        image = window.grab().toImage()
        icon_sizes = sorted(s.width() for s in window.windowIcon().availableSizes())
        window.close()
        window.deleteLater()
        app.processEvents()
        if image.isNull() or image.width() == 0:
            raise RuntimeError("the window painted nothing")
        if not icon_sizes:
            raise RuntimeError("the window has no icon")
    except Exception as exc:
        logger.info("self-check: the window check failed", exc_info=True)
        return Check("window", FAIL, f"{type(exc).__name__}: {exc}", reinstall_fix(), time.perf_counter() - started)
    size = f"{image.width()}x{image.height()} px"
    detail = f"main window painted offscreen ({size}), icon {icon_sizes[0]}-{icon_sizes[-1]} px"
    return Check("window", OK, detail, seconds=time.perf_counter() - started)


def _safe(header: Callable[[], list[str]]) -> list[str]:
    try:
        return header()
    except Exception as exc:  # platformdirs missing: the dependency checks will name it
        return [f"(environment unknown: {type(exc).__name__}: {exc})"]


def run_self_check(workdir: Path | None = None, out: Callable[[str], None] = print) -> int:
    """The full check; prints the report through ``out``; 0 when every required check passed."""
    checks = [display_check()]  # the real platform, before the window check switches to offscreen
    os.environ["QT_QPA_PLATFORM"] = "offscreen"  # set before the QApplication exists
    checks += dependency_checks()
    checks += [check_import(d) for d in (*QT_DEPENDENCIES, *OPTIONAL_APP_DEPENDENCIES)]
    qt_ok = all(c.status == OK for c in checks if c.name == "PySide6-Essentials")
    checks.append(window_check() if qt_ok else Check("window", FAIL, "not tried: PySide6 does not import"))
    checks.append(gpu_check())
    from engine.self_check import turn_checks

    with tempfile.TemporaryDirectory(prefix="omnitalk-self-check-") as tmp:
        checks += turn_checks(Path(workdir or tmp))
    report = format_report(TITLE, _safe(environment_lines), checks)
    saved = _save(report)
    out(report + (f"(saved in {saved})\n" if saved else ""))
    logger.info("self-check:\n%s", report)
    return 1 if any(c.status == FAIL for c in checks) else 0


def _save(report: str) -> Path | None:
    """Keep the report next to the logs: a windowed build (Windows) has no console to print it to."""
    try:
        from engine.paths import log_dir

        path = log_dir() / REPORT_FILE_NAME
        path.write_text(report, encoding="utf-8")
    except Exception:  # platformdirs missing or the folder not writable: the report is still printed
        logger.info("self-check: could not save the report", exc_info=True)
        return None
    return path


def diagnostic_report(model_summary: str | None = None) -> str:
    """Help → "Copy diagnostic report": the self-check's environment, libraries and GPU (no turn).

    Slow (imports torch for the GPU line): call it from a background task."""
    checks = dependency_checks()
    checks += [check_import(d) for d in QT_DEPENDENCIES]
    checks.append(gpu_check())
    checks.append(display_check())
    checks.append(Check("model", INFO, model_summary or "not loaded"))
    report = format_report(REPORT_TITLE, _safe(environment_lines), checks)
    return report + "A full check: run OmniTalk with --self-check (./omnitalk --self-check in its folder).\n"


def main() -> int:
    started = time.perf_counter()
    code = run_self_check()
    print(f"(self-check took {time.perf_counter() - started:.0f} s)", file=sys.stderr)
    return code


__all__ = ["FAIL", "OK", "WARN", "diagnostic_report", "main", "run_self_check"]
