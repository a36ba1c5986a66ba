"""The one vocabulary for what a turn yields, from the model up to the engine thread.

A turn yields, in order: a ``StageDone`` as each front-end stage finishes (``features`` and
``encoder`` for speech, then ``prefill``), one ``TokenStep`` per generated text token, then one
``TurnDone``. Stage marks carry the ``time.perf_counter()`` at which the stage ended and are
yielded right then, so an interrupted turn still has the marks of the stages it finished.

Frozen, slotted dataclasses so they can cross threads safely (the engine thread forwards them).
The engine's public ``TurnMetrics`` (engine.events) uses the same stage names.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from enum import Enum
from typing import Literal

FinishReason = Literal["eos", "length", "cancelled", "context"]


class Stage(str, Enum):
    FEATURES = "features"  # log-mel spectrogram computed (speech turns)
    ENCODER = "encoder"  # speech encoder + adapter done (speech turns)
    PREFILL = "prefill"  # the prompt is in the KV cache: the first token comes next


@dataclass(frozen=True, slots=True)
class StageDone:
    stage: Stage
    at: float  # time.perf_counter() when the stage finished


@dataclass(frozen=True, slots=True)
class TokenStep:
    """One text token: its text delta (may be "" while a character is incomplete) and new units.

    ``new_units`` are the speech units (0..unit_vocab_size-1) this token's decoder frames added
    after CTC collapse; concatenated over the turn they equal ``TurnDone.units``.
    """

    text_delta: str
    token_id: int
    new_units: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class TurnTimings:
    """Where a turn's time went, in ms. Marks are from the turn's start; the rest are durations."""

    features_ms: float = 0.0  # mark: log-mel done (0 for typed turns)
    encoder_ms: float = 0.0  # mark: encoder + adapter done (0 for typed turns)
    prefill_ms: float = 0.0  # duration of the prefill
    first_token_ms: float = 0.0  # mark: first token picked
    decode_ms: float = 0.0  # duration of the LLM steps after the first token
    units_ms: float = 0.0  # duration of the unit decoder, all tokens
    total_ms: float = 0.0  # mark: the turn ended

    def as_dict(self) -> dict[str, float]:
        """``{"features": ..., "encoder": ..., ...}`` rounded to µs, for JSON output."""
        return {f.name.removesuffix("_ms"): round(getattr(self, f.name), 3) for f in fields(self)}


@dataclass(frozen=True, slots=True)
class TurnDone:
    """End of a turn. ``text`` is the concatenation of all deltas (special tokens skipped)."""

    text: str
    token_ids: tuple[int, ...]
    units: tuple[int, ...]
    timings: TurnTimings
    n_tokens: int
    n_units: int
    finish_reason: FinishReason
    n_context_tokens: int  # context length after this turn (speech spans count their embeddings)
    n_dropped_turns: int  # oldest turns removed to make room for this one
    audio_truncated: bool = False  # the recording was longer than the encoder's 30 s window


TurnEvent = StageDone | TokenStep | TurnDone
