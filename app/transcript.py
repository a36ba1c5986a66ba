"""The live transcript: one card per turn, the assistant's text streaming in, replay and copy per answer.

Streaming cost is bounded: each text delta only extends the card's string; the label is refreshed
at most every ``REFRESH_MS`` (25 times a second looks live), and as plain text, so a fast model
does not relayout and repaint the window once per token (measured by ``bench/bench_ui.py``).

Text wraps anywhere, never scrolls sideways: a long unbroken run (a URL, a hash, a model's
runaway token) gets zero-width break opportunities, so a card is never wider than the view and
its Replay / Copy buttons stay on screen. Copy copies the text as it came.
"""

from __future__ import annotations

import re

import numpy as np
from PySide6.QtCore import Qt, QTimer, Signal
from PySide6.QtGui import QGuiApplication
from PySide6.QtWidgets import (
    QFrame,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QScrollArea,
    QSizePolicy,
    QVBoxLayout,
    QWidget,
)

from app.error_words import NO_SPEAKER_NOTE
from engine.events import TurnFinished, TurnStarted

REFRESH_MS = 40
BREAK_AFTER_CHARS = 20  # a run without spaces longer than this gets break opportunities
ZERO_WIDTH_SPACE = "\u200b"
_LONG_RUN = re.compile(rf"\S{{{BREAK_AFTER_CHARS},}}")


def wrap_anywhere(text: str) -> str:
    """``text`` with a zero-width space after every character of long unbroken runs (display only)."""
    return _LONG_RUN.sub(lambda m: ZERO_WIDTH_SPACE.join(m.group(0)), text)


class TurnCard(QFrame):
    """A user turn and the assistant's answer to it."""

    replayRequested = Signal(object)  # float32 pcm at 16 kHz
    refreshed = Signal()  # the answer label now shows the latest text

    def __init__(self, started: TurnStarted, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.turn_id = started.turn_id
        self.setObjectName("turnCard")
        self.setFrameShape(QFrame.Shape.StyledPanel)
        self._audio: list[np.ndarray] = []
        self._question_audio = started.user_audio
        self.text_only = False  # the answer could not be spoken (no speaker)

        if started.source == "text":
            user = f"<b>You</b> (typed): {_escape(wrap_anywhere(started.user_text))}"
        else:
            user = f"<b>You</b> spoke for {started.speech_s:.1f} s"
        self.user_label = QLabel(user)
        self.user_label.setWordWrap(True)
        self.answer_label = QLabel("…")
        self.answer_label.setTextFormat(Qt.TextFormat.PlainText)  # model text is never markup
        self.answer_label.setObjectName("answer")
        self.answer_label.setWordWrap(True)
        self.answer_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.answer_label.setSizePolicy(QSizePolicy.Policy.Preferred, QSizePolicy.Policy.Minimum)
        self.note_label = QLabel("")
        self.note_label.setObjectName("note")
        self.note_label.setWordWrap(True)
        self.replay_button = QPushButton("Replay answer")
        self.replay_button.setEnabled(False)
        self.replay_button.clicked.connect(lambda: self.replayRequested.emit(self.answer_audio()))
        self.replay_question_button = QPushButton("Replay question")
        self.replay_question_button.setVisible(self._question_audio is not None)
        self.replay_question_button.clicked.connect(lambda: self.replayRequested.emit(self._question_audio))
        self.copy_button = QPushButton("Copy")
        self.copy_button.clicked.connect(self.copy_answer)

        buttons = QHBoxLayout()
        buttons.addWidget(self.note_label, 1)
        buttons.addWidget(self.replay_question_button)
        buttons.addWidget(self.replay_button)
        buttons.addWidget(self.copy_button)
        layout = QVBoxLayout(self)
        layout.addWidget(self.user_label)
        layout.addWidget(self.answer_label)
        layout.addLayout(buttons)
        self._text = ""
        self._refresh = QTimer(self)
        self._refresh.setSingleShot(True)
        self._refresh.setInterval(REFRESH_MS)
        self._refresh.timeout.connect(self._show_text)

    @property
    def answer_text(self) -> str:
        return self._text

    def append_text(self, delta: str) -> None:
        self._text += delta
        if not self._refresh.isActive():
            self._refresh.start()

    def _show_text(self) -> None:
        self._refresh.stop()
        self.answer_label.setText(wrap_anywhere(self._text) or "…")
        self.refreshed.emit()

    def append_audio(self, pcm: np.ndarray) -> None:
        self._audio.append(pcm)
        self.replay_button.setEnabled(True)

    def answer_audio(self) -> np.ndarray:
        return np.concatenate(self._audio) if self._audio else np.zeros(0, np.float32)

    def mark_text_only(self) -> None:
        self.text_only = True
        if not self.note_label.text():
            self.note_label.setText(NO_SPEAKER_NOTE)

    def finish(self, finished: TurnFinished) -> None:
        m = finished.metrics
        parts = [NO_SPEAKER_NOTE] if self.text_only else []
        if finished.interrupted:
            parts.append("interrupted")
        if m.first_audio_ms is not None:
            parts.append(f"first audio {m.first_audio_ms:.0f} ms")
        elif m.first_token_ms is not None:
            parts.append(f"first word {m.first_token_ms:.0f} ms")
        if m.tokens_per_s:
            parts.append(f"{m.tokens_per_s:.1f} tokens/s")
        self.note_label.setText(" · ".join(parts))
        if self._text:
            self._show_text()
        else:
            self._refresh.stop()
            self.answer_label.setText("(no answer)")

    def copy_answer(self) -> None:
        QGuiApplication.clipboard().setText(self._text)


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


class TranscriptView(QScrollArea):
    """Scrolling list of TurnCards; follows the newest text unless the user scrolled up."""

    replayRequested = Signal(object)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("transcript")
        self.setWidgetResizable(True)
        self.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)  # text wraps instead
        self._inner = QWidget()
        self._layout = QVBoxLayout(self._inner)
        self._layout.setAlignment(Qt.AlignmentFlag.AlignTop)
        self.placeholder = QLabel("Your conversation appears here.")
        self.placeholder.setObjectName("placeholder")
        self._layout.addWidget(self.placeholder)
        self.setWidget(self._inner)
        self.cards: dict[int, TurnCard] = {}

    def start_turn(self, started: TurnStarted) -> TurnCard:
        self.placeholder.hide()
        card = TurnCard(started)
        card.replayRequested.connect(self.replayRequested)
        card.refreshed.connect(self._follow)
        self.cards[started.turn_id] = card
        self._layout.addWidget(card)
        self._follow()
        return card

    def append_text(self, turn_id: int, delta: str) -> None:
        card = self.cards.get(turn_id)
        if card is not None:
            card.append_text(delta)

    def append_audio(self, turn_id: int, pcm: np.ndarray) -> None:
        card = self.cards.get(turn_id)
        if card is not None:
            card.append_audio(pcm)

    def mark_text_only(self, turn_id: int) -> None:
        card = self.cards.get(turn_id)
        if card is not None:
            card.mark_text_only()

    def finish_turn(self, finished: TurnFinished) -> None:
        card = self.cards.get(finished.turn_id)
        if card is not None:
            card.finish(finished)

    def clear(self) -> None:
        for card in self.cards.values():
            card.deleteLater()
        self.cards.clear()
        self.placeholder.show()

    def _follow(self) -> None:
        bar = self.verticalScrollBar()
        if bar.value() >= bar.maximum() - 40:  # at (or near) the bottom: keep following
            # Context object: the call is dropped if the view is gone by then (window closed).
            QTimer.singleShot(0, bar, lambda: bar.setValue(bar.maximum()))
