"""``./omnitalk install`` / ``uninstall`` on Linux: "OmniTalk" in the user's application menu.

Install writes, for this user only (no root):

    $XDG_DATA_HOME/applications/omnitalk.desktop                 runs this checkout's ./omnitalk
    $XDG_DATA_HOME/icons/hicolor/NxN/apps/omnitalk.png          each PNG size of the icon
    $XDG_DATA_HOME/icons/hicolor/scalable/apps/omnitalk.svg     the SVG
    $XDG_STATE_HOME/OmniTalk/menu-entry.json                    what was added (for uninstall)

(``XDG_DATA_HOME`` defaults to ``~/.local/share``, ``XDG_STATE_HOME`` to ``~/.local/state``.) The
icon goes into the hicolor theme, so menus and docks pick the size they draw (the 16-32 px ones are
drawn for their grid) and a themed icon of the same name may override it. ``StartupWMClass``
is the class Qt gives the window (the application name, ``WM_CLASS``) and ``DESKTOP_ID`` is what
the app sets as its desktop file name (the Wayland app id), so docks group the running window with
the entry. ``TryExec`` hides the entry if the checkout is moved or deleted.

The manifest lists the files install wrote and the folders it had to create; uninstall removes
exactly those (folders only when empty), then the manifest. Installing again rewrites the same
files and keeps the folders recorded the first time, so re-install is idempotent. Another
checkout's install replaces the entry (one "OmniTalk" in the menu).

Standard library only (the launcher runs this before anything is installed).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import assets

DESKTOP_ID = "omnitalk"  # omnitalk.desktop; app/application.py sets it as the desktop file name
WM_CLASS = "OmniTalk"  # Qt's window class is the application name (engine.paths.APP_NAME)
MANIFEST_NAME = "menu-entry.json"
STATE_FOLDER = "OmniTalk"  # as platformdirs names OmniTalk's state folder
CATEGORIES = "AudioVideo;Utility;"
GENERIC_NAME = "Voice Assistant"
COMMENT = "Push-to-talk voice assistant that runs on your own NVIDIA GPU"
KEYWORDS = "voice;assistant;speech;talk;chat;LLaMA;"
# Characters that make the spec's Exec quoting necessary, and those escaped inside the quotes.
_EXEC_RESERVED = set(' \t\n"\'\\><~|&;$*?#()`')
_EXEC_ESCAPED = '"`$\\'


@dataclass(frozen=True, slots=True)
class Locations:
    """Where this user's menu entries, icons and OmniTalk's state live (from the XDG variables)."""

    data_home: Path
    state_home: Path

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Locations:
        env = os.environ if env is None else env
        home = Path(env.get("HOME") or Path.home())
        data = env.get("XDG_DATA_HOME") or str(home / ".local" / "share")
        state = env.get("XDG_STATE_HOME") or str(home / ".local" / "state")
        return cls(Path(data), Path(state))

    @property
    def desktop_file(self) -> Path:
        return self.data_home / "applications" / f"{DESKTOP_ID}.desktop"

    @property
    def icon_theme(self) -> Path:
        return self.data_home / "icons" / "hicolor"

    @property
    def manifest(self) -> Path:
        return self.state_home / STATE_FOLDER / MANIFEST_NAME


def escape_string(value: str) -> str:
    """A desktop-entry string value: backslash, newline, tab and carriage return escaped."""
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace("\t", "\\t").replace("\r", "\\r")


def exec_argument(argument: str) -> str:
    """One Exec argument: quoted when needed, with ``%`` doubled, then escaped as a string value."""
    argument = argument.replace("%", "%%")
    if any(c in _EXEC_RESERVED for c in argument):
        argument = '"' + "".join("\\" + c if c in _EXEC_ESCAPED else c for c in argument) + '"'
    return escape_string(argument)


def desktop_entry(checkout: Path) -> str:
    """The .desktop file that starts the launcher of ``checkout``."""
    launcher = checkout / "omnitalk"
    lines = [
        "[Desktop Entry]",
        "Type=Application",
        "Version=1.4",  # the spec version we follow (desktop-file-validate 0.26 knows up to 1.4)
        "Name=OmniTalk",
        f"GenericName={GENERIC_NAME}",
        f"Comment={COMMENT}",
        f"Icon={assets.ICON_NAME}",
        f"TryExec={escape_string(str(launcher))}",
        f"Exec={exec_argument(str(launcher))}",
        f"Path={escape_string(str(checkout))}",
        "Terminal=false",
        f"Categories={CATEGORIES}",
        f"Keywords={KEYWORDS}",
        "StartupNotify=true",
        f"StartupWMClass={WM_CLASS}",
    ]
    return "\n".join(lines) + "\n"


def planned_files(locations: Locations) -> dict[Path, Path | str]:
    """What install writes: target -> source icon file, or the text of the .desktop file (filled in later)."""
    files: dict[Path, Path | str] = {}
    for size in assets.ICON_SIZES_PX:
        files[locations.icon_theme / f"{size}x{size}" / "apps" / f"{assets.ICON_NAME}.png"] = assets.icon_png(size)
    files[locations.icon_theme / "scalable" / "apps" / f"{assets.ICON_NAME}.svg"] = assets.icon_path(assets.ICON_SVG)
    return files


def _read_manifest(path: Path) -> dict[str, list[str]]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {"files": [], "folders": []}
    return {"files": list(data.get("files", [])), "folders": list(data.get("folders", []))}


def _make_folder(folder: Path, created: list[str]) -> None:
    """mkdir -p, remembering each folder that did not exist (outermost first)."""
    missing = []
    for parent in (folder, *folder.parents):
        if parent.exists():
            break
        missing.append(parent)
    for parent in reversed(missing):
        parent.mkdir()
        created.append(str(parent))


def _refresh_caches(locations: Locations) -> None:
    """Tell the desktop about the new entry and icons where it keeps caches (never creates one)."""
    if (locations.icon_theme / "icon-theme.cache").exists() and shutil.which("gtk-update-icon-cache"):
        subprocess.run(["gtk-update-icon-cache", "-f", "-t", "-q", str(locations.icon_theme)], check=False)
    applications = locations.desktop_file.parent
    if (applications / "mimeinfo.cache").exists() and shutil.which("update-desktop-database"):
        subprocess.run(["update-desktop-database", "-q", str(applications)], check=False)


def install(checkout: Path, locations: Locations | None = None) -> list[Path]:
    """Add the menu entry and icons for ``checkout``; return the files written."""
    locations = locations or Locations.from_env()
    manifest = _read_manifest(locations.manifest)
    folders = list(manifest["folders"])
    files: dict[Path, Path | str] = {**planned_files(locations), locations.desktop_file: desktop_entry(checkout)}
    _make_folder(locations.manifest.parent, folders)
    for target, source in files.items():
        _make_folder(target.parent, folders)
        tmp = target.with_name(target.name + ".part")
        if isinstance(source, Path):
            shutil.copyfile(source, tmp)
        else:
            tmp.write_text(source, encoding="utf-8")
        tmp.chmod(0o644)
        tmp.replace(target)  # a menu watching the folder never reads half a file
    written = sorted({*manifest["files"], *(str(p) for p in files)})
    locations.manifest.write_text(
        json.dumps({"checkout": str(checkout), "files": written, "folders": folders}, indent=2) + "\n",
        encoding="utf-8",
    )
    _refresh_caches(locations)
    return list(files)


@dataclass(frozen=True, slots=True)
class Removed:
    files: tuple[Path, ...] = ()
    folders: tuple[Path, ...] = ()  # created by install, empty again


def uninstall(locations: Locations | None = None) -> Removed:
    """Remove what install added (files, then the folders it created if empty); say what was removed."""
    locations = locations or Locations.from_env()
    if not locations.manifest.exists():
        return Removed()
    manifest = _read_manifest(locations.manifest)
    files = []
    for name in manifest["files"]:
        path = Path(name)
        if path.is_file() or path.is_symlink():
            path.unlink()
            files.append(path)
    locations.manifest.unlink()
    files.append(locations.manifest)
    folders = []
    for name in sorted(manifest["folders"], key=lambda f: len(Path(f).parts), reverse=True):
        folder = Path(name)
        if folder.is_dir() and not any(folder.iterdir()):
            folder.rmdir()
            folders.append(folder)
    _refresh_caches(locations)
    return Removed(tuple(files), tuple(folders))
