"""Playback pacing: when to vocode and when to let the speaker start, so an answer plays without gaps.

The worker that owns the speaker (:mod:`engine.speech_out`) asks two questions while an answer
streams in, and :class:`Pacing` answers them from the times it is told about:

1. **Vocode what is pending now, or wait for a bigger chunk?** Bigger chunks cost less per unit,
   but the speaker must not run dry while the next one fills. After the first chunk, the configured
   chunk size (``ChunkingOptions.chunk_units``) is only a maximum: what is pending is vocoded at
   once when the audio still queued would not outlast the wait for a full chunk, the vocoder's own
   time and ``low_water_s`` (but never fewer units than the first chunk). When the model makes
   speech several times faster than it plays, the queue grows and chunks reach the maximum; when
   it barely keeps up, chunks stay small and the speaker never waits for a big one (the fixed
   10-then-40 chunking needed about 4x real time for that; this needs (first + look-ahead) / first,
   1.2x for the default 10 and 2).

2. **May the speaker start, or resume after running dry?** The production rate ``r`` is seconds of
   speech made per second (units arriving per second x seconds of audio per unit). If ``r`` is at
   least ``margin``, playback starts with the first chunk. If not, it would stop and start all
   answer long. A producer of constant rate ``r`` with ``R`` seconds of speech still to make and
   ``H`` seconds made but not yet played keeps the speaker fed to the end iff ``H >= R (1/r - 1)``,
   so the speaker waits until ``H >= R (margin/r - 1)``: one longer wait instead of a gap every
   chunk, and the turn is marked slow ("slow device"). ``R`` is unknown until the answer ends; it
   is estimated from the longest of the recent answers (``default_answer_s`` before the first), and if the
   speaker still runs dry the estimate doubles and the rule applies again (a rebuffer).

A turn's own rates are used once ``min_measure_s`` of it was measured, earlier turns' rates
before that. Nothing here reads a clock or touches a thread: the worker passes ``now``
(``time.perf_counter()``), and the tests drive it with simulated time.
"""

from __future__ import annotations

import statistics
from collections import deque
from dataclasses import dataclass

from engine.audio.resample import MODEL_SAMPLE_RATE_HZ


@dataclass(frozen=True, slots=True)
class PacingOptions:
    margin: float = 1.25  # speech must be made this much faster than it plays to start at once
    low_water_s: float = 0.06  # audio kept queued beyond the expected wait for the next chunk
    default_answer_s: float = 8.0  # expected answer length before any answer was heard
    min_measure_s: float = 0.4  # a turn's own rate decides whether it is slow after this much of it
    min_chunk_measure_s: float = 0.05  # ... and how large chunks may grow after this much
    remembered_turns: int = 5  # earlier turns whose rates and answer lengths inform the next one
    growth: float = 2.0  # the answer-length estimate grows by this factor when the speaker runs dry


@dataclass(slots=True)
class TurnPace:
    """What pacing did in one turn."""

    slow: bool = False  # the speaker was held back because speech was made slower than real time
    held_s: float = 0.0  # how long it was held back while audio was ready
    rebuffers: int = 0  # times it ran dry mid-answer and was held back again
    rate: float | None = None  # seconds of speech made per second (None: too short to tell)


