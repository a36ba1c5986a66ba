"""Settings → Appearance: the theme."""

from __future__ import annotations

from typing import Any

from PySide6.QtWidgets import QComboBox, QFormLayout, QWidget

from app.settings import THEMES, AppSettings

THEME_LABELS = {"system": "Follow the system", "light": "Light", "dark": "Dark"}


class LookTab(QWidget):
    def __init__(self) -> None:
        super().__init__()
        self.theme_combo = QComboBox()
        for theme in THEMES:
            self.theme_combo.addItem(THEME_LABELS[theme], theme)
        form = QFormLayout(self)
        form.addRow("Theme", self.theme_combo)

    def show_settings(self, s: AppSettings) -> None:
        self.theme_combo.setCurrentIndex(max(0, self.theme_combo.findData(s.theme)))

    def changes(self) -> dict[str, Any]:
        return {"theme": str(self.theme_combo.currentData())}
