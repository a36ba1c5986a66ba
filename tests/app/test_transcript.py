"""The transcript streams text without relayouting the window once per token."""

from __future__ import annotations

from pytestqt.qtbot import QtBot

from app.transcript import REFRESH_MS, TranscriptView
from engine.events import TurnFinished, TurnMetrics, TurnStarted


def _view(qtbot: QtBot) -> TranscriptView:
    view = TranscriptView()
    qtbot.addWidget(view)
    view.resize(500, 400)
    view.show()
    return view


def test_a_burst_of_tokens_is_shown_in_few_label_updates(qtbot: QtBot) -> None:
    view = _view(qtbot)
    card = view.start_turn(TurnStarted(1, "text", "Hi", 0.0))
    updates: list[str] = []

    card.refreshed.connect(lambda: updates.append(card.answer_label.text()))
    tokens = [f"word{i} " for i in range(200)]
    for token in tokens:
        view.append_text(1, token)
    assert card.answer_text == "".join(tokens)  # the model of the text is current at once
    assert card.answer_label.text() == "…"  # the label waits for the next refresh
    qtbot.waitUntil(lambda: card.answer_label.text() == "".join(tokens), timeout=REFRESH_MS * 20)
    assert len(updates) == 1  # 200 tokens, one relayout


def test_a_slow_stream_still_updates_live(qtbot: QtBot) -> None:
    view = _view(qtbot)
    card = view.start_turn(TurnStarted(1, "text", "Hi", 0.0))
    view.append_text(1, "First")
    qtbot.waitUntil(lambda: card.answer_label.text() == "First", timeout=REFRESH_MS * 20)
    view.append_text(1, " second")
    qtbot.waitUntil(lambda: card.answer_label.text() == "First second", timeout=REFRESH_MS * 20)


def test_finishing_shows_the_whole_answer_at_once(qtbot: QtBot) -> None:
    view = _view(qtbot)
    card = view.start_turn(TurnStarted(1, "text", "Hi", 0.0))
    view.append_text(1, "The last words.")
    view.finish_turn(TurnFinished(1, "The last words.", False, TurnMetrics(first_token_ms=120.0)))
    assert card.answer_label.text() == "The last words."  # no refresh pending after the turn ends
    assert "first word 120 ms" in card.note_label.text()


def test_model_text_is_shown_literally_not_as_markup(qtbot: QtBot) -> None:
    view = _view(qtbot)
    card = view.start_turn(TurnStarted(1, "text", "<i>typed</i>", 0.0))
    answer = "Use <b>bold</b> & a\nnew line"
    view.append_text(1, answer)
    view.finish_turn(TurnFinished(1, answer, False, TurnMetrics()))
    assert card.answer_label.text() == answer
    assert card.answer_label.textFormat().name == "PlainText"
    assert "&lt;i&gt;typed&lt;/i&gt;" in card.user_label.text()  # the user's text is escaped in its rich label


def test_an_empty_answer_says_so(qtbot: QtBot) -> None:
    view = _view(qtbot)
    card = view.start_turn(TurnStarted(1, "speech", "", 1.5))
    view.finish_turn(TurnFinished(1, "", False, TurnMetrics()))
    assert card.answer_label.text() == "(no answer)"
    assert "spoke for 1.5 s" in card.user_label.text()
