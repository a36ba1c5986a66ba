"""Before Qt starts: find out whether its platform plugin can load, and name what is missing if not.

When Qt's platform plugin fails to load, Qt aborts the process with a hint that is often wrong
("xcb-cursor0 or libxcb-cursor0 is needed", when libxcb-icccm4 is what is missing) and nothing
reaches OmniTalk's log. ``main.py`` calls ``platform_problem()`` before the QApplication exists:
it picks the plugin Qt will use (``QT_QPA_PLATFORM``, else wayland on a Wayland session, else xcb),
runs ``ldd`` on PySide6's ``plugins/platforms/libq<name>.so`` (which resolves the plugin's whole
dependency tree the way the loader will, and lists every missing library at once) and, for xcb,
checks that there is a display. The message names each missing library, the package that
provides it (from ``installer.system_packages``) and the install command.

Standard library only, and no Qt import: it must work when Qt cannot.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable, Mapping
from pathlib import Path

from installer.system_packages import install_hint, package_manager, requirement_for

LDD_TIMEOUT_S = 20
Runner = Callable[..., subprocess.CompletedProcess]


def pyside_plugin_dir() -> Path | None:
    """``PySide6/Qt/plugins/platforms`` of the installed PySide6 (found without importing it)."""
    spec = importlib.util.find_spec("PySide6")
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = Path(next(iter(spec.submodule_search_locations))) / "Qt" / "plugins" / "platforms"
    return folder if folder.is_dir() else None


def platforms_to_try(env: Mapping[str, str]) -> list[str]:
    """The platform plugins Qt will try, in order, as Qt 6 chooses them on Linux."""
    requested = env.get("QT_QPA_PLATFORM", "").strip()
    if requested:
        # "wayland;xcb" is a fallback list; "xcb:option=value" carries options.
        return [entry.split(":", 1)[0].strip() for entry in requested.split(";") if entry.strip()]
    if env.get("XDG_SESSION_TYPE") == "wayland" and env.get("WAYLAND_DISPLAY"):
        return ["wayland", "xcb"]
    return ["xcb"]


def parse_ldd_missing(output: str) -> list[str]:
    """Sonames ``ldd`` reports as ``=> not found``, in its order, without repeats."""
    found = re.findall(r"^\s*(\S+)\s+=>\s+not found", output, flags=re.MULTILINE)
    return list(dict.fromkeys(found))


def missing_libraries(plugin: Path, run: Runner = subprocess.run) -> list[str] | None:
    """What the plugin's dependency tree lacks; None where ``ldd`` is unavailable or fails."""
    if shutil.which("ldd") is None:
        return None
    try:
        result = run(["ldd", str(plugin)], capture_output=True, text=True, timeout=LDD_TIMEOUT_S)
    except (OSError, subprocess.SubprocessError):
        return None
    if result.returncode != 0 and "not found" not in result.stdout:
        return None
    return parse_ldd_missing(result.stdout)


def describe_libraries(sonames: list[str], manager: str | None) -> str:
    """Each missing library with its package, then the command that installs the known ones."""
    lines = []
    known = []
    for soname in sonames:
        requirement = requirement_for(soname)
        if requirement is None:
            lookup = f"apt-file search {soname}" if manager == "apt" else f"dnf provides '*/{soname}'"
            lines.append(f"  {soname} (find its package: {lookup})")
        else:
            known.append(requirement)
            package = requirement.debian if manager != "dnf" else requirement.fedora
            lines.append(f"  {soname} (package {package})")
    if known:
        lines.append("Install with:")
        lines.append(install_hint(known, manager))
    return "\n".join(lines)


def platform_problem(
    env: Mapping[str, str] | None = None,
    plugin_dir: Path | None = None,
    run: Runner = subprocess.run,
    system: str = sys.platform,
) -> str | None:
    """Why Qt's platform plugin will not load here, in words with the fix; None when it should load
    (or when that cannot be known: not Linux, no ldd, a plugin PySide6 does not ship)."""
    if not system.startswith("linux"):
        return None
    env = os.environ if env is None else env
    plugin_dir = plugin_dir or pyside_plugin_dir()
    if plugin_dir is None:
        return None
    problems = []
    for name in platforms_to_try(env):
        plugin = plugin_dir / f"libq{name}.so"
        if not plugin.exists():
            return None  # Qt reports unknown platforms itself, listing the available ones
        missing = missing_libraries(plugin, run)
        if missing is None:
            return None
        if missing:
            problems.append(
                f"Qt's {name} platform plugin cannot load: these system libraries are missing:\n"
                + describe_libraries(missing, package_manager())
            )
            continue
        if name == "xcb" and not env.get("DISPLAY"):
            problems.append(
                "Qt's xcb platform plugin needs an X11 display, and DISPLAY is not set: start OmniTalk from a "
                "desktop session (or set DISPLAY)."
            )
            continue
        return None  # this plugin will load
    return "\n".join(problems) if problems else None
