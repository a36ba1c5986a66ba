"""The system libraries the app needs are checked before it starts, and installed or named (issue 14, item 1)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from installer import system_packages
from installer.system_packages import (
    APP_REQUIREMENTS,
    APT_TEST_PACKAGES,
    SYSTEM_REQUIREMENTS,
    ensure_system_requirements,
    library_loadable,
    missing_requirements,
    requirement_for,
)

HIDDEN = {"libxcb-icccm.so.4", "libxcb-keysyms.so.1", "libportaudio.so.2"}


def hide(*sonames: str):
    return lambda soname: soname not in sonames


def test_one_list_with_both_families_and_the_libraries_the_issue_names() -> None:
    for requirement in SYSTEM_REQUIREMENTS:
        assert requirement.debian and requirement.fedora and requirement.needed_by
        assert requirement.kind in ("library", "command")
    app = {r.provides for r in APP_REQUIREMENTS}
    assert {
        "libxcb-icccm.so.4",
        "libxcb-keysyms.so.1",
        "libxcb-cursor.so.0",
        "libxkbcommon-x11.so.0",
        "libportaudio.so.2",
        "libsndfile.so.1",
    } <= app
    assert not any(r.tests_only for r in APP_REQUIREMENTS)
    assert requirement_for("libxcb-icccm.so.4").fedora == "xcb-util-wm"  # type: ignore[union-attr]


def test_the_list_covers_every_system_library_of_qts_xcb_plugin() -> None:
    """Every DT_NEEDED of PySide6's xcb plugin and Qt libraries outside glibc/libstdc++ is in the list."""
    objdump = shutil.which("objdump")
    if objdump is None:
        pytest.skip("needs objdump (binutils)")
    import PySide6

    qt = Path(PySide6.__file__).parent / "Qt"
    files = [qt / "plugins/platforms/libqxcb.so", *(qt / "lib" / f"libQt6{m}.so.6" for m in ("XcbQpa", "Gui", "DBus"))]
    needed: set[str] = set()
    for path in files:
        dump = subprocess.run([objdump, "-p", str(path)], capture_output=True, text=True, check=True).stdout
        needed |= {line.split()[1] for line in dump.splitlines() if line.strip().startswith("NEEDED")}
    core = {"libc.so.6", "libm.so.6", "libstdc++.so.6", "libgcc_s.so.1", "libz.so.1", "libgthread-2.0.so.0"}
    system = {name for name in needed if not name.startswith("libQt6") and name not in core}
    assert system <= {r.provides for r in APP_REQUIREMENTS}


def test_apt_test_packages_for_ci_holds_the_app_and_test_packages_once() -> None:
    assert len(APT_TEST_PACKAGES) == len(set(APT_TEST_PACKAGES))
    assert {"libxcb-icccm4", "libportaudio2", "libsndfile1", "xvfb", "xdotool", "espeak-ng", "pulseaudio"} <= set(
        APT_TEST_PACKAGES
    )


def test_presence_is_what_the_loader_finds() -> None:
    assert library_loadable("libc.so.6")
    assert not library_loadable("libomnitalk-does-not-exist.so.7")


def test_missing_requirements(tmp_path: Path) -> None:
    which = {"Xvfb": "/usr/bin/Xvfb"}.get
    missing = missing_requirements(SYSTEM_REQUIREMENTS, (), hide(*HIDDEN), which)
    names = [r.provides for r in missing]
    assert [n for n in names if n.startswith("lib")] == [
        "libxcb-icccm.so.4",
        "libxcb-keysyms.so.1",
        "libportaudio.so.2",
    ]
    assert "Xvfb" not in names and "xdotool" in names
    # A wheel that bundles libsndfile makes the system's unnecessary.
    assert [r.provides for r in missing_requirements(APP_REQUIREMENTS, (), hide("libsndfile.so.1"))] == [
        "libsndfile.so.1"
    ]
    (tmp_path / "_soundfile_data").mkdir()
    (tmp_path / "_soundfile_data" / "libsndfile_x86_64.so").write_bytes(b"")
    assert missing_requirements(APP_REQUIREMENTS, [tmp_path], hide("libsndfile.so.1")) == []


