"""The frozen build (PyInstaller one-folder, ``installer/build.py``) with this environment's CPU torch:
``--version``, the asset resolver in the frozen layout, an engine child started through the frozen
executable, and ``--self-check`` (window offscreen, one turn, the vocoder export child).

Marked slow: the build alone takes minutes (measured below).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

import assets
from engine.version import __version__
from installer import build

ROOT = Path(__file__).resolve().parents[2]
BUILD_TIMEOUT_S = 3600
RUN_TIMEOUT_S = 900

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def frozen(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    pytest.importorskip("PyInstaller", reason="the dev tools (./omnitalk test) install PyInstaller")
    out = tmp_path_factory.mktemp("frozen")
    result = subprocess.run(
        [sys.executable, str(ROOT / "installer" / "build.py"), "--out", str(out)],
        capture_output=True, text=True, timeout=BUILD_TIMEOUT_S,
    )
    exe = build.frozen_executable(out)
    assert result.returncode == 0 and exe.exists(), result.stdout[-4000:] + result.stderr[-4000:]
    yield exe


def _run(exe: Path, *args: str, home: Path) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, OMNITALK_HOME=str(home))
    env.pop("PYTHONPATH", None)  # nothing from the checkout may leak into the frozen app
    env.pop("DISPLAY", None)
    return subprocess.run([str(exe), *args], capture_output=True, text=True, timeout=RUN_TIMEOUT_S, env=env, cwd=home)


def test_frozen_version_and_assets(frozen: Path, tmp_path: Path) -> None:
    result = _run(frozen, "--version", home=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"OmniTalk {__version__}"
    internal = frozen.parent / "_internal"
    for name in (assets.ICON_SVG, assets.ICON_ICO, assets.icon_png_name(48)):
        shipped = internal / "assets" / assets.ICONS_DIR / name
        assert shipped.read_bytes() == assets.icon_path(name).read_bytes()
    # `python -m engine ...` as the frozen app runs it (fine-tuning: `--engine-child engine finetune ...`).
    probe = _run(frozen, "--engine-child", "engine", "--version", home=tmp_path)
    assert probe.returncode == 0 and probe.stdout.strip() == f"OmniTalk engine {__version__}", probe.stderr


def test_frozen_self_check_passes(frozen: Path, tmp_path: Path) -> None:
    result = _run(frozen, "--self-check", home=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr[-4000:]
    report = result.stdout
    assert "(frozen build:" in report
    for line in ("torch", "transformers", "onnxruntime", "PySide6.QtWidgets", "window", "one turn", "speech"):
        assert re.search(rf"^\[  ok\] {re.escape(line)} ", report, re.MULTILINE), report
    assert "icon 16-512 px" in report  # the window found the icon through the resolver, frozen
    assert "exported to ONNX in a child process" in report  # OmniTalk --engine-child worked
    assert "Result: all checks passed" in report
    assert (tmp_path / "logs" / "omnitalk.log").read_text(encoding="utf-8").count("self-check") >= 1
