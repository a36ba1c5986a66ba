"""The first run, end to end, as a new user does it: a fresh checkout in a temporary folder, an empty
OMNITALK_HOME, ``./omnitalk`` (the launcher creates the virtual environment and installs everything,
then starts the app) under Xvfb, and the main window with the setup wizard over it.

It takes minutes (a fresh virtual environment: torch, transformers, PySide6, ...), about 3-5 on 2
cores, which fits CI's budget, so it runs by default; it prints how long the install and the first
window took. The checkout is the working tree's files (tracked plus new, not ignored), so it tests
what would be committed, without the developer's ``.venv``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from tests.xvfb import (  # noqa: F401  (xvfb_display: fixture)
    close_with_escape,
    quit_with_ctrl_q,
    require_tools,
    visible_window,
    xvfb_display,
)

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "test-artifacts"
FIRST_WINDOW_TIMEOUT_S = 20 * 60  # a cold install on a slow, busy machine
WIZARD_TITLE = "^Set up OmniTalk$"


BUILD_OUTPUTS = (".venv", ".git", "__pycache__", "*.egg-info", ".*_cache", "test-artifacts", "build")


def _fresh_checkout(dest: Path) -> Path:
    """The files a clone would have: git's list when this is a git checkout, else the tree minus
    build outputs (a source archive)."""
    try:
        listed = subprocess.run(
            ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
            cwd=ROOT, capture_output=True, check=True,
        ).stdout.decode().split("\0")
    except (OSError, subprocess.CalledProcessError):
        return Path(shutil.copytree(ROOT, dest, ignore=shutil.ignore_patterns(*BUILD_OUTPUTS)))
    for rel in filter(None, listed):
        src = ROOT / rel
        if src.is_file():  # a tracked file deleted in the working tree is left out, as in a commit
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)
    return dest


def _clean_env(display: str, home: Path) -> dict[str, str]:
    """The environment of a user's terminal: no test venv on PATH, no sound server, a real X display."""
    venv_bin = str(Path(sys.prefix) / "bin")
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH", "PULSE_SERVER")}
    env["PATH"] = os.pathsep.join(p for p in env.get("PATH", "").split(os.pathsep) if p != venv_bin)
    env |= {"DISPLAY": display, "QT_QPA_PLATFORM": "xcb", "OMNITALK_HOME": str(home)}
    return env


def test_a_fresh_checkout_starts_with_the_setup_wizard(xvfb_display: str, tmp_path: Path) -> None:  # noqa: F811
    require_tools("xdotool", "import", "identify")
    clone = _fresh_checkout(tmp_path / "OmniTalk")
    assert not (clone / ".venv").exists()
    home = tmp_path / "home"
    env = _clean_env(xvfb_display, home)
    log = (tmp_path / "launcher.log").open("w")
    started = time.monotonic()
    proc = subprocess.Popen(["./omnitalk"], cwd=clone, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        wizard = None
        while wizard is None:
            assert proc.poll() is None, f"./omnitalk exited with {proc.returncode}:\n{_tail(tmp_path)}"
            assert time.monotonic() - started < FIRST_WINDOW_TIMEOUT_S, f"no window:\n{_tail(tmp_path)}"
            time.sleep(1.0)
            wizard = visible_window(env, WIZARD_TITLE)
        first_window_s = time.monotonic() - started
        main_window = visible_window(env, "^OmniTalk$")
        assert main_window is not None, "the setup wizard opened without the main window"
        ARTIFACTS.mkdir(exist_ok=True)
        shot = ARTIFACTS / "first_run_fresh_checkout.png"
        subprocess.run(["import", "-window", "root", str(shot)], env=env, check=True)
        colours = subprocess.run(["identify", "-format", "%k", str(shot)], env=env, capture_output=True, text=True)
        assert colours.returncode == 0 and int(colours.stdout) > 50, "the screenshot is blank"

        close_with_escape(env, wizard, WIZARD_TITLE)
        assert quit_with_ctrl_q(env, main_window, proc) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        log.close()
    total_s = time.monotonic() - started
    print(f"\nfirst run: install + first window {first_window_s:.0f} s, whole run {total_s:.0f} s", file=sys.stderr)
    launcher = (tmp_path / "launcher.log").read_text(errors="replace")
    assert "environment ready" in launcher  # the launcher installed into the fresh checkout
    assert (clone / ".venv").is_dir()
    app_log = (home / "logs" / "omnitalk.log").read_text()
    assert "Main window shown" in app_log and "Traceback" not in app_log


def _tail(tmp_path: Path, lines: int = 40) -> str:
    return "\n".join((tmp_path / "launcher.log").read_text(errors="replace").splitlines()[-lines:])
