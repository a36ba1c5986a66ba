"""Small widget helpers shared by the dialogs: coloured status labels, path rows, error texts."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtWidgets import QHBoxLayout, QLabel, QLineEdit, QPushButton, QWidget

from app.error_words import describe_error

ERROR_COLOUR = "#c62828"
OK_COLOUR = "#2e7d32"


def error_text(exc: BaseException) -> str:
    """What the user reads for a failure in a label: what happened, the file, what to do."""
    return describe_error(exc).plain()


def coloured(label: QLabel, colour: str | None) -> None:
    label.setStyleSheet(f"color: {colour};" if colour else "")


def path_or_none(edit: QLineEdit) -> str | None:
    text = edit.text().strip()
    return str(Path(text).expanduser()) if text else None


def path_row(edit: QLineEdit, *buttons: QPushButton) -> QWidget:
    """A path field with its Browse… buttons on one line."""
    row = QWidget()
    box = QHBoxLayout(row)
    box.setContentsMargins(0, 0, 0, 0)
    box.addWidget(edit, 1)
    for button in buttons:
        box.addWidget(button)
    return row


def button_row(*buttons: QWidget) -> QWidget:
    """Buttons (or other small widgets) side by side, left-aligned."""
    row = QWidget()
    box = QHBoxLayout(row)
    box.setContentsMargins(0, 0, 0, 0)
    for button in buttons:
        box.addWidget(button)
    box.addStretch(1)
    return row
