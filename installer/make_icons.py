"""Render the app icon's PNG sizes and the Windows .ico from the SVGs in ``assets/icons``.

    .venv/bin/python installer/make_icons.py          # rewrite the committed files
    .venv/bin/python installer/make_icons.py --out D  # write them elsewhere (the up-to-date test)

Sizes up to ``SMALL_MAX_PX`` come from ``omnitalk-small.svg`` (the icon redrawn on the 16 px grid,
so the waveform stays sharp), the larger ones from ``omnitalk.svg``. Rendering uses Qt's
``QSvgRenderer`` (PySide6-Essentials, already a dependency), headless.

The .ico holds ``ICO_SIZES_PX``: the sizes below 256 as 32-bit BMP images (what every Windows
version and resource tool reads), 256 as PNG (what Windows expects for that size). Names and sizes
come from ``assets`` (the resolver), so the app, the installer and this script agree.
"""

from __future__ import annotations

import argparse
import os
import struct
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as a script from the checkout
    sys.path.insert(0, str(ROOT))

import assets  # noqa: E402

SMALL_MAX_PX = 32
ICO_SIZES_PX = (16, 24, 32, 48, 64, 256)
ICO_PNG_MIN_PX = 256  # entries this large are stored as PNG
_ICONDIR = struct.Struct("<HHH")  # reserved, type (1 = icon), count
_ICONDIRENTRY = struct.Struct("<BBBBHHII")  # w, h, colours, reserved, planes, bpp, bytes, offset
_BITMAPINFOHEADER = struct.Struct("<IiiHHIIiiII")


def render_rgba(svg: Path, size_px: int) -> bytes:
    """The SVG rendered at ``size_px`` square: straight (not premultiplied) RGBA, rows top to bottom."""
    from PySide6.QtCore import Qt
    from PySide6.QtGui import QImage, QPainter
    from PySide6.QtSvg import QSvgRenderer

    renderer = QSvgRenderer(str(svg))
    if not renderer.isValid():
        raise ValueError(f"{svg} is not a valid SVG")
    image = QImage(size_px, size_px, QImage.Format.Format_ARGB32_Premultiplied)
    image.fill(Qt.GlobalColor.transparent)
    painter = QPainter(image)
    painter.setRenderHint(QPainter.RenderHint.Antialiasing)
    renderer.render(painter)
    painter.end()
    rgba = image.convertToFormat(QImage.Format.Format_RGBA8888)
    return bytes(rgba.constBits())[: size_px * size_px * 4]


def png_bytes(rgba: bytes, size_px: int) -> bytes:
    from PySide6.QtCore import QBuffer, QByteArray, QIODevice
    from PySide6.QtGui import QImage

    image = QImage(rgba, size_px, size_px, size_px * 4, QImage.Format.Format_RGBA8888)
    data = QByteArray()
    buffer = QBuffer(data)
    buffer.open(QIODevice.OpenModeFlag.WriteOnly)
    if not image.save(buffer, "PNG"):  # type: ignore[call-overload]  # the stubs say bytes; only str works
        raise RuntimeError("Qt could not encode a PNG")
    buffer.close()
    return bytes(data.data())


def bmp_entry(rgba: bytes, size_px: int) -> bytes:
    """An .ico image in BMP form: BITMAPINFOHEADER (height doubled), BGRA rows bottom-up, AND mask."""
    rows = [rgba[y * size_px * 4 : (y + 1) * size_px * 4] for y in range(size_px)]
    pixels = bytearray()
    for row in reversed(rows):
        for x in range(size_px):
            r, g, b, a = row[4 * x : 4 * x + 4]
            pixels += bytes((b, g, r, a))
    mask_row_bytes = ((size_px + 31) // 32) * 4  # 1 bit per pixel, rows padded to 32 bits
    mask = bytearray()
    for row in reversed(rows):
        bits = bytearray(mask_row_bytes)
        for x in range(size_px):
            if row[4 * x + 3] == 0:  # fully transparent: masked out for old renderers
                bits[x // 8] |= 0x80 >> (x % 8)
        mask += bits
    header = _BITMAPINFOHEADER.pack(_BITMAPINFOHEADER.size, size_px, 2 * size_px, 1, 32, 0, 0, 0, 0, 0, 0)
    return header + bytes(pixels) + bytes(mask)


def ico_bytes(images: dict[int, bytes]) -> bytes:
    """A Windows .ico from ``{size_px: straight RGBA}``, smallest first."""
    sizes = sorted(images)
    payloads = [
        png_bytes(images[s], s) if s >= ICO_PNG_MIN_PX else bmp_entry(images[s], s) for s in sizes
    ]
    offset = _ICONDIR.size + _ICONDIRENTRY.size * len(sizes)
    out = bytearray(_ICONDIR.pack(0, 1, len(sizes)))
    for size, payload in zip(sizes, payloads, strict=True):
        dim = 0 if size >= 256 else size  # 0 means 256 in the directory
        out += _ICONDIRENTRY.pack(dim, dim, 0, 0, 1, 32, len(payload), offset)
        offset += len(payload)
    for payload in payloads:
        out += payload
    return bytes(out)


def source_for(size_px: int) -> Path:
    name = assets.ICON_SMALL_SVG if size_px <= SMALL_MAX_PX else assets.ICON_SVG
    return assets.icon_path(name)


def make_icons(out_dir: Path) -> list[Path]:
    """Write every PNG size and the .ico into ``out_dir``; return the files written."""
    out_dir.mkdir(parents=True, exist_ok=True)
    images = {size: render_rgba(source_for(size), size) for size in sorted({*assets.ICON_SIZES_PX, *ICO_SIZES_PX})}
    written = []
    for size in assets.ICON_SIZES_PX:
        path = out_dir / assets.icon_png_name(size)
        path.write_bytes(png_bytes(images[size], size))
        written.append(path)
    ico = out_dir / assets.ICON_ICO
    ico.write_bytes(ico_bytes({size: images[size] for size in ICO_SIZES_PX}))
    written.append(ico)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=assets.ASSETS_DIR / assets.ICONS_DIR, help="output folder")
    args = parser.parse_args(argv)
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    from PySide6.QtGui import QGuiApplication

    app = QGuiApplication.instance() or QGuiApplication([sys.argv[0]])  # noqa: F841  (QImage text/font needs one)
    for path in make_icons(args.out):
        print(f"{path} ({path.stat().st_size} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
