"""What a turn yields: one ``TokenStep`` per generated text token, then one ``TurnDone``.

Frozen, slotted dataclasses so they can cross threads safely (the engine thread forwards them).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

FinishReason = Literal["eos", "length", "cancelled", "context"]


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
class TurnDone:
    """End of a turn. ``text`` is the concatenation of all deltas (special tokens skipped).

    ``timings_ms`` keys: ``features`` (turn start to log-mel done) and ``encode`` (turn start to
    encoder + adapter done; both 0 for typed turns), ``prefill`` (duration), ``first_token`` (turn
    start to first token), ``decode`` (LLM steps after the first), ``units`` (unit decoder total),
    ``total``.
    """

    text: str
    token_ids: tuple[int, ...]
    units: tuple[int, ...]
    timings_ms: dict[str, float] = field(hash=False)
    n_tokens: int
    n_units: int
    finish_reason: FinishReason
    n_context_tokens: int  # context length after this turn (speech spans count their embeddings)
    n_dropped_turns: int  # oldest turns removed to make room for this one
    audio_truncated: bool = False  # the recording was longer than the encoder's 30 s window


TurnEvent = TokenStep | TurnDone
