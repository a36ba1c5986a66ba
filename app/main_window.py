"""The main window: push-to-talk button, status, transcript, a text box, menus.

This is the shell that later features (engine bridge, settings, setup wizard) plug into.
"""

from __future__ import annotations

import importlib.metadata
import logging
import platform

from PySide6.QtCore import QUrl
from PySide6.QtGui import QAction, QDesktopServices, QKeySequence
from PySide6.QtWidgets import (
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QMainWindow,
    QMessageBox,
    QPushButton,
    QTextBrowser,
    QVBoxLayout,
    QWidget,
)

from engine.paths import log_dir
from engine.version import __version__

logger = logging.getLogger(__name__)

DEFAULT_TALK_KEY = "F9"
WINDOW_SIZE_PX = (560, 680)


def _package_version(name: str) -> str:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def about_text() -> str:
    """Versions shown in Help → About (no heavy imports: read from package metadata)."""
    rows = [
        ("OmniTalk", __version__),
        ("Python", platform.python_version()),
        ("PySide6", _package_version("PySide6-Essentials")),
        ("torch", _package_version("torch")),
        ("transformers", _package_version("transformers")),
        ("onnxruntime-gpu", _package_version("onnxruntime-gpu")),
        ("System", f"{platform.system()} {platform.release()} ({platform.machine()})"),
    ]
    return "\n".join(f"{name}: {version}" for name, version in rows)


class MainWindow(QMainWindow):
    def __init__(self) -> None:
        super().__init__()
        self.setWindowTitle("OmniTalk")
        self.resize(*WINDOW_SIZE_PX)

        self.status_label = QLabel("No model loaded")
        self.status_label.setObjectName("status")
        self.talk_button = QPushButton(f"Hold to talk  ({DEFAULT_TALK_KEY})")
        self.talk_button.setObjectName("talkButton")
        self.talk_button.setMinimumHeight(96)
        self.talk_button.setEnabled(False)
        self.talk_button.setToolTip("Available once a model is loaded")
        self.transcript = QTextBrowser()
        self.transcript.setObjectName("transcript")
        self.transcript.setPlaceholderText("Your conversation appears here.")
        self.text_input = QLineEdit()
        self.text_input.setPlaceholderText("…or type a question")
        self.text_input.setEnabled(False)
        self.send_button = QPushButton("Send")
        self.send_button.setEnabled(False)

        typing_row = QHBoxLayout()
        typing_row.addWidget(self.text_input, 1)
        typing_row.addWidget(self.send_button)
        layout = QVBoxLayout()
        layout.addWidget(self.status_label)
        layout.addWidget(self.talk_button)
        layout.addWidget(self.transcript, 1)
        layout.addLayout(typing_row)
        central = QWidget()
        central.setLayout(layout)
        self.setCentralWidget(central)
        self._build_menus()

    def _build_menus(self) -> None:
        file_menu = self.menuBar().addMenu("&File")
        self.quit_action = QAction("&Quit", self)
        self.quit_action.setShortcut(QKeySequence.StandardKey.Quit)
        self.quit_action.triggered.connect(self.close)
        file_menu.addAction(self.quit_action)

        help_menu = self.menuBar().addMenu("&Help")
        self.show_logs_action = QAction("Show &logs", self)
        self.show_logs_action.triggered.connect(self.show_logs)
        help_menu.addAction(self.show_logs_action)
        self.about_action = QAction("&About OmniTalk", self)
        self.about_action.triggered.connect(self.show_about)
        help_menu.addAction(self.about_action)

    def on_started(self) -> None:
        """Called once the event loop runs (the window is visible)."""
        logger.info("Main window shown")

    def show_logs(self) -> None:
        QDesktopServices.openUrl(QUrl.fromLocalFile(str(log_dir())))

    def show_about(self) -> None:
        QMessageBox.about(self, "About OmniTalk", about_text())
