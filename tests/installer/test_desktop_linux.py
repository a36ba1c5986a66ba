"""``./omnitalk install`` / ``uninstall`` on Linux, in a temporary HOME: a valid menu entry with the icon,
idempotent re-install, and an uninstall that leaves HOME exactly as it was."""

from __future__ import annotations

import configparser
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import assets
from installer import bootstrap, desktop_linux
from installer.desktop_linux import Locations
from tests.xvfb import require_tools

ROOT = Path(__file__).resolve().parents[2]


def _tree(home: Path) -> dict[str, bytes | None]:
    """Every file (with its bytes) and folder under ``home``."""
    return {
        str(p.relative_to(home)): (p.read_bytes() if p.is_file() else None) for p in sorted(home.rglob("*"))
    }


def _entry(path: Path) -> configparser.SectionProxy:
    parser = configparser.ConfigParser(interpolation=None, delimiters=("=",))
    parser.optionxform = str  # type: ignore[assignment,method-assign]  # keys are case-sensitive
    parser.read_string(path.read_text(encoding="utf-8"))
    return parser["Desktop Entry"]


@pytest.fixture()
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "home"
    (home / ".config").mkdir(parents=True)  # a HOME that already has something in it
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("XDG_DATA_HOME", raising=False)
    monkeypatch.delenv("XDG_STATE_HOME", raising=False)
    return home


def test_install_writes_a_valid_entry_that_starts_this_checkout(home: Path) -> None:
    require_tools("desktop-file-validate")
    written = desktop_linux.install(ROOT)
    desktop = home / ".local/share/applications/omnitalk.desktop"
    assert desktop in written
    result = subprocess.run(["desktop-file-validate", str(desktop)], capture_output=True, text=True)
    problems = [line for line in result.stdout.splitlines() if "error" in line or "warning" in line]
    assert result.returncode == 0 and problems == [], result.stdout + result.stderr
    entry = _entry(desktop)
    assert entry["Name"] == "OmniTalk"
    assert entry["Categories"] == "AudioVideo;Utility;"
    assert entry["StartupWMClass"] == "OmniTalk"
    assert entry["Exec"] == str(ROOT / "omnitalk") or entry["Exec"] == f'"{ROOT / "omnitalk"}"'
    assert entry["TryExec"] == str(ROOT / "omnitalk") and os.access(entry["TryExec"], os.X_OK)
    assert entry["Terminal"] == "false"
    # Icon=omnitalk is found in the user's hicolor theme at every size, byte for byte our files.
    assert entry["Icon"] == assets.ICON_NAME
    hicolor = home / ".local/share/icons/hicolor"
    for size in assets.ICON_SIZES_PX:
        assert (hicolor / f"{size}x{size}/apps/omnitalk.png").read_bytes() == assets.icon_png(size).read_bytes()
    assert (hicolor / "scalable/apps/omnitalk.svg").read_bytes() == assets.icon_path(assets.ICON_SVG).read_bytes()


def test_reinstall_is_idempotent_and_uninstall_restores_home_exactly(home: Path) -> None:
    before = _tree(home)
    desktop_linux.install(ROOT)
    first = _tree(home)
    desktop_linux.install(ROOT)
    assert _tree(home) == first
    removed = desktop_linux.uninstall()
    assert home / ".local/share/applications/omnitalk.desktop" in removed.files
    assert home / ".local/share/icons/hicolor/16x16/apps" in removed.folders
    assert _tree(home) == before
    assert desktop_linux.uninstall() == desktop_linux.Removed()  # a second uninstall has nothing to do


def test_uninstall_keeps_what_was_there_before_and_what_others_added(home: Path) -> None:
    applications = home / ".local/share/applications"
    applications.mkdir(parents=True)
    (applications / "other.desktop").write_text("[Desktop Entry]\n")
    logs = home / ".local/state/OmniTalk/log"
    desktop_linux.install(ROOT)
    logs.mkdir(parents=True)  # the app's log folder appears after install
    (logs / "omnitalk.log").write_text("log")
    desktop_linux.uninstall()
    assert (applications / "other.desktop").exists()
    assert (logs / "omnitalk.log").exists()  # the state folder install created is kept: it is not empty
    assert not (home / ".local/share/applications/omnitalk.desktop").exists()
    assert not (home / ".local/share/icons").exists()  # created by install, empty again


def test_paths_with_spaces_and_quotes_are_quoted_as_the_spec_says(tmp_path: Path) -> None:
    require_tools("desktop-file-validate")
    checkout = tmp_path / 'my "apps" $HOME 100%'
    entry_text = desktop_linux.desktop_entry(checkout)
    exec_line = next(line for line in entry_text.splitlines() if line.startswith("Exec="))
    launcher = str(checkout / "omnitalk")
    quoted = launcher.replace('"', '\\"').replace("$", "\\$").replace("%", "%%")
    # The string-level escape doubles each backslash of the Exec-level quoting.
    assert exec_line == "Exec=" + ('"' + quoted + '"').replace("\\", "\\\\")
    path = tmp_path / "omnitalk.desktop"
    path.write_text(entry_text)
    result = subprocess.run(["desktop-file-validate", str(path)], capture_output=True, text=True)
    assert result.returncode == 0 and "error" not in result.stdout, result.stdout


def test_xdg_variables_choose_where_the_entry_goes(tmp_path: Path) -> None:
    env = {"HOME": str(tmp_path / "h"), "XDG_DATA_HOME": str(tmp_path / "data"), "XDG_STATE_HOME": str(tmp_path / "s")}
    locations = Locations.from_env(env)
    assert locations.desktop_file == tmp_path / "data/applications/omnitalk.desktop"
    assert locations.manifest == tmp_path / "s/OmniTalk/menu-entry.json"


def test_launcher_install_and_uninstall_commands(home: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    """``./omnitalk install`` sets up the environment and the system check first, then adds the entry."""
    calls = []
    monkeypatch.setattr(bootstrap, "ensure_environment", lambda extras: calls.append(("env", list(extras))))
    monkeypatch.setattr(bootstrap, "ensure_system", lambda requirements: calls.append(("system", len(requirements))))
    monkeypatch.setattr(bootstrap.platform, "system", lambda: "Linux")
    assert bootstrap.main(["install"]) == 0
    assert calls == [("env", []), ("system", len(bootstrap.APP_REQUIREMENTS))]
    out = capsys.readouterr().out
    assert "application menu" in out and str(home / ".local/share/applications/omnitalk.desktop") in out
    assert bootstrap.main(["uninstall"]) == 0
    out = capsys.readouterr().out
    assert "removed:" in out and "omnitalk.desktop" in out and "empty folder(s) that install had created" in out
    assert "Kept:" in out
    assert not (home / ".local/share/applications/omnitalk.desktop").exists()
    calls.clear()
    assert bootstrap.main(["install", "--no-shortcuts"]) == 0
    assert calls and not (home / ".local/share/applications").exists()


@pytest.mark.skipif(sys.platform != "linux", reason="the shell launcher is for Linux")
def test_the_shell_launcher_passes_uninstall_through(home: Path) -> None:
    """``./omnitalk uninstall`` reaches the launcher (no environment needed to remove an entry)."""
    desktop_linux.install(ROOT)
    env = dict(os.environ, HOME=str(home), OMNITALK_PYTHON=shutil.which("python3") or sys.executable)
    result = subprocess.run([str(ROOT / "omnitalk"), "uninstall"], capture_output=True, text=True, env=env, timeout=60)
    assert result.returncode == 0, result.stderr
    assert not (home / ".local/share/applications/omnitalk.desktop").exists()
