"""A private Xvfb display for tests that need a real X11 window (key presses, screenshots)."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

SCREEN = "1280x800x24"
START_TIMEOUT_S = 20.0


def require_tools(*tools: str) -> None:
    """Skip (or, on CI, fail) when a system tool the test needs is not installed."""
    missing = [tool for tool in tools if shutil.which(tool) is None]
    if missing:
        message = f"needs system tools: {', '.join(missing)} (./omnitalk test installs them)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)


def _free_display() -> int:
    for number in range(90, 200):
        if not Path(f"/tmp/.X11-unix/X{number}").exists() and not Path(f"/tmp/.X{number}-lock").exists():
            return number
    raise RuntimeError("no free X display number")


@pytest.fixture(scope="session")
def xvfb_display() -> Iterator[str]:
    """Start Xvfb on a free display; yield ':N'. Stopped at the end of the session."""
    require_tools("Xvfb", "xdotool")
    number = _free_display()
    display = f":{number}"
    proc = subprocess.Popen(
        ["Xvfb", display, "-screen", "0", SCREEN, "-nolisten", "tcp"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + START_TIMEOUT_S
    env = dict(os.environ, DISPLAY=display)
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"Xvfb exited with {proc.returncode}")
        probe = subprocess.run(["xdotool", "getmouselocation"], env=env, capture_output=True)
        if probe.returncode == 0:
            break
        time.sleep(0.1)
    else:
        proc.kill()
        raise RuntimeError("Xvfb did not start")
    try:
        yield display
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()


def quit_with_ctrl_q(env: dict[str, str], window: str, proc: subprocess.Popen[bytes], attempts: int = 5) -> int:
    """Focus ``window`` and press Ctrl+Q until the app exits; return its exit code.

    Without a window manager, focus can still be moving away from a dialog that just closed, so a
    single key press may land nowhere.
    """
    for _attempt in range(attempts):
        if proc.poll() is not None:
            return proc.returncode
        focus = subprocess.run(["xdotool", "windowfocus", "--sync", window], env=env, capture_output=True)
        if focus.returncode != 0:
            break  # the window is gone: the app is already closing (slowly, on a busy machine)
        subprocess.run(["xdotool", "key", "ctrl+q"], env=env, check=True)
        try:
            return proc.wait(timeout=6)
        except subprocess.TimeoutExpired:
            continue
    return proc.wait(timeout=60)


def visible_window(env: dict[str, str], title: str) -> str | None:
    """The id of a visible window whose name matches the regex ``title``, or None."""
    found = subprocess.run(
        ["xdotool", "search", "--onlyvisible", "--name", title], env=env, capture_output=True, text=True
    )
    return found.stdout.split()[0] if found.returncode == 0 and found.stdout.strip() else None


def close_with_escape(env: dict[str, str], window: str, title: str, timeout_s: float = 30.0) -> None:
    """Press Escape in ``window`` and wait until no window titled ``title`` is visible."""
    subprocess.run(["xdotool", "windowfocus", "--sync", window], env=env, check=True)
    subprocess.run(["xdotool", "key", "Escape"], env=env, check=True)
    deadline = time.monotonic() + timeout_s
    while visible_window(env, title) is not None:
        assert time.monotonic() < deadline, f"{title} did not close on Escape"
        time.sleep(0.1)
