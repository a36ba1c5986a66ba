"""Helpers to drive the engine thread in tests: a scripted model and a loader with a real tiny vocoder."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from engine.events import LoadModel
from engine.model.events import Stage, StageDone, TokenStep, TurnEvent
from engine.pipeline import LoadedModel, TurnRequest
from engine.vocoder.api import load_vocoder_runtime
from engine.vocoder.checkpoint import write_tiny_vocoder

ANSWER = [
    ("The", (5, 7, 9)),
    (" capital", (9, 11, 13, 15)),
    (" is", (17,)),
    (" Paris", (19, 21, 23, 25)),
    (".", (27, 29)),
    ("", ()),
]


@dataclass
class ScriptedModel:
    """A ModelBackend that answers every turn with ``steps`` (text delta, units), ``step_s`` apart."""

    steps: list[tuple[str, tuple[int, ...]]] = field(default_factory=lambda: list(ANSWER))
    step_s: float = 0.0
    requests: list[TurnRequest] = field(default_factory=list)
    kept_prefix: list[int] = field(default_factory=list)
    resets: int = 0
    yield_times: list[float] = field(default_factory=list)  # perf_counter of every Step handed out
    closed: bool = False
    adapters: list[Path | None] = field(default_factory=list)

    @property
    def summary(self) -> str:
        return "scripted test model"

    def respond(self, request: TurnRequest, should_stop: Callable[[], bool]) -> Iterator[TurnEvent]:
        self.requests.append(request)
        for stage in Stage:
            yield StageDone(stage, time.perf_counter())
        for i, (text, units) in enumerate(self.steps):
            if should_stop():
                return
            if self.step_s:
                time.sleep(self.step_s)
            self.yield_times.append(time.perf_counter())
            yield TokenStep(text, i, units)

    def keep_spoken_prefix(self, n_tokens: int) -> None:
        self.kept_prefix.append(n_tokens)

    def reset(self) -> None:
        self.resets += 1

    def set_adapter(self, adapter: Path | None) -> str:
        self.adapters.append(adapter)
        self.resets += 1
        return f"{self.summary} + {adapter.name if adapter else 'no adapter'}"

    def close(self) -> None:
        self.closed = True


def tiny_vocoder_loader(folder: Path, model: ScriptedModel) -> Callable[[LoadModel, Callable], LoadedModel]:
    """A model loader giving the scripted model and a real tiny vocoder (PyTorch runtime)."""
    vocoder_dir = write_tiny_vocoder(folder / "vocoder")

    def load(command: LoadModel, progress: Callable[[float, str], None]) -> LoadedModel:
        progress(0.5, "loading scripted model")
        runtime = load_vocoder_runtime(vocoder_dir, device="cpu", backend="torch")
        progress(1.0, "done")
        return LoadedModel(model=model, vocoder=runtime)

    return load
