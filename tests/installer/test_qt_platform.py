"""When Qt's platform plugin cannot load, the app names the missing library instead of Qt's hint."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from installer import qt_platform
from installer.qt_platform import parse_ldd_missing, platform_problem, platforms_to_try, pyside_plugin_dir

ROOT = Path(__file__).resolve().parents[2]

LDD_OUTPUT = """\
\tlinux-vdso.so.1 (0x00007ffd)
\tlibQt6XcbQpa.so.6 => /venv/PySide6/Qt/plugins/platforms/../../lib/libQt6XcbQpa.so.6 (0x00007f3)
\tlibxcb-cursor.so.0 => /lib/x86_64-linux-gnu/libxcb-cursor.so.0 (0x00007f2)
\tlibxcb-icccm.so.4 => not found
\tlibxcb-keysyms.so.1 => not found
\tlibxcb-icccm.so.4 => not found
\tlibxcb-foo.so.9 => not found
"""


def test_parse_ldd_missing() -> None:
    assert parse_ldd_missing(LDD_OUTPUT) == ["libxcb-icccm.so.4", "libxcb-keysyms.so.1", "libxcb-foo.so.9"]
    assert parse_ldd_missing("\tlibc.so.6 => /lib/libc.so.6 (0x1)\n") == []


@pytest.mark.parametrize(
    ("env", "platforms"),
    [
        ({}, ["xcb"]),
        ({"QT_QPA_PLATFORM": "offscreen"}, ["offscreen"]),
        ({"QT_QPA_PLATFORM": "wayland;xcb"}, ["wayland", "xcb"]),
        ({"QT_QPA_PLATFORM": "xcb:nograb"}, ["xcb"]),
        ({"XDG_SESSION_TYPE": "wayland", "WAYLAND_DISPLAY": "wayland-0"}, ["wayland", "xcb"]),
        ({"XDG_SESSION_TYPE": "x11", "DISPLAY": ":0"}, ["xcb"]),
    ],
)
def test_platforms_to_try(env: dict[str, str], platforms: list[str]) -> None:
    assert platforms_to_try(env) == platforms


def _fake_ldd(output: str):
    def run(cmd: list[str], **kwargs: object) -> subprocess.CompletedProcess:
        assert cmd[0] == "ldd"
        return subprocess.CompletedProcess(cmd, 0, stdout=output, stderr="")

    return run


def test_missing_libraries_are_named_with_their_packages(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "libqxcb.so").write_bytes(b"")
    monkeypatch.setattr(qt_platform, "package_manager", lambda: "apt")
    problem = platform_problem({"DISPLAY": ":0"}, tmp_path, _fake_ldd(LDD_OUTPUT), "linux")
    assert problem is not None
    assert problem.startswith("Qt's xcb platform plugin cannot load: these system libraries are missing:")
    assert "  libxcb-icccm.so.4 (package libxcb-icccm4)" in problem
    assert "  libxcb-keysyms.so.1 (package libxcb-keysyms1)" in problem
    assert "  libxcb-foo.so.9 (find its package: apt-file search libxcb-foo.so.9)" in problem
    assert problem.endswith("  sudo apt-get install -y libxcb-icccm4 libxcb-keysyms1")
    assert "libxcb-cursor" not in problem  # Qt's usual hint; it is installed


def test_fedora_gets_fedora_names(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "libqxcb.so").write_bytes(b"")
    monkeypatch.setattr(qt_platform, "package_manager", lambda: "dnf")
    problem = platform_problem({"DISPLAY": ":0"}, tmp_path, _fake_ldd(LDD_OUTPUT), "linux")
    assert problem is not None and problem.endswith("  sudo dnf install -y xcb-util-wm xcb-util-keysyms")


def test_no_problem_when_everything_loads_or_cannot_be_known(tmp_path: Path) -> None:
    (tmp_path / "libqxcb.so").write_bytes(b"")
    (tmp_path / "libqwayland.so").write_bytes(b"")
    ok = _fake_ldd("\tlibxcb.so.1 => /lib/libxcb.so.1 (0x1)\n")
    assert platform_problem({"DISPLAY": ":0"}, tmp_path, ok, "linux") is None
    assert platform_problem({"DISPLAY": ":0"}, tmp_path, _fake_ldd(LDD_OUTPUT), "win32") is None
    assert platform_problem({"QT_QPA_PLATFORM": "eglfs"}, tmp_path, ok, "linux") is None  # not shipped here
    # A Wayland session whose plugin loads does not need an X display.
    wayland = {"XDG_SESSION_TYPE": "wayland", "WAYLAND_DISPLAY": "wayland-0"}
    assert platform_problem(wayland, tmp_path, ok, "linux") is None


def test_xcb_without_a_display_says_so(tmp_path: Path) -> None:
    (tmp_path / "libqxcb.so").write_bytes(b"")
    ok = _fake_ldd("\tlibxcb.so.1 => /lib/libxcb.so.1 (0x1)\n")
    problem = platform_problem({}, tmp_path, ok, "linux")
    assert problem is not None and "DISPLAY is not set" in problem


@pytest.mark.skipif(not sys.platform.startswith("linux") or shutil.which("ldd") is None, reason="Linux with ldd")
def test_real_ldd_of_a_plugin_whose_libraries_are_gone(tmp_path: Path) -> None:
    """PySide6's real xcb plugin, copied where its Qt libraries ($ORIGIN/../../lib) are not: real ldd."""
    plugins = pyside_plugin_dir()
    assert plugins is not None
    shutil.copy(plugins / "libqxcb.so", tmp_path / "libqxcb.so")
    problem = platform_problem({"DISPLAY": ":0"}, tmp_path)
    assert problem is not None
    assert "  libQt6XcbQpa.so.6 (find its package:" in problem


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Qt's xcb plugin is Linux only")
def test_main_py_explains_instead_of_letting_qt_abort(tmp_path: Path) -> None:
    """Without a display, Qt would abort (SIGABRT) with its misleading xcb-cursor hint."""
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY", "XDG_SESSION_TYPE")}
    env.update(QT_QPA_PLATFORM="xcb", OMNITALK_HOME=str(tmp_path))
    result = subprocess.run([sys.executable, "main.py"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 1, result.stderr
    assert "OmniTalk cannot open its window. Qt's xcb platform plugin needs an X11 display" in result.stderr
    assert "xcb-cursor0" not in result.stderr
    log = next((tmp_path).rglob("omnitalk.log")).read_text()
    assert "DISPLAY is not set" in log
