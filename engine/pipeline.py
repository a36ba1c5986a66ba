"""What the engine thread needs from a loaded model, as small typed pieces.

``ModelBackend.respond`` runs one user turn and yields, in order: ``Stage`` marks as the front end
finishes its steps (features, encoder, prefill), then one ``Step`` per generated text token with its
text delta and the speech units it produced. The engine times them, streams the text, and hands the
units to the vocoder worker. ``engine.omni_backend`` adapts the LLaMA-Omni model to this protocol.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from engine.events import EngineOptions, LoadModel


@dataclass(frozen=True, slots=True)
class TurnRequest:
    """One user turn: speech (float32 16 kHz mono) or typed text, and the options in force."""

    audio: np.ndarray | None
    text: str | None
    options: EngineOptions


@dataclass(frozen=True, slots=True)
class Stage:
    """A front-end step finished: ``features``, ``encoder`` or ``prefill``.

    ``at`` is the ``time.perf_counter()`` when it finished, for backends that report timings after
    the fact; None means "now".
    """

    name: str
    at: float | None = None


@dataclass(frozen=True, slots=True)
class Step:
    """One generated text token: its text (may be "" until a character completes) and new units."""

    text_delta: str
    units: tuple[int, ...]


class ModelBackend(Protocol):
    @property
    def summary(self) -> str: ...

    def respond(self, request: TurnRequest, should_stop: Callable[[], bool]) -> Iterator[Stage | Step]: ...

    def keep_spoken_prefix(self, n_tokens: int) -> None:
        """After an interruption: keep only the first ``n_tokens`` of the last answer in context."""

    def reset(self) -> None:
        """Forget the conversation."""

    def set_adapter(self, adapter: Path | None) -> str:
        """Apply a fine-tuned adapter (None: none) in place and forget the conversation; -> summary."""

    def close(self) -> None: ...


ProgressFn = Callable[[float, str], None]


@dataclass(slots=True)
class LoadedModel:
    """What LoadModel produces: the model and, when a vocoder folder was given, its runtime."""

    model: ModelBackend
    vocoder: object | None  # engine.vocoder.runtime.VocoderRuntime (kept loose: optional backend)


ModelLoader = Callable[[LoadModel, ProgressFn], LoadedModel]
