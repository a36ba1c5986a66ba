"""Settings → Controls: the talk key (captured with a key-sequence editor), hold vs toggle, global hotkey."""

from __future__ import annotations

from typing import Any

from PySide6.QtGui import QKeySequence
from PySide6.QtWidgets import (
    QCheckBox,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QKeySequenceEdit,
    QLabel,
    QPushButton,
    QRadioButton,
    QVBoxLayout,
    QWidget,
)

from app.settings import DEFAULT_TALK_KEY, AppSettings
from app.widgets import ERROR_COLOUR, coloured

# Keys the main window already uses (Esc stops an answer, Enter sends typed text, Tab moves focus).
RESERVED_KEYS = ("Esc", "Return", "Enter", "Tab", "Backtab")
TALK_KEY_HINT = "Click the box, then press the key or combination to use (for example Ctrl+Space)."


class ControlsTab(QWidget):
    def __init__(self) -> None:
        super().__init__()
        self._talk_key = DEFAULT_TALK_KEY
        self.talk_key_edit = QKeySequenceEdit()
        self.talk_key_edit.setMaximumSequenceLength(1)
        self.talk_key_edit.setToolTip("Click here, then press the key (or key combination) to use")
        self.talk_key_edit.keySequenceChanged.connect(self._talk_key_changed)
        self.talk_key_edit.editingFinished.connect(self._talk_key_finished)
        self.talk_key_reset = QPushButton(f"Use {DEFAULT_TALK_KEY}")
        self.talk_key_reset.clicked.connect(lambda: self._set_talk_key(DEFAULT_TALK_KEY))
        self.talk_key_note = QLabel()
        self.talk_key_note.setWordWrap(True)
        key_row = QHBoxLayout()
        key_row.addWidget(self.talk_key_edit, 1)
        key_row.addWidget(self.talk_key_reset)
        self.hold_radio = QRadioButton("Hold the key while you speak")
        self.toggle_radio = QRadioButton("Press once to start, again to stop")
        self.global_hotkey_check = QCheckBox("Also works while OmniTalk is in the background (global hotkey)")
        box = QGroupBox("Talk key")
        form = QFormLayout(box)
        form.addRow("Key", key_row)
        form.addRow(self.talk_key_note)
        form.addRow(self.hold_radio)
        form.addRow(self.toggle_radio)
        form.addRow(self.global_hotkey_check)
        layout = QVBoxLayout(self)
        layout.addWidget(box)
        layout.addStretch(1)

    def show_settings(self, s: AppSettings) -> None:
        self._set_talk_key(s.talk_key)
        (self.hold_radio if s.hold_to_talk else self.toggle_radio).setChecked(True)
        self.global_hotkey_check.setChecked(s.global_hotkey)

    def changes(self) -> dict[str, Any]:
        return {
            "talk_key": self._talk_key,
            "hold_to_talk": self.hold_radio.isChecked(),
            "global_hotkey": self.global_hotkey_check.isChecked(),
        }

    def _set_talk_key(self, key: str) -> None:
        self._talk_key = key
        self.talk_key_edit.blockSignals(True)
        self.talk_key_edit.setKeySequence(QKeySequence(key))
        self.talk_key_edit.blockSignals(False)
        self.talk_key_note.setText(TALK_KEY_HINT)
        coloured(self.talk_key_note, None)

    def _talk_key_changed(self, sequence: QKeySequence) -> None:
        if sequence.count() == 0:
            return  # recording just started; keep the previous key until a new one arrives
        text = sequence.toString(QKeySequence.SequenceFormat.PortableText)  # one combo: maximumSequenceLength 1
        if text in RESERVED_KEYS:
            self._set_talk_key(self._talk_key)
            self.talk_key_note.setText(f"{text} is taken (Esc stops an answer, Enter sends text); choose another key.")
            coloured(self.talk_key_note, ERROR_COLOUR)
            return
        self._talk_key = text
        self.talk_key_note.setText(TALK_KEY_HINT)
        coloured(self.talk_key_note, None)

    def _talk_key_finished(self) -> None:
        if self.talk_key_edit.keySequence().isEmpty():
            self._set_talk_key(self._talk_key)
