"""The system libraries and tools OmniTalk needs on Linux: one list, with Debian/Ubuntu and Fedora names.

``SYSTEM_REQUIREMENTS`` is the only list. The app needs the entries that are not ``tests_only``:
the shared libraries of Qt and its X11 (xcb) platform plugin (the direct dependencies of PySide6's
``libqxcb.so``, ``libQt6XcbQpa``, ``libQt6Gui`` and ``libQt6DBus`` outside glibc), PortAudio for
``sounddevice`` and libsndfile for ``soundfile`` where its wheel does not bundle one. ``./omnitalk
test`` also needs the tools of the real-window and real-audio tests. ``APT_TEST_PACKAGES`` (read by
``.ci/run``) is derived from it.

Presence is tested the way the app will use each thing, on every distribution alike: a library
is present when the dynamic loader can open it by its soname (``ctypes.CDLL``: the same search as
Qt's own dlopen, including ``LD_LIBRARY_PATH``; ``ldconfig -p`` would miss those, a package query
would need to know every distribution's package names and ``t64`` renames); a tool is present when
it is on ``PATH``. Missing ones are installed with apt-get or dnf as root or with passwordless sudo,
saying what and why; otherwise the exact command is printed and the launcher stops.

Standard library only (the launcher runs before anything is installed; ``main.py`` uses the lookups
before Qt starts).
"""

from __future__ import annotations

import ctypes
import os
import shutil
import subprocess
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from installer.console import say

SKIP_ENV = "OMNITALK_SYSTEM_CHECK"  # "skip": do not check (a distribution this check gets wrong)

QT = "Qt, for the window"
QT_XCB = "Qt's X11 (xcb) platform plugin"
AUDIO = "sounddevice, for the microphone and speaker (PortAudio)"
SNDFILE = "soundfile, for WAV files"
TESTS = "the test suite"


@dataclass(frozen=True, slots=True)
class SystemRequirement:
    """One shared library (by soname) or command OmniTalk needs, and the packages that provide it."""

    provides: str  # "libxcb-icccm.so.4" or a command name such as "Xvfb"
    debian: str  # Debian/Ubuntu package
    fedora: str  # Fedora/RHEL package
    needed_by: str
    kind: str = "library"  # "library" or "command"
    tests_only: bool = False
    # A glob under site-packages where a wheel ships its own copy; then the system's is not needed.
    bundled: str | None = None


def _lib(soname: str, debian: str, fedora: str, needed_by: str, bundled: str | None = None) -> SystemRequirement:
    return SystemRequirement(soname, debian, fedora, needed_by, bundled=bundled)


def _tool(command: str, debian: str, fedora: str) -> SystemRequirement:
    return SystemRequirement(command, debian, fedora, TESTS, kind="command", tests_only=True)


