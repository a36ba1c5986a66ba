"""The speaker's owner: one Player for the engine's life, and the vocoder worker that writes to it.

Ownership (house style: one owner per resource):

- The **worker thread** (``omnitalk-vocoder``) is the only one that creates, writes to, replaces
  and stops the :class:`~engine.audio.playback.Player`. Everything that makes sound is a job on
  its queue: a turn's units (vocoded with a small first chunk for latency and larger later chunks
  for quality), earcons and replayed clips. A Player whose device failed is replaced by the next
  job that needs a speaker.
- The **engine thread** enqueues jobs (``begin_turn``, ``push_units``, ``end_turn``, ``play``,
  ``open``, ``set_device``, ``set_vocoder``) and never waits on the vocoder, so text generation is
  never stalled by synthesis. It waits for playback with :meth:`SpeechOutput.wait_played`.
- **Any thread** may call :meth:`SpeechOutput.cancel` (a press or Stop: the Player fades out at
  once and records how much had been played) and read the played-seconds properties.

Stale work is dropped by comparing the engine's cancel generation, not by locks. What the worker
measured for a turn is in its :class:`TurnAudio`, written by the worker only and read by the
engine thread once the turn's ``done`` event is set.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from engine.audio.devices import DeviceSpec
from engine.audio.playback import Player
from engine.errors import AudioDeviceError
from engine.events import AudioChunk, ChunkingOptions, Event
from engine.vocoder.runtime import VocoderRuntime
from engine.vocoder.streaming import StreamingVocoder

logger = logging.getLogger(__name__)

PLAYER_WRITE_TIMEOUT_S = 10.0
JOIN_TIMEOUT_S = 5.0
_POLL_S = 0.02

PlayerFactory = Callable[[DeviceSpec], Player]


@dataclass(slots=True)
class TurnAudio:
    """What the worker measured for one turn. Written by the worker; read after ``done`` is set."""

    turn_id: int
    gen: int
    units_in: int = 0
    units_vocoded: int = 0  # units whose audio has been produced (durations committed)
    samples_out: int = 0
    first_chunk_at: float | None = None
    played_s_at_start: float = 0.0  # the Player's played seconds when the turn began
    underruns_at_start: int = 0
    error: Exception | None = None  # the speaker failed (AudioDeviceError) or synthesis did
    done: threading.Event = field(default_factory=threading.Event)


@dataclass(slots=True)
class Clip:
    """A clip queued with :meth:`SpeechOutput.play` (an earcon, a replay). ``done``: written and
    its end marked (it may still be playing); ``error``: the speaker failed."""

    gen: int
    pcm: np.ndarray
    error: AudioDeviceError | None = None
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
class _Open:
    done: threading.Event


@dataclass(frozen=True, slots=True)
class _Release:
    done: threading.Event


@dataclass(frozen=True, slots=True)
class _SetDevice:
    device: DeviceSpec


@dataclass(frozen=True, slots=True)
class _SetVocoder:
    runtime: VocoderRuntime | None


@dataclass(frozen=True, slots=True)
class _Stop:
    pass


_Job = _Begin | _Units | _End | Clip | _Open | _Release | _SetDevice | _SetVocoder | _Stop


class SpeechOutput:
    """See the module docstring. ``start()`` once, ``close()`` at the end."""

    def __init__(
        self,
        make_player: PlayerFactory,
        emit: Callable[[Event], None],
        current_gen: Callable[[], int],
        device: DeviceSpec = None,
    ) -> None:
        self._make_player = make_player
        self._emit = emit
        self._current_gen = current_gen
        self._jobs: queue.Queue[_Job] = queue.Queue()
        self._thread = threading.Thread(target=self._run, name="omnitalk-vocoder", daemon=True)
        # Worker-only state (the engine thread never writes these).
        self._device: DeviceSpec = device
        self._player: Player | None = None
        self._stream: StreamingVocoder | None = None
        self._turn: TurnAudio | None = None
        self._turn_muted = False  # the speaker failed during this turn: keep vocoding for the transcript
        self._chunking = ChunkingOptions()
        self._open_error: AudioDeviceError | None = None

    # ------------------------------------------------------------------ engine thread

    def start(self) -> None:
        self._thread.start()

    def set_vocoder(self, runtime: VocoderRuntime | None) -> None:
        """The loaded model's vocoder (None: answers are text only; clips still play)."""
        self._jobs.put(_SetVocoder(runtime))

    def set_device(self, device: DeviceSpec) -> None:
        """Use another speaker from the next sound on (the current stream is closed)."""
        self._jobs.put(_SetDevice(device))

    def open(self) -> threading.Event:
        """Open the speaker ahead of the first answer (a new output stream drops its first ~100 ms).
        The returned event is set when the attempt is over; a failure is only logged here, and the
        user hears about it when an answer or a sound needs the speaker."""
        done = threading.Event()
        self._jobs.put(_Open(done))
        return done

    def release(self) -> threading.Event:
        """Close the speaker's stream (e.g. so PortAudio can rescan); the next sound reopens it.
        The returned event is set once it is closed."""
        done = threading.Event()
        self._jobs.put(_Release(done))
        return done

    def play(self, gen: int, pcm: np.ndarray) -> Clip:
        """Queue a clip (float32 16 kHz mono) as its own utterance; dropped if ``gen`` is stale."""
        clip = Clip(gen, np.asarray(pcm, dtype=np.float32))
        self._jobs.put(clip)
        return clip

    def begin_turn(self, turn_id: int, gen: int, chunking: ChunkingOptions) -> TurnAudio:
        turn = TurnAudio(turn_id=turn_id, gen=gen)
        self._jobs.put(_Begin(turn, chunking))
        return turn

    def push_units(self, gen: int, units: Sequence[int]) -> None:
        if units:
            self._jobs.put(_Units(gen, tuple(units)))

    def end_turn(self, gen: int) -> None:
        self._jobs.put(_End(gen))

    def wait_played(self, gen: int, timeout_s: float) -> bool:
        """Wait until everything queued so far has left the speaker; False on timeout or once ``gen``
        is stale. Raises AudioDeviceError if the speaker fails meanwhile."""
        deadline = time.perf_counter() + timeout_s
        while self._current_gen() == gen:
            player = self._player
            if player is None:
                return True
            if player.wait_done(_POLL_S):
                return True
            if time.perf_counter() >= deadline:
                return False
        return False

    def close(self, timeout_s: float = JOIN_TIMEOUT_S) -> None:
        """Stop the worker; it closes the speaker on its way out."""
        self._jobs.put(_Stop())
        if self._thread.is_alive():
            self._thread.join(timeout_s)

    # -------------------------------------------------------------------- any thread

    def cancel(self) -> None:
        """Fade out what is playing and drop what is queued, at once (lock-free in the Player)."""
        player = self._player
        if player is not None:
            player.cancel()

    @property
    def played_s(self) -> float:
        player = self._player
        return player.played_s if player is not None else 0.0

    @property
    def played_s_at_cancel(self) -> float | None:
        """Seconds the speaker had played when the last cancel arrived (None: never cancelled)."""
        player = self._player
        return player.played_s_at_cancel if player is not None else None

    @property
    def first_sample_at(self) -> float | None:
        """``perf_counter`` at which the latest utterance's first sample reached the speaker."""
        player = self._player
        return player.first_sample_at if player is not None else None

    @property
    def underruns(self) -> int:
        player = self._player
        return player.underruns if player is not None else 0

    # ------------------------------------------------------------------ worker thread

    def _run(self) -> None:
        while True:
            job = self._jobs.get()
            if isinstance(job, _Stop):
                self._drop_player()
                return
            try:
                self._handle(job)
            except Exception as exc:  # loop boundary: report on the turn, keep the worker alive
                logger.exception("Vocoder worker failed on %s", type(job).__name__)
                if isinstance(job, Clip):
                    job.done.set()
                if self._turn is not None:
                    self._turn.error = exc
                    self._finish_turn()

    def _stale(self, gen: int) -> bool:
        return gen != self._current_gen()

    def _speaker(self) -> Player:
        """The Player, opened (again, after a device error) when needed. Raises AudioDeviceError."""
        player = self._player
        if player is None or player.error is not None:
            self._drop_player()
            player = self._make_player(self._device)
            self._player = player
        player.start()
        return player

    def _drop_player(self) -> None:
        player, self._player = self._player, None
        if player is not None:
            player.stop()

    def _handle(self, job: _Begin | _Units | _End | Clip | _Open | _Release | _SetDevice | _SetVocoder) -> None:
        if isinstance(job, _SetVocoder):
            self._stream = StreamingVocoder(job.runtime) if job.runtime is not None else None
            return
        if isinstance(job, _SetDevice):
            if job.device != self._device:
                self._device = job.device
                self._drop_player()
            return
        if isinstance(job, _Release):
            try:
                self._drop_player()
            finally:
                job.done.set()
            return
        if isinstance(job, _Open):
            try:
                self._speaker()
            except AudioDeviceError as exc:
                logger.info("Speaker not opened ahead of time: %s", exc)
            finally:
                job.done.set()
            return
        if isinstance(job, Clip):
            self._play_clip(job)
            return
        if isinstance(job, _Begin):
            self._begin(job)
            return
        turn = self._turn
        if turn is None or job.gen != turn.gen:
            return
        if self._stale(turn.gen):
            self._finish_turn()
            return
        stream = self._stream
        assert stream is not None  # _begin ends a turn at once without a vocoder
        if isinstance(job, _Units):
            turn.units_in += len(job.units)
            self._play(turn, stream.push(list(job.units)))
            turn.units_vocoded = stream.state.committed_units
            return
        self._play(turn, stream.flush())
        turn.units_vocoded = turn.units_in
        if self._player is not None and not self._turn_muted and not self._stale(turn.gen):
            try:
                self._player.finish(timeout_s=PLAYER_WRITE_TIMEOUT_S)
            except AudioDeviceError as exc:
                turn.error = exc
                self._drop_player()
        self._finish_turn()

    def _play_clip(self, clip: Clip) -> None:
        try:
            if not self._stale(clip.gen):
                player = self._speaker()
                if player.write(clip.pcm, timeout_s=PLAYER_WRITE_TIMEOUT_S):
                    player.finish(timeout_s=PLAYER_WRITE_TIMEOUT_S)
        except AudioDeviceError as exc:
            clip.error = exc
            self._drop_player()  # the next sound opens the speaker again
        finally:
            clip.done.set()

    def _begin(self, job: _Begin) -> None:
        if self._turn is not None:  # an earlier turn that never ended (cancelled)
            self._finish_turn()
        turn = job.turn
        self._turn, self._chunking, self._turn_muted = turn, job.chunking, False
        if self._stream is None or self._stale(turn.gen):
            self._finish_turn()
            return
        self._stream.reset()
        self._stream.chunk_units = job.chunking.first_chunk_units
        self._stream.lookahead_units = job.chunking.lookahead_units
        try:
            player = self._speaker()
            turn.played_s_at_start = player.played_s
            turn.underruns_at_start = player.underruns
        except AudioDeviceError as exc:  # no speaker: vocode anyway (transcript, replay), report it
            turn.error = exc
            self._turn_muted = True

    def _play(self, turn: TurnAudio, chunks: list[np.ndarray]) -> None:
        for pcm in chunks:
            if pcm.size == 0 or self._stale(turn.gen):
                continue
            if turn.first_chunk_at is None:
                turn.first_chunk_at = time.perf_counter()
                assert self._stream is not None
                self._stream.chunk_units = self._chunking.chunk_units
            turn.samples_out += int(pcm.size)
            self._emit(AudioChunk(turn.turn_id, pcm))
            if self._player is None or self._turn_muted:
                continue
            try:
                self._player.write(pcm, timeout_s=PLAYER_WRITE_TIMEOUT_S)
            except AudioDeviceError as exc:
                turn.error = exc
                self._turn_muted = True  # keep vocoding for the transcript; the engine reports it
                self._drop_player()

    def _finish_turn(self) -> None:
        if self._turn is not None:
            self._turn.done.set()
        self._turn = None
        if self._stream is not None:
            self._stream.reset()
