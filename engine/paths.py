"""Where OmniTalk keeps settings, models, caches and logs (platformdirs, per user).

``OMNITALK_HOME`` puts everything under one folder instead (portable installs and tests).
"""

from __future__ import annotations

import os
from pathlib import Path

import platformdirs

APP_NAME = "OmniTalk"
HOME_ENV = "OMNITALK_HOME"


def _portable_root() -> Path | None:
    root = os.environ.get(HOME_ENV)
    return Path(root).expanduser() if root else None


def _dir(kind: str) -> Path:
    root = _portable_root()
    if root is not None:
        path = root / kind
    else:
        getter = {
            "config": platformdirs.user_config_dir,
            "data": platformdirs.user_data_dir,
            "cache": platformdirs.user_cache_dir,
            "logs": platformdirs.user_log_dir,
        }[kind]
        path = Path(getter(APP_NAME, appauthor=False))
    path.mkdir(parents=True, exist_ok=True)
    return path


def config_dir() -> Path:
    """settings.json lives here."""
    return _dir("config")


def data_dir() -> Path:
    """Models, fine-tuned adapters, conversation exports."""
    return _dir("data")


def models_dir() -> Path:
    path = data_dir() / "models"
    path.mkdir(parents=True, exist_ok=True)
    return path


def cache_dir() -> Path:
    """Derived files that can be rebuilt (ONNX exports)."""
    return _dir("cache")


def log_dir() -> Path:
    return _dir("logs")


def adapters_dir() -> Path:
    """Fine-tuned adapters (``python -m engine finetune run`` writes here by default)."""
    path = data_dir() / "adapters"
    path.mkdir(parents=True, exist_ok=True)
    return path