SYSTEM_REQUIREMENTS: tuple[SystemRequirement, ...] = (
    _lib("libGL.so.1", "libgl1", "libglvnd-glx", QT),
    _lib("libEGL.so.1", "libegl1", "libglvnd-egl", QT),
    _lib("libfontconfig.so.1", "libfontconfig1", "fontconfig", QT),
    _lib("libfreetype.so.6", "libfreetype6", "freetype", QT),
    _lib("libglib-2.0.so.0", "libglib2.0-0", "glib2", QT),
    _lib("libxkbcommon.so.0", "libxkbcommon0", "libxkbcommon", QT),
    _lib("libdbus-1.so.3", "libdbus-1-3", "dbus-libs", QT),
    _lib("libX11.so.6", "libx11-6", "libX11", QT_XCB),
    _lib("libX11-xcb.so.1", "libx11-xcb1", "libX11-xcb", QT_XCB),
    _lib("libxcb.so.1", "libxcb1", "libxcb", QT_XCB),
    _lib("libxcb-randr.so.0", "libxcb-randr0", "libxcb", QT_XCB),
    _lib("libxcb-render.so.0", "libxcb-render0", "libxcb", QT_XCB),
    _lib("libxcb-shape.so.0", "libxcb-shape0", "libxcb", QT_XCB),
    _lib("libxcb-shm.so.0", "libxcb-shm0", "libxcb", QT_XCB),
    _lib("libxcb-sync.so.1", "libxcb-sync1", "libxcb", QT_XCB),
    _lib("libxcb-xfixes.so.0", "libxcb-xfixes0", "libxcb", QT_XCB),
    _lib("libxcb-xkb.so.1", "libxcb-xkb1", "libxcb", QT_XCB),
    _lib("libxcb-cursor.so.0", "libxcb-cursor0", "xcb-util-cursor", QT_XCB),
    _lib("libxcb-icccm.so.4", "libxcb-icccm4", "xcb-util-wm", QT_XCB),
    _lib("libxcb-image.so.0", "libxcb-image0", "xcb-util-image", QT_XCB),
    _lib("libxcb-keysyms.so.1", "libxcb-keysyms1", "xcb-util-keysyms", QT_XCB),
    _lib("libxcb-render-util.so.0", "libxcb-render-util0", "xcb-util-renderutil", QT_XCB),
    _lib("libxcb-util.so.1", "libxcb-util1", "xcb-util", QT_XCB),
    _lib("libxkbcommon-x11.so.0", "libxkbcommon-x11-0", "libxkbcommon-x11", QT_XCB),
    _lib("libportaudio.so.2", "libportaudio2", "portaudio", AUDIO),
    # The soundfile wheels for x86_64 and aarch64 Linux carry their own libsndfile.
    _lib("libsndfile.so.1", "libsndfile1", "libsndfile", SNDFILE, bundled="_soundfile_data/libsndfile*"),
    # Real windows under Xvfb, key presses, speech and screenshots, real audio through PulseAudio.
    _tool("Xvfb", "xvfb", "xorg-x11-server-Xvfb"),
    _tool("xauth", "xauth", "xorg-x11-xauth"),
    _tool("xdotool", "xdotool", "xdotool"),
    _tool("espeak-ng", "espeak-ng", "espeak-ng"),
    _tool("sox", "sox", "sox"),
    _tool("pulseaudio", "pulseaudio", "pulseaudio"),
    _tool("pactl", "pulseaudio-utils", "pulseaudio-utils"),
    _tool("import", "imagemagick", "ImageMagick"),
    # The menu entry `./omnitalk install` writes is checked by the freedesktop validator.
    _tool("desktop-file-validate", "desktop-file-utils", "desktop-file-utils"),
)

APP_REQUIREMENTS = tuple(r for r in SYSTEM_REQUIREMENTS if not r.tests_only)
# Debian packages for everything, in list order (.ci/run installs these before `./omnitalk test`).
APT_TEST_PACKAGES: tuple[str, ...] = tuple(dict.fromkeys(r.debian for r in SYSTEM_REQUIREMENTS))

Runner = Callable[..., subprocess.CompletedProcess]


def library_loadable(soname: str) -> bool:
    """Whether the dynamic loader finds and opens ``soname`` (with its own dependencies)."""
    try:
        ctypes.CDLL(soname)
    except OSError:
        return False
    return True


def missing_requirements(
    requirements: Iterable[SystemRequirement],
    site_packages: Sequence[Path] = (),
    loadable: Callable[[str], bool] = library_loadable,
    which: Callable[[str], str | None] = shutil.which,
) -> list[SystemRequirement]:
    """The requirements that are not met on this machine."""
    missing = []
    for requirement in requirements:
        if requirement.kind == "command":
            if which(requirement.provides) is None:
                missing.append(requirement)
            continue
        if requirement.bundled and any(next(folder.glob(requirement.bundled), None) for folder in site_packages):
            continue
        if not loadable(requirement.provides):
            missing.append(requirement)
    return missing


