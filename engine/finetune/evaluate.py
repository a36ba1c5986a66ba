"""Before/after evaluation: greedy answers on the held-out pairs (exact match, WER), unit error rate
of the unit decoder on held-out answer speech, and a "did it forget?" check on general questions.

Answers come from the same ``Conversation`` the app uses (a fresh one per question), so what is
measured is what the user will get. The forget check is reported, not judged: an adapter is
meant to change some answers, and the user decides whether the changes matter.
"""

from __future__ import annotations

import re
import string
from collections.abc import Callable, Sequence
from typing import Any

import torch

from engine.audio.resample import MODEL_SAMPLE_RATE_HZ, resample
from engine.config import ConversationOptions, DecodeOptions
from engine.errors import Cancelled
from engine.finetune.data import DataItem, load_question_audio
from engine.finetune.examples import Example, answer_ids, answer_states, edit_distance
from engine.model.events import TurnDone
from engine.model.omni import OmniModel
from engine.model.unit_decoder import units_offline

FORGET_QUESTIONS = (
    "What is the capital of France?",
    "How many days are there in a week?",
    "Tell me a short joke.",
)
FORGET_MAX_TOKENS = 48
ANSWER_SLACK_TOKENS = 8  # generate a little past the target so a right answer ends with <|eot_id|>
_PUNCT = re.compile(f"[{re.escape(string.punctuation)}]")


def normalize(text: str) -> str:
    return " ".join(text.split())


def words(text: str) -> list[str]:
    return _PUNCT.sub(" ", text.lower()).split()


def word_error_rate(reference: str, hypothesis: str) -> float:
    ref = words(reference)
    return edit_distance(ref, words(hypothesis)) / max(1, len(ref))


def greedy_answer(
    model: OmniModel, item: DataItem | str, *, max_new_tokens: int, options: ConversationOptions | None = None
) -> str:
    """The app's answer to a spoken/typed item (or a plain typed question), greedy, fresh context."""
    chat = model.conversation(options)
    decode = DecodeOptions(max_new_tokens=max_new_tokens)
    if isinstance(item, str):
        events = chat.respond_text(item, decode=decode)
    elif item.spoken:
        audio, rate = load_question_audio(item)
        events = chat.respond_speech(resample(audio, rate, MODEL_SAMPLE_RATE_HZ), decode=decode)
    else:
        events = chat.respond_text(item.question_text or "", decode=decode)
    done = [e for e in events if isinstance(e, TurnDone)]
    return done[-1].text if done else ""


StopCheck = Callable[[], bool]


def _never() -> bool:
    return False


def _check_stop(should_stop: StopCheck) -> None:
    if should_stop():
        raise Cancelled("Stopped during the evaluation; resume with --resume.")


def evaluate_answers(
    model: OmniModel,
    items: Sequence[DataItem],
    options: ConversationOptions | None = None,
    should_stop: StopCheck = _never,
) -> dict[str, Any]:
    rows: list[dict[str, Any]] = []
    for item in items:
        _check_stop(should_stop)
        budget = len(answer_ids(model, item.answer)) + ANSWER_SLACK_TOKENS
        answer = greedy_answer(model, item, max_new_tokens=budget, options=options)
        rows.append(
            {
                "id": item.id,
                "target": item.answer,
                "answer": answer,
                "exact": normalize(answer) == normalize(item.answer),
                "wer": round(word_error_rate(item.answer, answer), 4),
            }
        )
    n = len(rows)
    return {
        "n": n,
        "exact_match": round(sum(r["exact"] for r in rows) / n, 4) if n else None,
        "wer": round(sum(r["wer"] for r in rows) / n, 4) if n else None,
        "answers": rows,
    }


@torch.no_grad()
def evaluate_units(model: OmniModel, examples: Sequence[Example], should_stop: StopCheck = _never) -> dict[str, Any]:
    """Unit error rate of the decoder on teacher-forced answers: edit distance / target units."""
    rows: list[dict[str, Any]] = []
    for ex in examples:
        _check_stop(should_stop)
        if not ex.units:
            continue
        predicted = units_offline(model.unit_decoder, answer_states(model, ex).to(model.device))
        rows.append({"id": ex.item_id, "uer": round(edit_distance(list(ex.units), predicted) / len(ex.units), 4)})
    n = len(rows)
    return {"n": n, "unit_error_rate": round(sum(r["uer"] for r in rows) / n, 4) if n else None, "items": rows}


def forget_check(
    model: OmniModel, before: dict[str, str] | None = None, should_stop: StopCheck = _never
) -> dict[str, Any]:
    """Greedy answers to ``FORGET_QUESTIONS``; with ``before``, whether each changed."""
    rows: list[dict[str, Any]] = []
    for question in FORGET_QUESTIONS:
        _check_stop(should_stop)
        answer = greedy_answer(model, question, max_new_tokens=FORGET_MAX_TOKENS)
        row: dict[str, Any] = {"question": question, "answer": answer}
        if before is not None:
            row["before"] = before.get(question, "")
            row["changed"] = normalize(row["before"]) != normalize(answer)
        rows.append(row)
    result: dict[str, Any] = {"questions": rows}
    if before is not None:
        result["changed"] = sum(r["changed"] for r in rows)
    return result
