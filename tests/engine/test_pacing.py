"""Pacing decisions on simulated time: no gaps once playback started when speech is made fast enough
on average, one wait instead of many gaps when it is not, and the first chunk never delayed."""

from __future__ import annotations

import random
from dataclasses import dataclass, field

import pytest

from engine.audio.pacing import Pacing, PacingOptions
from engine.audio.resample import MODEL_SAMPLE_RATE_HZ

DT_S = 0.005  # simulation step
UNIT_S = 0.04  # seconds of speech per unit (the tiny vocoder's figure)
FIRST, MAX, LOOKAHEAD = 10, 40, 2  # the engine's default chunking


@dataclass
class Outcome:
    first_audio_s: float | None = None
    first_chunk_s: float | None = None
    gaps: int = 0
    gap_s: float = 0.0
    held_s: float = 0.0
    slow: bool = False
    wait_estimate_s: float | None = None  # what the worker would announce when it first holds back
    chunks: list[int] = field(default_factory=list)


def simulate(arrivals: list[float], pacing: Pacing | None, vocode_s: float = 0.002) -> Outcome:
    """One answer whose units arrive at ``arrivals`` (seconds), vocoded like the worker does, played
    in real time. ``pacing=None``: the fixed chunking and play-as-it-comes the engine had before."""
    out = Outcome()
    n_units = len(arrivals)
    if pacing is not None:
        pacing.begin(0.0, FIRST, MAX, LOOKAHEAD)
    received = vocoded = 0
    held = queue = produced = 0.0  # seconds of speech: made but not written, written but not played
    gap_open, gap_len = False, 0.0
    now = 0.0
    while True:
        ended = received == n_units
        arrived = 0
        while received < n_units and arrivals[received] <= now:
            received += 1
            arrived += 1
        if pacing is not None and arrived:
            pacing.units_arrived(now, arrived)
        pending = received - vocoded
        todo = 0
        if received == n_units and pending:
            todo = pending  # the end of the answer: flush
        elif pending >= (FIRST if vocoded == 0 else MAX) + LOOKAHEAD:
            todo = FIRST if vocoded == 0 else MAX
        elif pacing is not None:
            todo = pacing.chunk_units(now, pending, held + queue) or 0
        if todo:
            out.chunks.append(todo)
            vocoded += todo
            held += todo * UNIT_S
            produced += todo * UNIT_S
            if out.first_chunk_s is None:
                out.first_chunk_s = now
            if pacing is not None:
                pacing.vocoded(todo, round(todo * UNIT_S * MODEL_SAMPLE_RATE_HZ), vocode_s)
        answer_over = received == n_units and vocoded == n_units
        if held > 0 and (pacing is None or answer_over or pacing.may_play(now, held + queue, produced)):
            queue += held
            held = 0.0
        elif held > 0 and pacing is not None and out.wait_estimate_s is None:
            out.wait_estimate_s = pacing.wait_s(now, held + queue, produced)
        # the speaker plays one step
        if queue > 1e-9:
            if out.first_audio_s is None:
                out.first_audio_s = now
            if gap_open:
                out.gaps += 1
                out.gap_s += gap_len
                gap_open = False
            queue = max(0.0, queue - DT_S)
            if queue <= 1e-9 and not (answer_over and held == 0):
                gap_open, gap_len = True, 0.0
                if pacing is not None:
                    pacing.ran_dry(now, produced)
        elif gap_open:
            gap_len += DT_S
        if answer_over and held == 0 and queue <= 1e-9 and ended:
            break
        now += DT_S
        assert now < 600, "the simulated answer never ended"
    if pacing is not None:
        pace = pacing.end(now, produced, complete=True)
        out.held_s, out.slow = pace.held_s, pace.slow
    return out