class Recorder:
    def __init__(self, sudo_ok: bool = True) -> None:
        self.commands: list[list[str]] = []
        self.sudo_ok = sudo_ok

    def __call__(self, cmd: list[str], **kwargs: object) -> subprocess.CompletedProcess:
        self.commands.append(cmd)
        ok = self.sudo_ok or cmd[:2] != ["sudo", "-n"]
        return subprocess.CompletedProcess(cmd, 0 if ok else 1, stdout="", stderr="")


def _tools(*present: str):
    return lambda name: f"/usr/bin/{name}" if name in present else None


def test_root_on_debian_installs_the_missing_packages_and_says_so(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(system_packages.os, "geteuid", lambda: 0)
    installed: set[str] = set()
    run = Recorder()

    def loadable(soname: str) -> bool:
        return soname not in HIDDEN or bool(installed)

    def recording_run(cmd: list[str], **kwargs: object) -> subprocess.CompletedProcess:
        if "install" in cmd:
            installed.update(cmd)
        return run(cmd, **kwargs)

    ensure_system_requirements(APP_REQUIREMENTS, run=recording_run, loadable=loadable, which=_tools("apt-get"))
    assert run.commands == [
        ["apt-get", "update", "-qq"],
        ["apt-get", "install", "-y", "libxcb-icccm4", "libxcb-keysyms1", "libportaudio2"],
    ]
    said = capsys.readouterr().out
    assert "installing system packages: libxcb-icccm4 libxcb-keysyms1 libportaudio2" in said
    assert "libxcb-icccm.so.4, libxcb-keysyms.so.1 (Qt's X11 (xcb) platform plugin)" in said


def test_passwordless_sudo_on_fedora_uses_dnf(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(system_packages.os, "geteuid", lambda: 1000)
    run = Recorder(sudo_ok=True)
    calls = iter([False, True, True])  # missing, then present after the install

    ensure_system_requirements(
        [requirement_for("libxcb-icccm.so.4")],  # type: ignore[list-item]
        run=run,
        loadable=lambda soname: next(calls),
        which=_tools("dnf", "sudo"),
    )
    assert run.commands == [["sudo", "-n", "true"], ["sudo", "-n", "dnf", "install", "-y", "xcb-util-wm"]]


def test_without_root_or_sudo_the_exact_command_is_printed_and_the_launcher_stops(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(system_packages.os, "geteuid", lambda: 1000)
    run = Recorder(sudo_ok=False)
    with pytest.raises(SystemExit) as stopped:
        ensure_system_requirements(APP_REQUIREMENTS, run=run, loadable=hide(*HIDDEN), which=_tools("apt-get", "sudo"))
    message = str(stopped.value.code)
    assert "  sudo apt-get install -y libxcb-icccm4 libxcb-keysyms1 libportaudio2" in message
    assert "libportaudio.so.2 (sounddevice, for the microphone and speaker (PortAudio))" in message
    assert run.commands == [["sudo", "-n", "true"]]  # nothing was installed


def test_an_unknown_distribution_gets_both_families_commands(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(system_packages.os, "geteuid", lambda: 0)
    with pytest.raises(SystemExit) as stopped:
        ensure_system_requirements(APP_REQUIREMENTS, loadable=hide("libportaudio.so.2"), which=_tools())
    message = str(stopped.value.code)
    assert "Debian/Ubuntu: sudo apt-get install -y libportaudio2" in message
    assert "Fedora: sudo dnf install -y portaudio" in message


def test_a_failed_install_names_the_command(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(system_packages.os, "geteuid", lambda: 0)

    def offline(cmd: list[str], **kwargs: object) -> subprocess.CompletedProcess:
        return subprocess.CompletedProcess(cmd, 100 if "update" in cmd else 0)

    with pytest.raises(SystemExit, match=r"failed: apt-get update -qq"):
        ensure_system_requirements(
            APP_REQUIREMENTS, run=offline, loadable=hide("libportaudio.so.2"), which=_tools("apt-get")
        )
