"""Timing wrappers around the loaded model and vocoder, so a turn's compute can be told from our overhead.

``TimedBackend`` wraps the ``ModelBackend`` that ``load_omni`` returns: the time spent inside the
model's generator (features, encoder, prefill and each token with its units) is model compute;
the time between its yields belongs to the engine thread. ``TimedVocoder`` wraps the vocoder
runtime and records every ``predict_durations`` / ``generate`` call the vocoder worker makes.
Both pass everything through unchanged.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from engine.model.events import StageDone, TokenStep, TurnEvent
from engine.pipeline import ModelBackend, TurnRequest
from engine.vocoder.runtime import VocoderRuntime


@dataclass(frozen=True, slots=True)
class StepTiming:
    """One token step of the model: perf_counter when its computation started and ended, its units."""

    started: float
    ended: float
    n_units: int

    @property
    def seconds(self) -> float:
        return self.ended - self.started


@dataclass(frozen=True, slots=True)
class VocoderCall:
    kind: str  # "durations" | "generate"
    started: float
    ended: float

    @property
    def seconds(self) -> float:
        return self.ended - self.started


class TimedBackend:
    """A ``ModelBackend`` that times the wrapped backend's turns (one turn at a time, engine thread)."""

    def __init__(self, inner: ModelBackend) -> None:
        self.inner = inner
        self.steps: list[StepTiming] = []
        self.stages: dict[str, float] = {}  # Stage value -> perf_counter when it ended
        self.started_at: float | None = None  # the engine asked for the first step

    @property
    def summary(self) -> str:
        return self.inner.summary

    def respond(self, request: TurnRequest, should_stop: Callable[[], bool]) -> Iterator[TurnEvent]:
        self.steps = []
        self.stages = {}
        self.started_at = None
        return self._timed(self.inner.respond(request, should_stop))

    def _timed(self, events: Iterator[TurnEvent]) -> Iterator[TurnEvent]:
        self.started_at = time.perf_counter()
        try:
            while True:
                started = time.perf_counter()
                try:
                    out = next(events)
                except StopIteration:
                    return
                ended = time.perf_counter()
                if isinstance(out, TokenStep):
                    self.steps.append(StepTiming(started, ended, len(out.new_units)))
                elif isinstance(out, StageDone):
                    self.stages[out.stage.value] = out.at
                yield out
        finally:
            close = getattr(events, "close", None)
            if close is not None:
                close()

    def keep_spoken_prefix(self, n_tokens: int) -> None:
        self.inner.keep_spoken_prefix(n_tokens)

    def reset(self) -> None:
        self.inner.reset()

    def set_adapter(self, adapter: Path | None) -> str:
        return self.inner.set_adapter(adapter)

    def close(self) -> None:
        self.inner.close()


class TimedVocoder(VocoderRuntime):
    """A ``VocoderRuntime`` that records the wrapped runtime's calls (vocoder worker thread)."""

    def __init__(self, inner: VocoderRuntime) -> None:
        super().__init__(inner.config, inner.device, inner.providers)
        self.inner = inner
        self.backend = inner.backend
        self.calls: list[VocoderCall] = []

    def predict_durations(self, units: np.ndarray) -> np.ndarray:
        started = time.perf_counter()
        out = self.inner.predict_durations(units)
        self.calls.append(VocoderCall("durations", started, time.perf_counter()))
        return out

    def generate(self, frame_units: np.ndarray) -> np.ndarray:
        started = time.perf_counter()
        out = self.inner.generate(frame_units)
        self.calls.append(VocoderCall("generate", started, time.perf_counter()))
        return out

    def calls_since(self, t: float) -> Sequence[VocoderCall]:
        return [c for c in list(self.calls) if c.started >= t]

    def close(self) -> None:
        self.inner.close()

    def __repr__(self) -> str:
        return f"TimedVocoder({self.inner!r})"
