"""OmniTalk's assets (the app icon, drawn as SVG, with its PNG sizes and a Windows .ico) and the one
resolver that finds them.

    assets/icons/omnitalk.svg          the icon (48 px and up)
    assets/icons/omnitalk-small.svg    the same icon redrawn on the 16 px grid (16-32 px)
    assets/icons/omnitalk-N.png        N in ICON_SIZES_PX, rendered from those by installer/make_icons.py
    assets/icons/omnitalk.ico          16-256 px, for Windows shortcuts and the installer

The files sit next to this module and are found through its ``__file__``, which is right in all
three ways OmniTalk runs: a checkout (this folder), an installed package (``pip install .`` ships
them as package data of ``assets``) and a PyInstaller build (``installer/build.py`` collects the
folder under the same name next to the frozen module). Sounds (earcons) are synthesised in
``engine/audio/earcons.py``, not stored here.

Standard library only: the launcher (``./omnitalk install``) uses it before anything is installed.
Qt code gets the icon through ``app.icons``.
"""

from __future__ import annotations

from pathlib import Path

ASSETS_DIR = Path(__file__).resolve().parent
ICONS_DIR = "icons"
ICON_NAME = "omnitalk"  # the freedesktop icon name, and the stem of every icon file
ICON_SVG = f"{ICON_NAME}.svg"
ICON_SMALL_SVG = f"{ICON_NAME}-small.svg"
ICON_ICO = f"{ICON_NAME}.ico"
ICON_SIZES_PX = (16, 24, 32, 48, 64, 128, 256, 512)


class AssetMissing(FileNotFoundError):
    """A file OmniTalk ships is not where the resolver looked: a broken install."""


def asset_path(relative: str | Path) -> Path:
    """The path of ``relative`` (e.g. ``"icons/omnitalk.svg"``) under the assets folder; it must exist."""
    path = ASSETS_DIR / relative
    if not path.is_file():
        raise AssetMissing(
            f"OmniTalk's file {Path('assets', relative).as_posix()} is missing (looked in {ASSETS_DIR}). "
            "Reinstall OmniTalk (./omnitalk install, or the Windows installer)."
        )
    return path


def icon_png_name(size_px: int) -> str:
    return f"{ICON_NAME}-{size_px}.png"


def icon_path(file_name: str) -> Path:
    """An icon file by name: ``ICON_SVG``, ``ICON_ICO``, ``icon_png_name(48)``."""
    return asset_path(Path(ICONS_DIR, file_name))


def icon_png(size_px: int) -> Path:
    """The PNG of the icon at ``size_px`` (one of ``ICON_SIZES_PX``)."""
    if size_px not in ICON_SIZES_PX:
        raise ValueError(f"no {size_px} px icon; the sizes are {ICON_SIZES_PX}")
    return icon_path(icon_png_name(size_px))


def icon_files() -> list[Path]:
    """Every icon file OmniTalk ships (what installers copy and the tests check)."""
    names = [ICON_SVG, ICON_SMALL_SVG, ICON_ICO, *(icon_png_name(s) for s in ICON_SIZES_PX)]
    return [icon_path(name) for name in names]
