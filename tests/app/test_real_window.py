"""The app started as users start it (main.py) shows a real X11 window under Xvfb and quits cleanly."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.xvfb import close_with_escape, quit_with_ctrl_q, require_tools, xvfb_display  # noqa: F401  (fixture)

pytestmark = pytest.mark.slow  # a real window under Xvfb

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts"
WINDOW_TIMEOUT_S = 60.0


def _wait_for_window(env: dict[str, str], proc: subprocess.Popen[bytes], title: str = "^OmniTalk$") -> str:
    deadline = time.monotonic() + WINDOW_TIMEOUT_S
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"app exited early with {proc.returncode}"
        found = subprocess.run(
            ["xdotool", "search", "--onlyvisible", "--name", title],
            env=env,
            capture_output=True,
            text=True,
        )
        if found.returncode == 0 and found.stdout.strip():
            return found.stdout.split()[0]
        time.sleep(0.2)
    raise AssertionError(f"no window titled {title} appeared")


def test_main_py_opens_a_real_window_and_quits(xvfb_display: str, tmp_path: Path) -> None:  # noqa: F811
    env = dict(os.environ, DISPLAY=xvfb_display, QT_QPA_PLATFORM="xcb", OMNITALK_HOME=str(tmp_path / "home"))
    proc = subprocess.Popen([sys.executable, "main.py"], cwd=ROOT, env=env)
    try:
        window = _wait_for_window(env, proc)
        geometry = subprocess.run(
            ["xdotool", "getwindowgeometry", window], env=env, capture_output=True, text=True, check=True
        ).stdout
        assert "Geometry:" in geometry
        # First run without a model: the setup wizard opens over the main window.
        wizard = _wait_for_window(env, proc, "^Set up OmniTalk$")
        if subprocess.run(["which", "import"], capture_output=True).returncode == 0:
            ARTIFACTS.mkdir(exist_ok=True)
            subprocess.run(["import", "-window", "root", str(ARTIFACTS / "first_run_xvfb.png")], env=env)
        close_with_escape(env, wizard, "^Set up OmniTalk$")
        # Xvfb has no window manager, so focus the window directly (windowactivate needs a WM).
        assert quit_with_ctrl_q(env, window, proc) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    # The log went to the user log folder, not the console or the checkout.
    assert (tmp_path / "home" / "logs" / "omnitalk.log").read_text().count("starting") == 1