class Pacing:
    """See the module docstring. One per speaker owner; one turn at a time."""

    def __init__(self, options: PacingOptions | None = None) -> None:
        self.options = options or PacingOptions()
        n = self.options.remembered_turns
        self._rates: deque[float] = deque(maxlen=n)  # speech s per s, per turn
        self._unit_s: deque[float] = deque(maxlen=n)  # speech s per unit, per turn
        self._answers_s: deque[float] = deque(maxlen=n)  # length of whole answers
        self._vocode_s = 0.0  # recent vocoder compute per chunk (moving average)
        self._begin_turn(0.0, 0, 0, 0)

    def _begin_turn(self, now: float, first_chunk_units: int, max_chunk_units: int, lookahead_units: int) -> None:
        self._min_chunk = first_chunk_units
        self._max_chunk = max_chunk_units
        self._lookahead = lookahead_units
        self._first_unit_at: float | None = None
        self._last_unit_at = now
        self._units_at_first = 0
        self._units = 0
        self._units_vocoded = 0
        self._samples = 0
        self._open = False
        self._held_since: float | None = None
        # The longest recent answer: a longer wait is better than a gap (the user hears the gap).
        self._answer_s = max(self._answers_s) if self._answers_s else self.options.default_answer_s
        self._pace = TurnPace()

    # ------------------------------------------------------------------------ what happened

    def begin(self, now: float, first_chunk_units: int, max_chunk_units: int, lookahead_units: int) -> None:
        """A turn starts: its first chunk has ``first_chunk_units``; later ones are no smaller and
        at most ``max_chunk_units``."""
        self._begin_turn(now, first_chunk_units, max_chunk_units, lookahead_units)

    def units_arrived(self, now: float, n: int) -> None:
        if n <= 0:
            return
        if self._first_unit_at is None:
            self._first_unit_at = now
            self._units_at_first = n
        self._units += n
        self._last_unit_at = now

    def vocoded(self, units: int, samples: int, compute_s: float) -> None:
        """A chunk covering ``units`` more units came out as ``samples`` (16 kHz) in ``compute_s``."""
        self._units_vocoded += units
        self._samples += samples
        self._vocode_s = compute_s if self._vocode_s == 0.0 else 0.5 * (self._vocode_s + compute_s)

    def ran_dry(self, now: float, produced_s: float) -> None:
        """The speaker's queue emptied before the answer ended: hold it back again, and expect a
        longer answer than estimated (the estimate was too short, or the rate dropped)."""
        self._close(now)
        self._pace.rebuffers += 1
        self._answer_s = max(self._answer_s, produced_s) * self.options.growth

    def end(self, now: float, produced_s: float, complete: bool) -> TurnPace:
        """The turn is over; remember its rates (and, if ``complete``, its length) for the next one."""
        self._close(now)
        rate = self._turn_rate(self._last_unit_at)
        self._pace.rate = rate
        if rate is not None:
            self._rates.append(rate)
        unit_s = self._unit_s_now()
        if unit_s is not None and self._units_vocoded:
            self._unit_s.append(unit_s)
        if complete and produced_s > 0.0:
            self._answers_s.append(produced_s)
        return self._pace

    # ---------------------------------------------------------------------------- decisions

    def chunk_units(self, now: float, pending_units: int, queued_s: float) -> int | None:
        """Units to vocode right now (all that is pending but the look-ahead), or None to wait.

        ``queued_s``: audio made but not played yet. Only after the first chunk (which keeps the
        configured size: the latency the user chose), never fewer units than it (small chunks
        cost the vocoder more per unit), and not while the speaker is held back (no hurry then).
        """
        available = pending_units - self._lookahead
        if self._units_vocoded == 0 or not self._open or not self._min_chunk <= available < self._max_chunk:
            return None
        rate = self._unit_rate(now, self.options.min_chunk_measure_s)
        if rate is None and self._rates and self._unit_s:  # early in the turn: as fast as the last ones
            rate = statistics.median(self._rates) / statistics.median(self._unit_s)
        missing = self._max_chunk + self._lookahead - pending_units
        full_chunk_in_s = missing / rate if rate else float("inf")
        if queued_s < full_chunk_in_s + self._vocode_s + self.options.low_water_s:
            return available
        return None

    def may_play(self, now: float, unplayed_s: float, produced_s: float) -> bool:
        """Whether the speaker may start (or resume) with ``unplayed_s`` of speech made and not
        heard, out of ``produced_s`` made so far in this turn."""
        if self._open:
            return True
        need = self.hold_needed_s(now, produced_s)
        if unplayed_s >= need:
            self._open = True
            if self._held_since is not None:
                self._pace.held_s += now - self._held_since
                self._held_since = None
            return True
        self._pace.slow = True
        if self._held_since is None:
            self._held_since = now
        return False

    def hold_needed_s(self, now: float, produced_s: float) -> float:
        """Speech to have ready before playing so that, at the current rate, it lasts to the end."""
        rate = self.rate(now)
        if rate is None or rate >= self.options.margin:
            return 0.0
        remaining_s = max(self._answer_s - produced_s, 0.0)
        return remaining_s * (self.options.margin / max(rate, 1e-3) - 1.0)

    def wait_s(self, now: float, unplayed_s: float, produced_s: float) -> float:
        """How much longer the speaker will be held back at the current rate (an estimate)."""
        rate = self.rate(now)
        if rate is None or rate >= self.options.margin:
            return 0.0
        # Held speech grows at ``rate`` while what is needed shrinks by (margin - rate) per second.
        return max(self.hold_needed_s(now, produced_s) - unplayed_s, 0.0) / self.options.margin

    def rate(self, now: float) -> float | None:
        """Seconds of speech made per second: this turn's once measured, else earlier turns'."""
        rate = self._turn_rate(now)
        if rate is not None:
            return rate
        return statistics.median(self._rates) if self._rates else None

    @property
    def pace(self) -> TurnPace:
        return self._pace

    # ------------------------------------------------------------------------------ helpers

    def _close(self, now: float) -> None:
        self._open = False
        if self._held_since is not None:
            self._pace.held_s += now - self._held_since
            self._held_since = None

    def _unit_s_now(self) -> float | None:
        if self._units_vocoded:
            return self._samples / self._units_vocoded / MODEL_SAMPLE_RATE_HZ
        return statistics.median(self._unit_s) if self._unit_s else None

    def _unit_rate(self, now: float, min_window_s: float | None = None) -> float | None:
        """Units per second since the first units of this turn (a pause counts: it is what the
        speaker waits through); None until ``min_window_s`` (``min_measure_s``) has passed."""
        first = self._first_unit_at
        window = self.options.min_measure_s if min_window_s is None else min_window_s
        if first is None or now - first < window:
            return None
        return (self._units - self._units_at_first) / (now - first)

    def _turn_rate(self, now: float) -> float | None:
        units_per_s = self._unit_rate(now)
        unit_s = self._unit_s_now()
        if units_per_s is None or unit_s is None:
            return None
        return units_per_s * unit_s
