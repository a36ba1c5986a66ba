"""The app icon reaches the application, the main window and the About box."""

from __future__ import annotations

from PySide6.QtCore import QSize, QTimer
from PySide6.QtGui import QImage
from PySide6.QtWidgets import QApplication, QMessageBox

import assets
from app.application import create_app
from app.icons import app_icon, icon_pixmap
from app.main_window import MainWindow
from installer.desktop_linux import DESKTOP_ID, WM_CLASS


def _same_pixels(a: QImage, b: QImage) -> bool:
    fmt = QImage.Format.Format_ARGB32_Premultiplied  # how a QPixmap holds it: no rounding either way
    return a.size() == b.size() and a.convertToFormat(fmt) == b.convertToFormat(fmt)


def test_app_icon_has_every_size_from_the_assets(qtbot) -> None:
    icon = app_icon()
    assert sorted(s.width() for s in icon.availableSizes()) == sorted(assets.ICON_SIZES_PX)
    assert _same_pixels(icon_pixmap(48).toImage(), QImage(str(assets.icon_png(48))))


def test_create_app_sets_the_icon_and_the_names_the_menu_entry_uses(qtbot) -> None:
    app = create_app()
    assert sorted(s.width() for s in app.windowIcon().availableSizes()) == sorted(assets.ICON_SIZES_PX)
    assert app.desktopFileName() == DESKTOP_ID
    # Qt names the X11 window class after the application: the entry's StartupWMClass must match.
    assert app.applicationName() == WM_CLASS


def test_main_window_and_about_box_show_the_icon(qtbot) -> None:
    window = MainWindow()
    qtbot.addWidget(window)
    assert _same_pixels(
        window.windowIcon().pixmap(QSize(32, 32)).toImage(), QImage(str(assets.icon_png(32)))
    )
    seen: list[QImage] = []

    def read_about_box() -> None:
        box = QApplication.activeModalWidget()
        if isinstance(box, QMessageBox):
            seen.append(box.iconPixmap().toImage())
            box.accept()
        else:
            QTimer.singleShot(20, read_about_box)

    QTimer.singleShot(0, read_about_box)
    window.show_about()
    assert seen, "the About box did not open"
    about = seen[0]
    expected = window.windowIcon().pixmap(QSize(about.width(), about.height())).toImage()
    assert not about.isNull() and _same_pixels(about, expected)
