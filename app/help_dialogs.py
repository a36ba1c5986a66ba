"""Help menu: the About text (versions and what is in use now) and the log path when no file manager
can open folders."""

from __future__ import annotations

import importlib.metadata
import platform
from pathlib import Path

from PySide6.QtCore import Qt
from PySide6.QtGui import QGuiApplication
from PySide6.QtWidgets import QDialog, QDialogButtonBox, QLabel, QPushButton, QVBoxLayout, QWidget

from app.words import QUANT_LABELS
from engine.events import ModelInfo
from engine.version import __version__

OFFICIAL_LICENCE = (
    "LLaMA-Omni weights: academic, non-commercial use only; the Llama 3.1 Community License applies too"
)


def _package_version(name: str) -> str:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def _gpu_text() -> str:
    from engine.preflight import list_gpus

    gpus = list_gpus()
    if not gpus:
        return "no NVIDIA GPU found"
    return "; ".join(f"{g.name} ({g.total_bytes / 1e9:.1f} GB)" for g in gpus)


def licence_text(info: ModelInfo) -> str:
    if info.official and (info.licence is None or info.licence == "other"):
        return OFFICIAL_LICENCE
    if info.licence is not None:
        return f"{info.licence} (from the model card)" + (f"; {OFFICIAL_LICENCE}" if info.official else "")
    return "not stated in the model folder (no model card): see where the files came from"


def voice_text(info: ModelInfo) -> str:
    if info.vocoder_backend is None:
        return "none: answers are text-only"
    engine = "onnxruntime" if info.vocoder_backend == "onnx" else "PyTorch"
    return f"{engine} on {', '.join(info.vocoder_providers) or 'unknown'}"


def about_text(info: ModelInfo | None = None, audio_status: str = "not checked yet", summary: str | None = None) -> str:
    """Versions, then what is in use now: the model's device and precision, the providers the
    vocoder session uses (not those the onnxruntime wheel merely offers), audio, model licence."""
    rows = [
        ("OmniTalk", __version__),
        ("Python", platform.python_version()),
        ("PySide6", _package_version("PySide6-Essentials")),
        ("torch", _package_version("torch")),
        ("transformers", _package_version("transformers")),
        ("onnxruntime-gpu", _package_version("onnxruntime-gpu")),
        ("System", f"{platform.system()} {platform.release()} ({platform.machine()})"),
        ("GPU", _gpu_text()),
    ]
    if info is None:
        rows.append(("Model", "not loaded"))
    else:
        quant = QUANT_LABELS.get(info.quant, info.quant)  # type: ignore[call-overload]
        rows += [
            ("Model runs on", f"{info.torch_device}, {quant}"),
            ("Voice (vocoder)", voice_text(info)),
            ("Model licence", licence_text(info)),
        ]
    rows.append(("Audio", audio_status))
    if summary:
        rows.append(("Details", summary))
    return "\n".join(f"{name}: {value}" for name, value in rows)


class LogsDialog(QDialog):
    """Help → Show logs when no file manager can open folders: the path, selectable, and Copy path."""

    def __init__(self, log_file: Path, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("logsDialog")
        self.setWindowTitle("OmniTalk logs")
        self.path_text = str(log_file)
        intro = QLabel("No program is set up to open folders, so here is where the log is:")
        intro.setWordWrap(True)
        self.path_label = QLabel(self.path_text)
        self.path_label.setObjectName("logPath")
        self.path_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.copy_button = QPushButton("Copy path")
        self.copy_button.clicked.connect(self.copy_path)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Close)
        buttons.addButton(self.copy_button, QDialogButtonBox.ButtonRole.ActionRole)
        buttons.rejected.connect(self.reject)
        layout = QVBoxLayout(self)
        layout.addWidget(intro)
        layout.addWidget(self.path_label)
        layout.addWidget(buttons)

    def copy_path(self) -> None:
        QGuiApplication.clipboard().setText(self.path_text)
        self.copy_button.setText("Copied")
