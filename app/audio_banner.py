"""The main window's audio banner: says at start-up, not only on the first press of the talk key,
that OmniTalk cannot hear or speak, why, and what to do.

It shows the engine's device listing (``DevicesListed``, asked for at start-up before any model
loads, and again after every "Look for devices again") and the speaker failures of answers
(``Failed`` with a turn id). Typed questions keep working without a speaker; the banner says
"answers are text-only: no speaker" while that is so. ``status_text`` is the audio line of
Help → About.
"""

from __future__ import annotations

from html import escape

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import QFrame, QHBoxLayout, QLabel, QPushButton, QWidget

from app.error_words import NO_SPEAKER_NOTE, describe_failed
from app.words import AUDIO_TAB, RESCAN_BUTTON, settings_place
from engine.errors import Reason
from engine.events import DevicesListed, Failed

NO_MIC_NOTE = "speaking needs a microphone; typed questions still work"
BANNER_STYLE = (  # the same warm colours in light and dark themes, so the text colour is set too
    "QFrame#audioBanner { background: #fff3cd; border: 1px solid #e0b84f; border-radius: 4px; }"
    " QLabel#audioBannerText { color: #3d3000; }"
)


def _missing_words(n_in: int, n_out: int) -> tuple[str, str]:
    """(title, text) for a device list without a microphone or a speaker."""
    missing = " or ".join(word for word, n in (("microphone", n_in), ("speaker", n_out)) if n == 0)
    text = (
        f"No {missing} found. Connect one and make sure it is enabled in the system's sound settings, then "
        f"click “{RESCAN_BUTTON}” (here or in {settings_place(AUDIO_TAB)})."
    )
    return f"No {missing}", text


class AudioBanner(QFrame):
    rescanRequested = Signal()

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("audioBanner")
        self.setStyleSheet(BANNER_STYLE)
        self.label = QLabel()
        self.label.setObjectName("audioBannerText")
        self.label.setWordWrap(True)
        self.label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.rescan_button = QPushButton(RESCAN_BUTTON)
        self.rescan_button.clicked.connect(self._rescan)
        layout = QHBoxLayout(self)
        layout.addWidget(self.label, 1)
        layout.addWidget(self.rescan_button, 0, Qt.AlignmentFlag.AlignTop)
        self.status_text = "not checked yet"
        self.hide()

    def _rescan(self) -> None:
        self.rescan_button.setEnabled(False)
        self.rescanRequested.emit()

    def show_listing(self, listed: DevicesListed) -> None:
        """The engine's device list (start-up or a rescan from anywhere)."""
        self.rescan_button.setEnabled(True)
        if listed.error is not None:
            self._show_failure(listed.error, "")
            return
        n_in = sum(d.is_input for d in listed.devices)
        n_out = sum(d.is_output for d in listed.devices)
        self.status_text = f"{n_in} microphone(s), {n_out} speaker(s)"
        if n_in and n_out:
            self.hide()
            return
        self._show(*_missing_words(n_in, n_out), NO_SPEAKER_NOTE if not n_out else NO_MIC_NOTE)

    def speaker_failed(self, failed: Failed) -> None:
        """An answer could not be spoken (the engine's Failed for that turn): it is text-only."""
        self._show_failure(failed, "speaker failed: ")

    def _show_failure(self, failed: Failed, prefix: str) -> None:
        words = describe_failed(failed)
        portaudio = failed.reason is Reason.PORTAUDIO_MISSING
        self.status_text = "the PortAudio sound library is missing" if portaudio else prefix + words.text
        self._show(words.title, f"{words.text} {words.fix or ''}", NO_SPEAKER_NOTE)

    def _show(self, title: str, text: str, note: str) -> None:
        self.label.setText(f"<b>{escape(title)}:</b> {escape(text)}<br><i>{escape(note[0].upper() + note[1:])}.</i>")
        self.show()
