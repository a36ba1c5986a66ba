"""The wizard's words: page titles, the controls' labels, and what a failed run tells the user.

A failure from the subprocess names the wizard's own controls ("go Back to Options and choose a
smaller LoRA rank"), not the command line's flags; anything this module has no words for gets the
app's common words (app/error_words.py).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from app.error_words import ErrorWords, describe
from engine.errors import Reason

WIZARD_TITLE = "New fine-tune"
DATA_PAGE = "Your questions and answers"
CHECK_PAGE = "Check the data"
OPTIONS_PAGE = "Options"
TRAIN_PAGE = "Training"
RESULTS_PAGE = "Results"
FINISH_PAGE = "Name it"
ADVANCED_BOX = "Advanced"
RANK_ROW = "LoRA rank"
LR_ROW = "Learning rate"
EPOCHS_ROW = "Passes over the data"
STAGE_ROW = "What to train"
RESUME_BUTTON = "Resume"
START_AGAIN_BUTTON = "Start again"
CANCEL_TRAINING_BUTTON = "Stop training"
ADD_FILE_BUTTON = "Add a file…"
ADD_FOLDER_BUTTON = "Add a folder…"
QUICK_PRESET = "Quick"
THOROUGH_PRESET = "Thorough"

BACK_TO_OPTIONS = f"go Back to “{OPTIONS_PAGE}”"
BACK_TO_DATA = f"go Back to “{DATA_PAGE}”"
GO_BACK_TO_OPTIONS = f"Go Back to “{OPTIONS_PAGE}”"

_FIX_BY_REASON: dict[Reason, str] = {
    Reason.TRAINING_MEMORY_SHORT: (
        f"Close other programs, or {BACK_TO_OPTIONS} and choose a smaller {RANK_ROW} under {ADVANCED_BOX}, "
        "or shorten the longest answers."
    ),
    Reason.TRAINING_DISK_FULL: f"Free some disk space, then press {RESUME_BUTTON}.",
    Reason.TRAINING_DIVERGED: f"{GO_BACK_TO_OPTIONS} and lower the {LR_ROW} under {ADVANCED_BOX}.",
    Reason.RESUME_IMPOSSIBLE: f"Press {START_AGAIN_BUTTON}.",
    Reason.QUANTIZED_UNIT_DECODER: f"{GO_BACK_TO_OPTIONS} and train text answers only.",
}
OUT_OF_MEMORY_FIX = (
    f"Close other programs using the memory, or {BACK_TO_OPTIONS} and choose a smaller {RANK_ROW} "
    f"under {ADVANCED_BOX}, then press {RESUME_BUTTON}."
)
BAD_DATA_FIX = f"Go Back to “{DATA_PAGE}” and fix or remove the pairs the check lists."
CRASH_WORDS = ErrorWords(
    "Training stopped unexpectedly",
    "The training program ended without finishing.",
    f"Press {RESUME_BUTTON} to continue from the last saved step. Details are in Help → Show logs.",
)


def error_words(error: Mapping[str, Any] | None) -> ErrorWords:
    """Words for the child's ``error`` event (None: it died without one)."""
    if error is None:
        return CRASH_WORDS
    reason_value = error.get("reason")
    try:
        reason = Reason(reason_value) if reason_value else None
    except ValueError:
        reason = None
    kind = str(error.get("kind", "internal"))
    path = Path(error["path"]) if error.get("path") else None
    facts = error.get("facts") if isinstance(error.get("facts"), dict) else {}
    words = describe(kind, str(error.get("message", "")), fix=error.get("fix"), reason=reason, path=path, facts=facts)
    if kind == "out_of_memory":
        return ErrorWords("Not enough memory to train", words.text, OUT_OF_MEMORY_FIX, path)
    if kind == "cancelled":
        return ErrorWords("Training stopped", "You stopped the training.", f"Press {RESUME_BUTTON} to continue.")
    if reason in _FIX_BY_REASON:
        return ErrorWords(words.title, words.text, _FIX_BY_REASON[reason], path)
    if kind == "bad_input" and reason is None:
        return ErrorWords(words.title, words.text, BAD_DATA_FIX, path)
    if kind == "internal":
        return ErrorWords(words.title, "The training program failed.", "Details are in Help → Show logs.", None)
    return words
