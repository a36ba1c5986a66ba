"""``omnitalk.cmd install`` / ``uninstall`` on Windows: Start-menu (and optional desktop) shortcuts.

Shortcuts are made per user, without admin rights, by PowerShell through the ``WScript.Shell`` COM
object (present on every Windows since XP; no extra module). They start the checkout's
``.venv\\Scripts\\pythonw.exe main.py``, so double-clicking opens the window without a console
window next to it (``omnitalk.cmd`` runs the installer's steps in a console, which ``install``
has just done); the icon is ``assets\\icons\\omnitalk.ico``. The script prints each shortcut it
saved; those paths go into ``%LOCALAPPDATA%\\OmniTalk\\shortcuts.json`` and ``uninstall`` deletes
exactly them. The Inno Setup installer makes its own shortcuts (its uninstaller removes them) and
runs ``install --no-shortcuts``.

Standard library only (the launcher runs this before anything is installed).
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
from collections.abc import Callable, Mapping
from pathlib import Path, PureWindowsPath

import assets

SHORTCUT_NAME = "OmniTalk.lnk"
DESCRIPTION = "OmniTalk: push-to-talk voice assistant on your own GPU"
MANIFEST_NAME = "shortcuts.json"
POWERSHELL_TIMEOUT_S = 60
SW_SHOWNORMAL = 1  # WScript.Shell WindowStyle
# The folders WScript.Shell knows by these names ([Environment]::GetFolderPath would also do).
FOLDERS = {"start_menu": "Programs", "desktop": "Desktop"}

Runner = Callable[..., subprocess.CompletedProcess]


def ps_quote(value: str) -> str:
    """A PowerShell single-quoted string literal (only ``'`` needs escaping, by doubling it)."""
    return "'" + value.replace("'", "''") + "'"


def gui_python(checkout: PureWindowsPath) -> PureWindowsPath:
    return checkout / ".venv" / "Scripts" / "pythonw.exe"


def shortcut_script(checkout: PureWindowsPath, desktop: bool) -> str:
    """PowerShell that saves the shortcuts and prints each one's full path on its own line."""
    icon = checkout / "assets" / assets.ICONS_DIR / assets.ICON_ICO
    places = ["start_menu", *(["desktop"] if desktop else [])]
    lines = [
        "$ErrorActionPreference = 'Stop'",
        "$shell = New-Object -ComObject WScript.Shell",
    ]
    for place in places:
        lines += [
            f"$path = Join-Path $shell.SpecialFolders.Item({ps_quote(FOLDERS[place])}) {ps_quote(SHORTCUT_NAME)}",
            "$link = $shell.CreateShortcut($path)",
            f"$link.TargetPath = {ps_quote(str(gui_python(checkout)))}",
            f"$link.Arguments = {ps_quote(chr(34) + str(checkout / 'main.py') + chr(34))}",
            f"$link.WorkingDirectory = {ps_quote(str(checkout))}",
            f"$link.IconLocation = {ps_quote(str(icon) + ',0')}",
            f"$link.Description = {ps_quote(DESCRIPTION)}",
            f"$link.WindowStyle = {SW_SHOWNORMAL}",
            "$link.Save()",
            "Write-Output $path",
        ]
    return "\n".join(lines) + "\n"


def powershell_command(script: str) -> list[str]:
    """``powershell`` with the script as -EncodedCommand (UTF-16LE base64): no quoting to get wrong."""
    encoded = base64.b64encode(script.encode("utf-16-le")).decode("ascii")
    return ["powershell", "-NoProfile", "-NonInteractive", "-ExecutionPolicy", "Bypass", "-EncodedCommand", encoded]


def manifest_path(env: Mapping[str, str] | None = None) -> Path:
    """``%LOCALAPPDATA%\\OmniTalk\\shortcuts.json`` (where platformdirs puts OmniTalk's data)."""
    env = os.environ if env is None else env
    base = env.get("LOCALAPPDATA") or str(Path.home() / "AppData" / "Local")
    return Path(base) / "OmniTalk" / MANIFEST_NAME


def install(
    checkout: Path, desktop: bool, *, run: Runner = subprocess.run, manifest: Path | None = None
) -> list[Path]:
    """Create the shortcuts; return their paths. Raises RuntimeError with PowerShell's message on failure."""
    manifest = manifest or manifest_path()
    result = run(
        powershell_command(shortcut_script(PureWindowsPath(checkout), desktop)),
        capture_output=True, text=True, timeout=POWERSHELL_TIMEOUT_S,
    )
    if result.returncode != 0:
        detail = (result.stderr or result.stdout).strip() or f"exit code {result.returncode}"
        raise RuntimeError(f"PowerShell could not create the shortcuts: {detail}")
    made = [Path(line.strip()) for line in result.stdout.splitlines() if line.strip()]
    known = _read(manifest)
    manifest.parent.mkdir(parents=True, exist_ok=True)
    manifest.write_text(json.dumps({"shortcuts": sorted({*known, *map(str, made)})}, indent=2), encoding="utf-8")
    return made


def uninstall(manifest: Path | None = None) -> list[Path]:
    """Delete the shortcuts install made (and its manifest); return what was removed."""
    manifest = manifest or manifest_path()
    if not manifest.exists():
        return []
    removed = []
    for name in _read(manifest):
        path = Path(name)
        if path.is_file():
            path.unlink()
            removed.append(path)
    manifest.unlink()
    return [*removed, manifest]


def _read(manifest: Path) -> list[str]:
    try:
        return list(json.loads(manifest.read_text(encoding="utf-8")).get("shortcuts", []))
    except (OSError, ValueError):
        return []
