"""The command-line entry points answer without a display and without loading models."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from engine.version import __version__

ROOT = Path(__file__).resolve().parent.parent


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=120)


def test_main_version() -> None:
    result = _run("main.py", "--version")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"OmniTalk {__version__}"


def test_main_help_lists_the_power_user_options() -> None:
    result = _run("main.py", "--help")
    assert result.returncode == 0
    for option in ("--model", "--speech-encoder", "--vocoder", "--settings", "--version"):
        assert option in result.stdout


def test_engine_cli_help_and_version() -> None:
    result = _run("-m", "engine", "--help")
    assert result.returncode == 0, result.stderr
    assert "python -m engine" in result.stdout
    version = _run("-m", "engine", "--version")
    assert version.stdout.strip() == f"OmniTalk engine {__version__}"


def test_version_is_written_once() -> None:
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert 'dynamic = ["version"]' in pyproject
    assert "engine.version.__version__" in pyproject
