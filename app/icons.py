"""The app icon for Qt, from ``assets`` (the one resolver): every committed size in one QIcon.

Qt picks the closest size for each place (title bar, task bar, About box, dialogs); the 16-32 px
ones are drawn on their own pixel grid, so they stay sharp where a scaled SVG would blur.
"""

from __future__ import annotations

from PySide6.QtCore import QSize
from PySide6.QtGui import QIcon, QPixmap

import assets


def app_icon() -> QIcon:
    """OmniTalk's icon with every PNG size (needs a QGuiApplication, like every QIcon)."""
    icon = QIcon()
    for size in assets.ICON_SIZES_PX:
        icon.addFile(str(assets.icon_png(size)), QSize(size, size))
    return icon


def icon_pixmap(size_px: int) -> QPixmap:
    """The icon at ``size_px`` (for an About box, a banner, a wizard page)."""
    return app_icon().pixmap(QSize(size_px, size_px))
