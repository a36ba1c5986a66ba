"""The icon files: committed, up to date with their SVGs, readable by Qt, and found by the one resolver
in a checkout and in an installed wheel (the frozen build is checked in tests/installer/test_frozen_build.py)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

import assets
from installer import make_icons

ROOT = Path(__file__).resolve().parent.parent
# Anti-aliased edges may differ by a step or two between Qt builds; a changed drawing differs by far more.
MAX_CHANNEL_DIFF = 8


def _rgba(path: Path) -> np.ndarray:
    from PySide6.QtGui import QImage

    image = QImage(str(path)).convertToFormat(QImage.Format.Format_RGBA8888)
    assert not image.isNull(), path
    return np.frombuffer(bytes(image.constBits()), np.uint8).reshape(image.height(), image.width(), 4).copy()


def test_checkout_resolver_finds_every_icon_in_the_assets_folder() -> None:
    files = assets.icon_files()
    assert len(files) == 3 + len(assets.ICON_SIZES_PX)
    assert all(path.is_file() and path.parent == ROOT / "assets" / "icons" for path in files)
    assert assets.icon_png(48) == ROOT / "assets" / "icons" / "omnitalk-48.png"


def test_a_missing_asset_is_a_clear_error() -> None:
    with pytest.raises(assets.AssetMissing, match=r"assets/icons/nothing\.png is missing .*Reinstall"):
        assets.icon_path("nothing.png")
    with pytest.raises(ValueError, match="no 20 px icon"):
        assets.icon_png(20)


def test_committed_icons_are_what_the_script_renders_from_the_svgs(qapp: object, tmp_path: Path) -> None:
    fresh = make_icons.make_icons(tmp_path)
    assert [p.name for p in fresh] == [*(assets.icon_png_name(s) for s in assets.ICON_SIZES_PX), assets.ICON_ICO]
    for size in assets.ICON_SIZES_PX:
        committed = _rgba(assets.icon_png(size))
        assert committed.shape == (size, size, 4)
        diff = np.abs(committed.astype(int) - _rgba(tmp_path / assets.icon_png_name(size)).astype(int)).max()
        assert diff <= MAX_CHANNEL_DIFF, f"{size} px differs by {diff}: run installer/make_icons.py"


def test_icons_have_a_transparent_outside_and_an_opaque_tile(qapp: object) -> None:
    for size in assets.ICON_SIZES_PX:
        pixels = _rgba(assets.icon_png(size))
        assert pixels[0, 0, 3] < 128, f"{size} px: the corner is outside the rounded tile"
        centre = pixels[size // 2, size // 2]
        assert centre[3] == 255
        # The white bubble and the violet tile are both there: the icon is not blank or one colour.
        assert (pixels[..., :3].min(axis=2) > 240).mean() > 0.15
        assert ((pixels[..., 2] > 150) & (pixels[..., 0] < 140) & (pixels[..., 3] == 255)).mean() > 0.2


def test_ico_holds_every_windows_size_and_qt_reads_each(qapp: object) -> None:
    from PySide6.QtGui import QImageReader

    reader = QImageReader(str(assets.icon_path(assets.ICON_ICO)))
    assert reader.imageCount() == len(make_icons.ICO_SIZES_PX)
    sizes = []
    for index in range(reader.imageCount()):
        assert reader.jumpToImage(index)
        image = reader.read()
        assert not image.isNull(), reader.errorString()
        sizes.append(image.width())
        png = _rgba(assets.icon_png(image.width())) if image.width() in assets.ICON_SIZES_PX else None
        if png is not None:
            from PySide6.QtGui import QImage

            rgba = image.convertToFormat(QImage.Format.Format_RGBA8888)
            got = np.frombuffer(bytes(rgba.constBits()), np.uint8).reshape(png.shape)
            assert np.abs(got.astype(int) - png.astype(int)).max() <= 1  # the same pixels as the PNG
    assert sorted(sizes) == sorted(make_icons.ICO_SIZES_PX)


def test_an_installed_wheel_ships_the_icons_and_its_resolver_finds_them(tmp_path: Path) -> None:
    """``pip install`` of the project into a fresh venv, then the resolver runs from there, away from the checkout."""
    source = tmp_path / "src"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, source / name)
    for package in ("app", "engine", "installer", "assets"):
        shutil.copytree(ROOT / package, source / package, ignore=shutil.ignore_patterns("__pycache__"))
    wheels = tmp_path / "wheels"
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "--no-input"]
    env = dict(os.environ, PIP_NO_INDEX="1")
    built = subprocess.run(
        [*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", str(wheels), str(source)],
        capture_output=True, text=True, env=env, timeout=300,
    )
    assert built.returncode == 0, built.stdout + built.stderr
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    python = venv / ("Scripts/python.exe" if os.name == "nt" else "bin/python")
    installed = subprocess.run(
        [*pip, "--python", str(python), "install", "--no-deps", *map(str, wheels.glob("*.whl"))],
        capture_output=True, text=True, env=env, timeout=300,
    )
    assert installed.returncode == 0, installed.stdout + installed.stderr
    probe = textwrap.dedent(
        """
        import assets, json
        print(json.dumps([str(assets.ASSETS_DIR)] + [str(p) for p in assets.icon_files()]))
        """
    )
    result = subprocess.run(
        [str(python), "-I", "-c", probe], capture_output=True, text=True, cwd=tmp_path, timeout=60
    )
    assert result.returncode == 0, result.stderr
    import json

    folder, *files = map(Path, json.loads(result.stdout))
    assert "site-packages" in folder.parts and venv in folder.parents
    assert [f.name for f in files] == [f.name for f in assets.icon_files()]
    for got, ours in zip(files, assets.icon_files(), strict=True):
        assert got.read_bytes() == ours.read_bytes()
