"""Starting OmniTalk again shows the running window instead of a second app."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from PySide6.QtCore import QDir, Qt
from PySide6.QtNetwork import QLocalServer
from PySide6.QtWidgets import QMainWindow

from app.single_instance import InstanceServer, ask_running_instance, bring_to_front, server_name
from tests.waiting import wait_until

ROOT = Path(__file__).resolve().parents[2]
START_TIMEOUT_S = 120


@pytest.fixture()
def name(tmp_path: Path) -> str:
    return server_name(tmp_path / "config")


def test_names_differ_per_settings_folder(tmp_path: Path) -> None:
    assert server_name(tmp_path / "a") != server_name(tmp_path / "b")
    assert server_name(tmp_path / "a") == server_name(tmp_path / "x" / ".." / "a")


def test_a_second_start_asks_the_first_to_show_its_window(qtbot, name: str) -> None:
    assert not ask_running_instance(name)  # nobody runs yet
    server = InstanceServer(name)
    assert server.listen()
    try:
        with qtbot.waitSignal(server.showRequested, timeout=5000):
            assert ask_running_instance(name)
    finally:
        server.close()
    assert not ask_running_instance(name)


@pytest.mark.skipif(sys.platform == "win32", reason="a stale Unix socket file is the Linux/macOS case")
def test_a_name_left_by_a_crash_is_reclaimed(qtbot, name: str) -> None:
    stale = Path(QDir.tempPath()) / name
    stale.write_text("left by a crashed OmniTalk")
    server = InstanceServer(name)
    try:
        assert server.listen()
        with qtbot.waitSignal(server.showRequested, timeout=5000):
            assert ask_running_instance(name)
    finally:
        server.close()


def test_bring_to_front_restores_a_minimised_window(qtbot) -> None:
    window = QMainWindow()
    qtbot.addWidget(window)
    window.showMinimized()
    bring_to_front(window)
    assert window.isVisible() and not window.windowState() & Qt.WindowState.WindowMinimized


def _start(home: Path) -> subprocess.Popen[bytes]:
    env = dict(os.environ, OMNITALK_HOME=str(home), QT_QPA_PLATFORM="offscreen")
    return subprocess.Popen([sys.executable, "main.py"], cwd=ROOT, env=env)


def _log(home: Path) -> str:
    path = home / "logs" / "omnitalk.log"
    return path.read_text(encoding="utf-8") if path.exists() else ""


def _wait_shown(proc: subprocess.Popen[bytes], home: Path) -> None:
    wait_until(lambda: "Main window shown" in _log(home) or proc.poll() is not None, START_TIMEOUT_S, "the window")
    assert proc.poll() is None, f"OmniTalk exited with {proc.returncode}:\n{_log(home)}"


def test_the_app_started_twice_keeps_one_window(tmp_path: Path) -> None:
    home = tmp_path / "home"
    first = _start(home)
    other = None
    try:
        _wait_shown(first, home)
        second = _start(home)
        assert second.wait(timeout=START_TIMEOUT_S) == 0
        wait_until(lambda: "started again: showing this window" in _log(home), 30, "the first to hear the second")
        assert first.poll() is None  # the first one keeps running
        # Another settings folder (a portable install, a parallel test) is another OmniTalk.
        other_home = tmp_path / "other"
        other = _start(other_home)
        _wait_shown(other, other_home)
    finally:
        for proc in (first, other):
            if proc is not None and proc.poll() is None:
                proc.terminate()
                proc.wait(timeout=30)
        for folder in (home, tmp_path / "other"):  # terminated apps leave their socket files behind
            QLocalServer.removeServer(server_name(folder / "config"))