def steady(n_units: int, units_per_s: float, start_s: float = 0.1, jitter: float = 0.0, seed: int = 0) -> list[float]:
    """Unit arrival times at a steady rate, each step randomly +-``jitter`` of its interval."""
    rng = random.Random(seed)
    t, times = start_s, []
    for _ in range(n_units):
        t += (1.0 / units_per_s) * (1.0 + rng.uniform(-jitter, jitter))
        times.append(t)
    return times


def test_fast_speech_plays_as_it_comes_with_the_first_chunk_undelayed() -> None:
    arrivals = steady(120, units_per_s=250.0)  # 10x real time
    paced = simulate(arrivals, Pacing())
    assert paced.gaps == 0 and paced.held_s == 0.0 and not paced.slow
    assert paced.first_audio_s == paced.first_chunk_s  # nothing waits in front of the first chunk
    assert paced.chunks[0] == FIRST and max(paced.chunks) == MAX  # a big queue lets chunks grow to the maximum


@pytest.mark.parametrize("seed", range(5))
def test_speech_that_barely_keeps_up_plays_without_gaps(seed: int) -> None:
    """1.5x real time with jittery tokens: the fixed 10-then-40 chunking runs dry after the first
    chunk (a 40-unit chunk takes longer to fill than 10 units take to play); pacing does not."""
    arrivals = steady(150, units_per_s=1.5 / UNIT_S, jitter=0.5, seed=seed)
    fixed = simulate(arrivals, None)
    assert fixed.gaps >= 1  # the situation the issue describes
    paced = simulate(arrivals, Pacing())
    assert paced.gaps == 0
    assert paced.first_audio_s == paced.first_chunk_s and not paced.slow


def test_a_pause_in_generation_is_covered_by_vocoding_what_is_pending() -> None:
    """The model stalls for 0.3 s mid-answer (a busy PC): what was pending is vocoded in time."""
    arrivals = steady(60, units_per_s=100.0)
    arrivals += [t + 0.3 for t in steady(60, units_per_s=100.0, start_s=arrivals[-1])]
    assert simulate(arrivals, Pacing()).gaps == 0


def test_slow_speech_waits_once_instead_of_stopping_and_starting() -> None:
    """0.6x real time. The first answer on this PC is measured as it plays (a few gaps at most, each
    wait longer than the last); the next answers of similar length wait once and play through."""
    pacing = Pacing()
    arrivals = steady(150, units_per_s=0.6 / UNIT_S, jitter=0.2)
    unpaced = simulate(arrivals, None)
    first = simulate(arrivals, pacing)
    assert unpaced.gaps >= 3  # without pacing: a gap after every chunk
    assert first.gaps <= 2 and first.slow
    for seed in (1, 2):
        again = simulate(steady(150, units_per_s=0.6 / UNIT_S, jitter=0.2, seed=seed), pacing)
        assert again.gaps == 0 and again.slow
        assert again.first_audio_s is not None and again.first_chunk_s is not None
        assert again.held_s > 1.0 and again.first_audio_s > again.first_chunk_s


def test_the_announced_wait_matches_the_wait() -> None:
    """The SlowDevice event's ``wait_s`` comes from ``wait_s`` when the speaker is first held back."""
    pacing = Pacing()
    simulate(steady(150, units_per_s=0.6 / UNIT_S), pacing)  # learn this PC's rate and answer length
    again = simulate(steady(150, units_per_s=0.6 / UNIT_S, seed=3), pacing)
    assert again.wait_estimate_s is not None
    assert again.wait_estimate_s == pytest.approx(again.held_s, rel=0.3)


def test_options_margin_is_respected() -> None:
    """Speech made at 1.1x real time is not enough for a margin of 1.25: the speaker waits a little;
    with a margin of 1.05 it plays at once."""
    arrivals = steady(150, units_per_s=1.1 / UNIT_S)
    strict = Pacing(PacingOptions(margin=1.25))
    simulate(arrivals, strict)
    assert simulate(arrivals, strict).slow
    relaxed = Pacing(PacingOptions(margin=1.05))
    simulate(arrivals, relaxed)
    assert not simulate(arrivals, relaxed).slow
