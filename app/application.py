"""Builds the Qt application and the main window; one place for start-up and clean shutdown."""

from __future__ import annotations

import argparse
import logging
import sys
import traceback
from collections.abc import Callable
from types import TracebackType

from PySide6.QtCore import QTimer
from PySide6.QtWidgets import QApplication, QMessageBox, QWidget

from app.main_window import MainWindow
from engine.paths import APP_NAME
from engine.version import __version__

logger = logging.getLogger(__name__)


def _install_excepthook(window_getter: Callable[[], QWidget | None]) -> None:
    """Unexpected exceptions in Qt slots are logged and shown; the app stays up."""

    def hook(exc_type: type[BaseException], exc: BaseException, tb: TracebackType | None) -> None:
        logger.error("Unhandled exception:\n%s", "".join(traceback.format_exception(exc_type, exc, tb)))
        window = window_getter()
        if window is not None and QApplication.instance() is not None:
            QMessageBox.critical(
                window,
                "OmniTalk: unexpected error",
                f"{exc_type.__name__}: {exc}\n\nOmniTalk keeps running. Details are in the log "
                "(Help → Show logs).",
            )

    sys.excepthook = hook


def create_app(argv: list[str] | None = None) -> QApplication:
    app = QApplication.instance() or QApplication(argv or [sys.argv[0]])
    app.setApplicationName(APP_NAME)
    app.setApplicationVersion(__version__)
    app.setOrganizationName(APP_NAME)
    return app  # type: ignore[return-value]


def run(args: argparse.Namespace) -> int:
    """Start the GUI and block in the Qt event loop until the window closes; return the exit code."""
    app = create_app()
    window = MainWindow()
    _install_excepthook(lambda: window)
    window.show()
    # Let the window paint first; anything slow starts after the event loop runs.
    QTimer.singleShot(0, window.on_started)
    code = app.exec()
    logger.info("OmniTalk exiting with code %s", code)
    return int(code)
