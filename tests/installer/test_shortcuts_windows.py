"""``omnitalk.cmd install`` / ``uninstall`` on Windows, with PowerShell replaced by a fake that checks the
script it is given and saves the shortcut files where the real one would."""

from __future__ import annotations

import base64
import json
import re
import subprocess
from pathlib import Path, PureWindowsPath

import pytest

from installer import shortcuts_windows as sw

CHECKOUT = PureWindowsPath(r"C:\Users\Zoë O'Neil\OmniTalk")


class FakePowerShell:
    """Decodes -EncodedCommand, records the script, writes one file per ``$link.Save()`` and prints its path."""

    def __init__(self, folders: dict[str, Path], returncode: int = 0) -> None:
        self.folders = folders
        self.returncode = returncode
        self.scripts: list[str] = []

    def __call__(self, command: list[str], **kwargs: object) -> subprocess.CompletedProcess:
        assert command[:2] == ["powershell", "-NoProfile"] and "-EncodedCommand" in command
        script = base64.b64decode(command[-1]).decode("utf-16-le")
        self.scripts.append(script)
        if self.returncode:
            return subprocess.CompletedProcess(command, self.returncode, "", "Access is denied.")
        printed = []
        for folder in re.findall(r"SpecialFolders\.Item\('(\w+)'\)", script):
            path = self.folders[folder] / sw.SHORTCUT_NAME
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(b"L\x00\x00\x00")  # a .lnk starts so
            printed.append(str(path))
        return subprocess.CompletedProcess(command, 0, "\n".join(printed) + "\n", "")


@pytest.fixture()
def folders(tmp_path: Path) -> dict[str, Path]:
    return {"Programs": tmp_path / "Start Menu" / "Programs", "Desktop": tmp_path / "Desktop"}


def test_script_points_the_shortcut_at_the_gui_python_with_the_icon() -> None:
    script = sw.shortcut_script(CHECKOUT, desktop=False)
    assert "SpecialFolders.Item('Programs')" in script and "'Desktop'" not in script
    # Single quotes in the user's name are doubled inside PowerShell's single-quoted strings.
    assert r"$link.TargetPath = 'C:\Users\Zoë O''Neil\OmniTalk\.venv\Scripts\pythonw.exe'" in script
    assert r"""$link.Arguments = '"C:\Users\Zoë O''Neil\OmniTalk\main.py"'""" in script
    assert r"$link.IconLocation = 'C:\Users\Zoë O''Neil\OmniTalk\assets\icons\omnitalk.ico,0'" in script
    assert r"$link.WorkingDirectory = 'C:\Users\Zoë O''Neil\OmniTalk'" in script
    assert script.count("$link.Save()") == 1
    assert sw.shortcut_script(CHECKOUT, desktop=True).count("$link.Save()") == 2


def test_install_records_the_shortcuts_and_uninstall_removes_exactly_them(
    tmp_path: Path, folders: dict[str, Path]
) -> None:
    manifest = tmp_path / "LocalAppData" / "OmniTalk" / "shortcuts.json"
    other = folders["Programs"] / "Other.lnk"
    other.parent.mkdir(parents=True)
    other.write_bytes(b"L")
    fake = FakePowerShell(folders)
    made = sw.install(Path(str(CHECKOUT)), desktop=True, run=fake, manifest=manifest)
    assert made == [folders["Programs"] / "OmniTalk.lnk", folders["Desktop"] / "OmniTalk.lnk"]
    assert sorted(json.loads(manifest.read_text())["shortcuts"]) == sorted(map(str, made))
    # Installing again without the desktop shortcut still remembers the one made before.
    sw.install(Path(str(CHECKOUT)), desktop=False, run=fake, manifest=manifest)
    assert len(json.loads(manifest.read_text())["shortcuts"]) == 2
    removed = sw.uninstall(manifest)
    assert set(removed) == {*made, manifest}
    assert other.exists() and not any(p.exists() for p in made)
    assert sw.uninstall(manifest) == []


def test_a_powershell_failure_is_reported_with_its_message(tmp_path: Path, folders: dict[str, Path]) -> None:
    with pytest.raises(RuntimeError, match="Access is denied"):
        sw.install(Path("C:/x"), desktop=False, run=FakePowerShell(folders, returncode=1), manifest=tmp_path / "m.json")
    assert not (tmp_path / "m.json").exists()


def test_manifest_lives_in_local_app_data() -> None:
    assert sw.manifest_path({"LOCALAPPDATA": r"C:\Users\z\AppData\Local"}).name == "shortcuts.json"
    assert sw.manifest_path({"LOCALAPPDATA": "/l"}) == Path("/l/OmniTalk/shortcuts.json")
