"""One turn, from the user's request to the last sample heard, and what it needs from a model.

``run_turn`` runs on the engine thread. The model (``ModelBackend.respond``) yields the turn
vocabulary of :mod:`engine.model.events`: ``StageDone`` marks as the front end finishes
(features, encoder, prefill), one ``TokenStep`` per text token with the speech units it produced,
and a final ``TurnDone``. The turn streams the text as ``TextDelta`` events, hands the units to the
speaker's owner (:class:`engine.speech_out.SpeechOutput`, whose worker vocodes and plays them),
waits for the answer to be heard, and ends with ``TurnFinished`` and its ``TurnMetrics``.

Cancellation: ``TurnContext.is_current()`` turns False when the user presses the key again or
stops (the engine's cancel generation moved on; the speaker was already silenced by then). The
turn stops at the next token, and the model keeps in its context only what the user heard.

``engine.omni_backend`` adapts the LLaMA-Omni model to ``ModelBackend``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from engine.audio.resample import MODEL_SAMPLE_RATE_HZ
from engine.errors import AudioDeviceError, EngineError
from engine.events import (
    EngineOptions,
    EngineState,
    Event,
    Failed,
    LoadModel,
    ModelInfo,
    TextDelta,
    TurnFinished,
    TurnMetrics,
    TurnStarted,
)
from engine.model.events import Stage, StageDone, TokenStep, TurnEvent
from engine.speech_out import SpeechOutput, TurnAudio
from engine.vocoder.runtime import VocoderRuntime

logger = logging.getLogger(__name__)

PLAYBACK_DRAIN_TIMEOUT_S = 120.0
_POLL_S = 0.02


@dataclass(frozen=True, slots=True)
class TurnRequest:
    """One user turn: speech (float32 16 kHz mono) or typed text, and the options in force."""

    audio: np.ndarray | None
    text: str | None
    options: EngineOptions


class ModelBackend(Protocol):
    @property
    def summary(self) -> str: ...

    def respond(self, request: TurnRequest, should_stop: Callable[[], bool]) -> Iterator[TurnEvent]: ...

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
    vocoder: VocoderRuntime | None
    info: ModelInfo | None = None  # what it runs on (reported in Ready)


ModelLoader = Callable[[LoadModel, ProgressFn], LoadedModel]


@dataclass(frozen=True, slots=True)
class TurnContext:
    """What the engine thread lends a turn."""

    model: ModelBackend
    speech: SpeechOutput | None  # None: the answer is text only (no vocoder, or speech switched off)
    emit: Callable[[Event], None]
    set_state: Callable[[EngineState], None]
    gen: int  # the engine's cancel generation when the turn started
    current_gen: Callable[[], int]

    def is_current(self) -> bool:
        return self.current_gen() == self.gen


def _ms(start: float, end: float | None) -> float | None:
    return None if end is None else round((end - start) * 1000.0, 2)


def run_turn(ctx: TurnContext, request: TurnRequest, turn_id: int, t0: float, user_audio: np.ndarray | None) -> bool:
    """Run one turn to its end; ``t0`` is the key release (or the typed question's arrival).

    Returns True when the turn was interrupted.
    """
    source = "speech" if request.audio is not None else "text"
    speech_s = request.audio.size / MODEL_SAMPLE_RATE_HZ if request.audio is not None else 0.0
    ctx.emit(TurnStarted(turn_id, source, request.text or "", speech_s, user_audio))
    ctx.set_state(EngineState.THINKING)
    speech = ctx.speech
    audio: TurnAudio | None = None
    if speech is not None:
        audio = speech.begin_turn(turn_id, ctx.gen, request.options.chunking)

    stages: dict[Stage, float] = {}
    first_token: float | None = None
    text_parts: list[str] = []
    units_after_token: list[int] = []
    n_units = 0
    stopped = lambda: not ctx.is_current()  # noqa: E731
    for out in ctx.model.respond(request, stopped):
        if isinstance(out, StageDone):
            stages[out.stage] = out.at
            continue
        if not isinstance(out, TokenStep):
            continue  # TurnDone: the turn's own summary; the metrics below are taken here
        if first_token is None:
            first_token = time.perf_counter()
        if out.text_delta:
            text_parts.append(out.text_delta)
            ctx.emit(TextDelta(turn_id, out.text_delta))
        n_units += len(out.new_units)
        units_after_token.append(n_units)
        if speech is not None:
            speech.push_units(ctx.gen, out.new_units)
        if stopped():
            break
    generated = time.perf_counter()
    interrupted = stopped()

    speaker_error: AudioDeviceError | None = None
    if speech is not None:
        speech.end_turn(ctx.gen)  # after a cancel this only lets the worker close the turn
    if speech is not None and audio is not None and not interrupted:
        ctx.set_state(EngineState.SPEAKING)
        speaker_error = _wait_heard(speech, audio, ctx)
        interrupted = stopped()
    if interrupted:
        ctx.model.keep_spoken_prefix(_heard_tokens(speech, audio, units_after_token))
    if audio is not None and audio.done.is_set() and audio.error is not None:
        error = audio.error
        if isinstance(error, AudioDeviceError):
            speaker_error = speaker_error or error
        elif isinstance(error, EngineError):  # e.g. the vocoder ran out of GPU memory: its kind and advice
            ctx.emit(Failed(error.kind, f"Speech synthesis failed: {error.message}", error.fix, turn_id))
        else:
            ctx.emit(Failed("internal", f"Speech synthesis failed: {error}", "See the log.", turn_id))
    if speaker_error is not None:
        ctx.emit(Failed.of(speaker_error, turn_id))

    end = time.perf_counter()
    first_audio = speech.first_sample_at if speech is not None and audio is not None else None
    if first_audio is not None and first_audio < t0:
        first_audio = None  # an earlier sound's
    n_tokens = len(units_after_token)
    decode_s = generated - first_token if first_token is not None else 0.0
    heard = _heard_counts(speech, audio)
    metrics = TurnMetrics(
        features_ms=_ms(t0, stages.get(Stage.FEATURES)),
        encoder_ms=_ms(t0, stages.get(Stage.ENCODER)),
        first_token_ms=_ms(t0, first_token),
        first_chunk_ms=_ms(t0, audio.first_chunk_at if audio is not None else None),
        first_audio_ms=_ms(t0, first_audio),
        total_ms=_ms(t0, end),
        n_tokens=n_tokens,
        n_units=n_units,
        audio_s=(audio.samples_out / MODEL_SAMPLE_RATE_HZ) if audio is not None else 0.0,
        tokens_per_s=(n_tokens - 1) / decode_s if n_tokens > 1 and decode_s > 0 else 0.0,
        underruns=heard.underruns,
        dropouts=heard.dropouts,
        gaps=heard.gaps,
        gap_s=round(heard.gap_s, 3),
        output_latency_ms=round(speech.first_sample_latency_s * 1000.0, 2)
        if speech is not None and first_audio is not None
        else None,
        held_ms=round(audio.pace.held_s * 1000.0, 1) if audio is not None and audio.done.is_set() else 0.0,
        slow_device=audio is not None and audio.done.is_set() and audio.pace.slow,
    )
    logger.info("Turn %d %s: %s", turn_id, "interrupted" if interrupted else "done", metrics.as_dict())
    ctx.emit(TurnFinished(turn_id, "".join(text_parts), interrupted, metrics))
    return interrupted


@dataclass(frozen=True, slots=True)
class _HeardCounts:
    underruns: int = 0
    dropouts: int = 0
    gaps: int = 0
    gap_s: float = 0.0


def _heard_counts(speech: SpeechOutput | None, audio: TurnAudio | None) -> _HeardCounts:
    """The speaker's counters over this turn (0 if the Player was replaced meanwhile)."""
    if speech is None or audio is None:
        return _HeardCounts()
    return _HeardCounts(
        underruns=max(0, speech.underruns - audio.underruns_at_start),
        dropouts=max(0, speech.dropouts - audio.dropouts_at_start),
        gaps=max(0, speech.gaps - audio.gaps_at_start),
        gap_s=max(0.0, speech.gap_s - audio.gap_s_at_start),
    )


def _wait_heard(speech: SpeechOutput, audio: TurnAudio, ctx: TurnContext) -> AudioDeviceError | None:
    """Wait for the worker to vocode the rest and the speaker to play it, giving up at once on a
    cancel; return the speaker's error if it failed meanwhile."""
    deadline = time.perf_counter() + PLAYBACK_DRAIN_TIMEOUT_S
    while not audio.done.wait(_POLL_S):
        if not ctx.is_current() or time.perf_counter() > deadline:
            return None
    if audio.error is not None:
        return None  # reported from audio.error by the caller
    try:
        speech.wait_played(ctx.gen, max(0.0, deadline - time.perf_counter()))
    except AudioDeviceError as exc:
        return exc
    return None


def _heard_tokens(speech: SpeechOutput | None, audio: TurnAudio | None, units_after_token: list[int]) -> int:
    """How many answer tokens the user heard before interrupting (all generated ones if silent).

    Read right after the cancel, without waiting for the worker (the next press is queued behind
    this turn): its counters only grow, so the units-per-sample ratio is at most a chunk stale.
    """
    if speech is None or audio is None or audio.units_vocoded == 0 or audio.samples_out == 0:
        return len(units_after_token)
    played_s = (speech.played_s_at_cancel or 0.0) - audio.played_s_at_start
    samples_per_unit = audio.samples_out / audio.units_vocoded
    heard_units = max(0.0, played_s) * MODEL_SAMPLE_RATE_HZ / samples_per_unit
    return sum(1 for count in units_after_token if count <= heard_units)