def requirement_for(soname: str) -> SystemRequirement | None:
    """The list entry for a shared library, by its soname."""
    return next((r for r in SYSTEM_REQUIREMENTS if r.kind == "library" and r.provides == soname), None)


def package_manager(which: Callable[[str], str | None] = shutil.which) -> str | None:
    """``apt`` (Debian, Ubuntu), ``dnf`` (Fedora, RHEL) or None."""
    if which("apt-get"):
        return "apt"
    if which("dnf"):
        return "dnf"
    return None


def packages_for(requirements: Iterable[SystemRequirement], manager: str) -> list[str]:
    return list(dict.fromkeys(r.debian if manager == "apt" else r.fedora for r in requirements))


def install_command(manager: str, packages: Sequence[str]) -> list[str]:
    tool = "apt-get" if manager == "apt" else "dnf"
    return [tool, "install", "-y", *packages]


def describe_missing(missing: Sequence[SystemRequirement]) -> str:
    """``libxcb-icccm.so.4, libxcb-keysyms.so.1 (Qt's X11 (xcb) platform plugin)``, one line per user."""
    by_user: dict[str, list[str]] = {}
    for requirement in missing:
        by_user.setdefault(requirement.needed_by, []).append(requirement.provides)
    return "\n".join(f"  {', '.join(names)} ({user})" for user, names in by_user.items())


def install_hint(missing: Sequence[SystemRequirement], manager: str | None) -> str:
    """The exact command to run (both families' commands where the package manager is unknown)."""
    if manager is not None:
        return "  sudo " + " ".join(install_command(manager, packages_for(missing, manager)))
    return (
        "  Debian/Ubuntu: sudo "
        + " ".join(install_command("apt", packages_for(missing, "apt")))
        + "\n  Fedora: sudo "
        + " ".join(install_command("dnf", packages_for(missing, "dnf")))
        + "\n  (elsewhere: the packages that provide these files)"
    )


def _privilege_prefix(run: Runner, which: Callable[[str], str | None]) -> list[str] | None:
    """[] as root, ["sudo", "-n"] with passwordless sudo, None when installing is not possible."""
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        return []
    if which("sudo") and run(["sudo", "-n", "true"], capture_output=True).returncode == 0:
        return ["sudo", "-n"]
    return None


def ensure_system_requirements(
    requirements: Sequence[SystemRequirement],
    *,
    site_packages: Sequence[Path] = (),
    run: Runner = subprocess.run,
    loadable: Callable[[str], bool] = library_loadable,
    which: Callable[[str], str | None] = shutil.which,
) -> None:
    """Install what is missing when this user can (root, passwordless sudo), saying what and why;
    otherwise raise SystemExit with the exact command to run."""
    missing = missing_requirements(requirements, site_packages, loadable, which)
    if not missing:
        return
    manager = package_manager(which)
    prefix = _privilege_prefix(run, which) if manager else None
    what = describe_missing(missing)
    if manager is None or prefix is None:
        raise SystemExit(
            f"[omnitalk] OmniTalk needs system packages that are not installed:\n{what}\n"
            f"Install them, then run the same command again:\n{install_hint(missing, manager)}\n"
            f"(To start anyway, set {SKIP_ENV}=skip.)"
        )
    packages = packages_for(missing, manager)
    command = prefix + install_command(manager, packages)
    say(f"installing system packages: {' '.join(packages)}\nneeded:\n{what}\n$ {' '.join(command)}")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    steps = [prefix + ["apt-get", "update", "-qq"], command] if manager == "apt" else [command]
    for step in steps:
        if run(step, env=env).returncode != 0:
            raise SystemExit(
                f"[omnitalk] failed: {' '.join(step)}\nInstall these yourself:\n{install_hint(missing, manager)}"
            )
    still = missing_requirements(missing, site_packages, loadable, which)
    if still:
        raise SystemExit(f"[omnitalk] still missing after installing {' '.join(packages)}:\n{describe_missing(still)}")
