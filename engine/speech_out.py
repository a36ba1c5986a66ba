"""Speech output: the vocoder worker thread between the LLM's units and the speaker.

The engine thread only enqueues units (never waits on the vocoder), so text generation is never
stalled by synthesis. The worker turns units into PCM with the streaming vocoder, using a small
first chunk for latency and larger later chunks for quality (adaptive chunking), writes the PCM
to the player (which applies backpressure), and reports each chunk as an ``AudioChunk`` event.

Stale work is dropped by comparing the engine's cancel generation, not by locks.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from engine.errors import AudioDeviceError
from engine.events import AudioChunk, ChunkingOptions, Event
from engine.vocoder.runtime import VocoderRuntime
from engine.vocoder.streaming import StreamingVocoder

logger = logging.getLogger(__name__)

SAMPLE_RATE_HZ = 16_000
PLAYER_WRITE_TIMEOUT_S = 10.0


class PlayerLike(Protocol):
    """What the worker needs from :class:`engine.audio.playback.Player`."""

    @property
    def played_s(self) -> float: ...

    @property
    def first_sample_at(self) -> float | None: ...

    @property
    def underruns(self) -> int: ...

    def write(self, pcm16k: np.ndarray, *, timeout_s: float | None = None) -> bool: ...

    def finish(self, *, timeout_s: float | None = None) -> bool: ...

    def wait_done(self, timeout_s: float) -> bool: ...

    def cancel(self) -> None: ...


@dataclass(slots=True)
class TurnAudio:
    """What the worker measured for one turn (read by the engine thread after the turn)."""

    turn_id: int
    gen: int
    units_in: int = 0
    units_vocoded: int = 0  # units whose audio has been produced (durations committed)
    samples_out: int = 0
    first_chunk_at: float | None = None
    played_s_at_start: float = 0.0
    underruns_at_start: int = 0
    error: Exception | None = None
    done: threading.Event = field(default_factory=threading.Event)


@dataclass(frozen=True, slots=True)
class _Begin:
    turn: TurnAudio
    chunking: ChunkingOptions


@dataclass(frozen=True, slots=True)
class _Units:
    gen: int
    units: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class _End:
    gen: int


@dataclass(frozen=True, slots=True)
class _Stop:
    pass


class SpeechOutput:
    """Owns the vocoder worker thread. ``player`` may be None (text-only, e.g. no speaker)."""

    def __init__(
        self,
        runtime: VocoderRuntime,
        player: PlayerLike | None,
        emit: Callable[[Event], None],
        current_gen: Callable[[], int],
    ) -> None:
        self.runtime = runtime
        self.player = player
        self._emit = emit
        self._current_gen = current_gen
        self._stream = StreamingVocoder(runtime)
        self._jobs: queue.Queue[_Begin | _Units | _End | _Stop] = queue.Queue()
        self._turn: TurnAudio | None = None
        self._chunking = ChunkingOptions()
        self._thread = threading.Thread(target=self._run, name="omnitalk-vocoder", daemon=True)
        self._thread.start()

    # ------------------------------------------------------------- engine thread API

    def begin_turn(self, turn_id: int, gen: int, chunking: ChunkingOptions) -> TurnAudio:
        turn = TurnAudio(turn_id=turn_id, gen=gen)
        if self.player is not None:
            turn.played_s_at_start = self.player.played_s
            turn.underruns_at_start = self.player.underruns
        self._jobs.put(_Begin(turn, chunking))
        return turn

    def push_units(self, gen: int, units: Sequence[int]) -> None:
        if units:
            self._jobs.put(_Units(gen, tuple(units)))

    def end_turn(self, gen: int) -> None:
        self._jobs.put(_End(gen))

    def close(self, timeout_s: float = 5.0) -> None:
        self._jobs.put(_Stop())
        self._thread.join(timeout_s)

    # ------------------------------------------------------------------ worker thread

    def _run(self) -> None:
        while True:
            job = self._jobs.get()
            if isinstance(job, _Stop):
                return
            try:
                self._handle(job)
            except Exception as exc:  # loop boundary: report on the turn, keep the worker alive
                logger.exception("Vocoder worker failed")
                if self._turn is not None:
                    self._turn.error = exc
                    self._turn.done.set()
                    self._turn = None
                self._stream.reset()

    def _stale(self, gen: int) -> bool:
        return gen != self._current_gen()

    def _handle(self, job: _Begin | _Units | _End) -> None:
        if isinstance(job, _Begin):
            if self._turn is not None:  # an earlier turn that never ended (cancelled)
                self._turn.done.set()
            self._stream.reset()
            self._turn, self._chunking = job.turn, job.chunking
            self._stream.chunk_units = job.chunking.first_chunk_units
            self._stream.lookahead_units = job.chunking.lookahead_units
            if self._stale(job.turn.gen):
                self._finish_turn()
            return
        turn = self._turn
        if turn is None or job.gen != turn.gen:
            return
        if self._stale(turn.gen):
            self._finish_turn()
            return
        if isinstance(job, _Units):
            turn.units_in += len(job.units)
            self._play(turn, self._stream.push(list(job.units)))
            turn.units_vocoded = self._stream.state.committed_units
            return
        self._play(turn, self._stream.flush())
        turn.units_vocoded = turn.units_in
        if self.player is not None and not self._stale(turn.gen):
            self.player.finish(timeout_s=PLAYER_WRITE_TIMEOUT_S)
        self._finish_turn()

    def _play(self, turn: TurnAudio, chunks: list[np.ndarray]) -> None:
        for pcm in chunks:
            if pcm.size == 0 or self._stale(turn.gen):
                continue
            if turn.first_chunk_at is None:
                turn.first_chunk_at = time.perf_counter()
                self._stream.chunk_units = self._chunking.chunk_units
            turn.samples_out += int(pcm.size)
            self._emit(AudioChunk(turn.turn_id, pcm))
            if self.player is not None:
                try:
                    self.player.write(pcm, timeout_s=PLAYER_WRITE_TIMEOUT_S)
                except AudioDeviceError as exc:
                    turn.error = exc
                    self.player = None  # keep vocoding for the transcript; the engine reports it

    def _finish_turn(self) -> None:
        if self._turn is not None:
            self._turn.done.set()
        self._turn = None
        self._stream.reset()
