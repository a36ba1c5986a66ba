"""The speaker's owner: one Player for the engine's life, and the vocoder worker that feeds it.

Ownership (house style: one owner per resource):

- The **worker thread** (``omnitalk-vocoder``) is the only one that creates, writes to, replaces
  and stops the :class:`~engine.audio.playback.Player`. Everything that makes sound is a job on
  its queue: a turn's units (vocoded in chunks), earcons and replayed clips. A Player whose device
  failed is replaced by the next job that needs a speaker.
- The **engine thread** enqueues jobs (``begin_turn``, ``push_units``, ``end_turn``, ``earcon``,
  ``play``, ``open``, ``release``, ``set_device``, ``set_vocoder``) and never waits on the vocoder,
  so text generation is never stalled by synthesis. It waits for playback with
  :meth:`SpeechOutput.wait_played` / :meth:`SpeechOutput.heard`.
- **Any thread** may call :meth:`SpeechOutput.cancel` (a press or Stop: the Player fades out at
  once and records how much had been played) and read the played-seconds properties.

What reaches the speaker, and when (the worker decides; nothing blocks it):

- An answer's speech is held by the worker and written to the Player as the ring has room, when
  :class:`~engine.audio.pacing.Pacing` allows: at once if speech is made fast enough, after one
  longer wait on a slow device (then a :class:`~engine.events.SlowDevice` event says so), and
  again if the speaker ran dry anyway. Pacing also decides when pending units are vocoded before
  a full chunk has arrived, so the speaker does not wait for a big chunk.
- **Earcons are mixed** on top of whatever plays (``Player.mix``): the "got it" tone never sits in
  the queue ahead of the answer's first sample.
- **A replay is skipped** when a turn begins: it never delays an answer either.
- **The host buffering follows the PC**: the Player asks for little (first audio waits behind it);
  when an answer had dropouts (the host reported the callback late: a busy CPU, the GIL), the
  worker doubles it once that answer has played, up to ``MAX_LATENCY_S``, and halves it again after
  ``CLEAN_TURNS_TO_LOWER`` answers without one.

Stale work is dropped by comparing the engine's cancel generation, not by locks; every write
carries the Player's cancel generation read before the engine's was checked, so audio of an
answer cancelled meanwhile is refused by the Player itself. What the worker measured for a turn
is in its :class:`TurnAudio`, written by the worker only and read by the engine thread once the
turn's ``done`` event is set.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from engine.audio.devices import DeviceSpec
from engine.audio.pacing import Pacing, PacingOptions, TurnPace
from engine.audio.playback import MAX_LATENCY_S, Player
from engine.audio.resample import MODEL_SAMPLE_RATE_HZ
from engine.errors import AudioDeviceError
from engine.events import AudioChunk, ChunkingOptions, Event, SlowDevice
from engine.vocoder.runtime import VocoderRuntime
from engine.vocoder.streaming import StreamingVocoder

logger = logging.getLogger(__name__)

PLAYER_WRITE_TIMEOUT_S = 10.0
JOIN_TIMEOUT_S = 5.0
TICK_S = 0.02  # while an answer streams, the worker re-checks the speaker's queue this often
MAX_JOBS_PER_BATCH = 64
CLEAN_TURNS_TO_LOWER = 10  # answers without a dropout before the host buffering is halved again
# Written audio grows a little in the Player's resampler (16 kHz -> device rate, filter delay):
# leave this much of the ring free so a write never has to wait.
_WRITE_SLACK_SAMPLES = 512
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
    played_s_at_start: float = 0.0  # the Player's counters when the turn began
    underruns_at_start: int = 0
    dropouts_at_start: int = 0
    gaps_at_start: int = 0
    gap_s_at_start: float = 0.0
    pace: TurnPace = field(default_factory=TurnPace)  # what pacing did (slow device, held back)
    error: Exception | None = None  # the speaker failed (AudioDeviceError) or synthesis did
    done: threading.Event = field(default_factory=threading.Event)


@dataclass(slots=True)
class Clip:
    """A clip queued with :meth:`SpeechOutput.play` (a replay) or :meth:`SpeechOutput.earcon`.
    ``done``: written and its end marked (it may still be playing); ``error``: the speaker failed."""

    gen: int
    pcm: np.ndarray
    mixed: bool = False  # an earcon: mixed on top of whatever plays instead of queued
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


@dataclass(slots=True)
class _Utterance:
    """What the worker is putting through the speaker's queue: a turn's answer or a replayed clip."""

    gen: int
    turn: TurnAudio | None = None
    clip: Clip | None = None
    chunking: ChunkingOptions = field(default_factory=ChunkingOptions)
    held: deque[np.ndarray] = field(default_factory=deque)  # made, not yet written (16 kHz)
    held_samples: int = 0
    ended: bool = False  # nothing more will be added
    muted: bool = False  # the speaker failed or the Player was cancelled: drop audio, keep vocoding
    player: Player | None = None  # the Player that player_gen belongs to
    player_gen: int = 0
    underruns_seen: int = 0
    slow_reported: bool = False

    def hold(self, pcm: np.ndarray) -> None:
        self.held.append(pcm)
        self.held_samples += int(pcm.size)

    def take(self, max_samples: int) -> np.ndarray:
        """Up to ``max_samples`` of the held audio, oldest first (removed from ``held``)."""
        parts: list[np.ndarray] = []
        left = max_samples
        while self.held and left > 0:
            head = self.held[0]
            if head.size <= left:
                parts.append(self.held.popleft())
                left -= head.size
            else:
                parts.append(head[:left])
                self.held[0] = head[left:]
                left = 0
        out = np.concatenate(parts) if len(parts) > 1 else (parts[0] if parts else np.zeros(0, np.float32))
        self.held_samples -= int(out.size)
        return out

    def drop(self) -> None:
        self.held.clear()
        self.held_samples = 0


@dataclass(slots=True)
class _LatencyWatch:
    """The turn whose dropouts decide the next host buffering, once it has been heard."""

    player: Player
    dropouts_at_start: int


class SpeechOutput:
    """See the module docstring. ``start()`` once, ``close()`` at the end."""

    def __init__(
        self,
        make_player: PlayerFactory,
        emit: Callable[[Event], None],
        current_gen: Callable[[], int],
        device: DeviceSpec = None,
        pacing: PacingOptions | None = None,
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
        self._current: _Utterance | None = None
        self._pacing = Pacing(pacing)
        self._watch: _LatencyWatch | None = None
        self._base_latency_s: float | None = None  # the first Player's: never lowered below it
        self._clean_turns = 0
        self._wanted_latency_s: float | None = None

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
        """Close the speaker's stream (e.g. so PortAudio can rescan), cutting what plays; the next
        sound reopens it. The returned event is set once it is closed."""
        done = threading.Event()
        self._jobs.put(_Release(done))
        return done

    def play(self, gen: int, pcm: np.ndarray) -> Clip:
        """Queue a clip (float32 16 kHz mono) as its own utterance, e.g. a replay; dropped if ``gen``
        is stale, and cut if a turn begins before it has played."""
        clip = Clip(gen, np.asarray(pcm, dtype=np.float32))
        self._jobs.put(clip)
        return clip

    def earcon(self, gen: int, pcm: np.ndarray) -> Clip:
        """Mix a short tone (float32 16 kHz mono) on top of whatever plays; dropped if ``gen`` is stale."""
        clip = Clip(gen, np.asarray(pcm, dtype=np.float32), mixed=True)
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
            if player.wait_done(min(_POLL_S, max(0.0, deadline - time.perf_counter()))):
                return True
            if time.perf_counter() >= deadline:
                return False
        return False

    def heard(self, clip: Clip) -> bool:
        """Whether ``clip`` has been written and has left the speaker (does not wait). Raises
        AudioDeviceError if the speaker failed."""
        if not clip.done.is_set():
            return False
        if clip.error is not None:
            raise clip.error
        player = self._player
        return player is None or player.wait_done(0.0)

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
    def first_sample_latency_s(self) -> float:
        """The device's output latency inside :attr:`first_sample_at`."""
        player = self._player
        return player.first_sample_latency_s if player is not None else 0.0

    @property
    def underruns(self) -> int:
        player = self._player
        return player.underruns if player is not None else 0

    @property
    def dropouts(self) -> int:
        """Output blocks the host reported late (``Player.device_underflows``): audible dropouts."""
        player = self._player
        return player.device_underflows if player is not None else 0

    @property
    def gaps(self) -> int:
        player = self._player
        return player.gaps if player is not None else 0

    @property
    def gap_s(self) -> float:
        player = self._player
        return player.gap_s if player is not None else 0.0

    # ------------------------------------------------------------------ worker thread

    def _run(self) -> None:
        while True:
            for job in self._next_jobs():
                if isinstance(job, _Stop):
                    if self._current is not None:
                        self._complete(self._current, cancelled=True)
                    self._drop_player()
                    return
                self._guarded(job)
            self._guarded(None)

    def _next_jobs(self) -> list[_Job]:
        """The next job (waiting at most a tick) and whatever else is queued already: units arrive
        token by token, and servicing the speaker once per batch keeps the GIL for the model."""
        try:
            jobs: list[_Job] = [self._jobs.get(timeout=self._tick_s())]
        except queue.Empty:
            return []
        while len(jobs) < MAX_JOBS_PER_BATCH:
            try:
                jobs.append(self._jobs.get_nowait())
            except queue.Empty:
                break
        return jobs

    def _guarded(self, job: _Job | None) -> None:
        """Handle ``job`` (None: service the speaker) at the loop boundary: a failure is logged and
        reported on the utterance, and the worker lives on."""
        try:
            if job is not None:
                self._handle(job)  # type: ignore[arg-type]  # _Stop never gets here
            elif self._current is not None:
                self._service(self._current)
            else:
                self._between_answers()
        except Exception as exc:
            logger.exception("Vocoder worker failed on %s", type(job).__name__)
            if isinstance(job, Clip):
                job.error = job.error or AudioDeviceError(f"The sound could not be played: {exc}")
                job.done.set()
            current = self._current
            if current is not None:
                if current.turn is not None:
                    current.turn.error = exc
                self._complete(current, cancelled=True)

    def _between_answers(self) -> None:
        if self._watch is not None:
            self._account(self._watch)
        if self._watch is None and self._wanted_latency_s is not None:
            self._retune()

    def _tick_s(self) -> float | None:
        """How long the worker may sleep without a job: a short tick while an utterance has audio to
        write or units it may vocode early; otherwise until the next job."""
        current = self._current
        if current is None:
            return TICK_S if self._watch is not None or self._wanted_latency_s is not None else None
        if current.muted:
            return None
        if current.held_samples or (current.turn is not None and not current.ended):
            return TICK_S
        return None

    def _stale(self, gen: int) -> bool:
        return gen != self._current_gen()

    def _speaker(self) -> Player:
        """The Player, opened (again, after a device error) when needed. Raises AudioDeviceError."""
        player = self._player
        if player is None or player.error is not None:
            self._drop_player()
            player = self._make_player(self._device)
            if self._base_latency_s is None:
                self._base_latency_s = player.requested_latency_s
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
        elif isinstance(job, _SetDevice):
            if job.device != self._device:
                self._cut_current()
                self._device = job.device
                self._drop_player()
        elif isinstance(job, _Release):
            try:
                self._cut_current()
                self._drop_player()
            finally:
                job.done.set()
        elif isinstance(job, _Open):
            try:
                self._speaker()
            except AudioDeviceError as exc:
                logger.info("Speaker not opened ahead of time: %s", exc)
            finally:
                job.done.set()
        elif isinstance(job, Clip):
            if job.mixed:
                self._mix(job)
            else:
                self._begin_clip(job)
        elif isinstance(job, _Begin):
            self._begin_turn(job)
        elif isinstance(job, _Units):
            current = self._current
            if current is not None and current.turn is not None and current.gen == job.gen and not current.ended:
                self._units(current, current.turn, job.units)
        else:
            current = self._current
            if current is not None and current.turn is not None and current.gen == job.gen and not current.ended:
                self._end(current, current.turn)

    # ---- clips

    def _mix(self, clip: Clip) -> None:
        try:
            if not self._stale(clip.gen):
                self._speaker().mix(clip.pcm)
        except AudioDeviceError as exc:
            clip.error = exc
            self._drop_player()  # the next sound opens the speaker again
        finally:
            clip.done.set()

    def _begin_clip(self, clip: Clip) -> None:
        self._cut_current()
        utterance = _Utterance(gen=clip.gen, clip=clip, ended=True)
        utterance.hold(clip.pcm)
        self._current = utterance
        self._attach(utterance)

    def _cut_current(self) -> None:
        """End what is playing now: a replay (or anything else still queued) is cut short."""
        current = self._current
        if current is None:
            return
        if self._player is not None and not current.muted and not self._stale(current.gen):
            self._player.cancel()  # a stale one was silenced by the engine's cancel already
        self._complete(current, cancelled=True)

    # ---- turns

    def _begin_turn(self, job: _Begin) -> None:
        self._cut_current()  # an earlier turn that never ended (cancelled), or a replay
        turn = job.turn
        utterance = _Utterance(gen=turn.gen, turn=turn, chunking=job.chunking)
        self._current = utterance
        chunking = job.chunking
        self._pacing.begin(
            time.perf_counter(), chunking.first_chunk_units, chunking.chunk_units, chunking.lookahead_units
        )
        stream = self._stream
        if stream is None or self._stale(turn.gen):
            self._complete(utterance, cancelled=True)
            return
        stream.reset()
        stream.chunk_units = job.chunking.first_chunk_units
        stream.lookahead_units = job.chunking.lookahead_units
        self._attach(utterance)
        player = utterance.player
        if player is not None:
            turn.played_s_at_start = player.played_s
            turn.underruns_at_start = utterance.underruns_seen = player.underruns
            turn.dropouts_at_start = player.device_underflows
            if self._watch is not None:
                self._account(self._watch)  # the last answer, if it was heard to its end
            self._watch = _LatencyWatch(player, player.device_underflows)
            turn.gaps_at_start = player.gaps
            turn.gap_s_at_start = player.gap_s

    def _attach(self, utterance: _Utterance) -> None:
        """Bind the utterance to the current Player (opening it if needed): its cancel generation is
        read *before* the engine's generation is checked again, so a cancel in between is seen."""
        try:
            player = self._speaker()
        except AudioDeviceError as exc:  # no speaker: vocode anyway (transcript, replay), report it
            self._mute(utterance, exc)
            return
        utterance.player, utterance.player_gen = player, player.cancel_generation
        utterance.underruns_seen = player.underruns

    def _units(self, utterance: _Utterance, turn: TurnAudio, units: tuple[int, ...]) -> None:
        stream = self._stream
        assert stream is not None  # _begin_turn ends a turn at once without a vocoder
        turn.units_in += len(units)
        self._pacing.units_arrived(time.perf_counter(), len(units))
        self._vocode(utterance, turn, lambda: stream.push(list(units)), final=False)

    def _end(self, utterance: _Utterance, turn: TurnAudio) -> None:
        stream = self._stream
        assert stream is not None
        self._vocode(utterance, turn, stream.flush, final=True)
        utterance.ended = True

    def _vocode(self, utterance: _Utterance, turn: TurnAudio, run: Callable[[], list[np.ndarray]], final: bool) -> None:
        stream = self._stream
        assert stream is not None
        done_before = stream.state.done_units
        started = time.perf_counter()
        chunks = run()
        compute_s = time.perf_counter() - started
        turn.units_vocoded = turn.units_in if final else stream.state.committed_units
        done_after = turn.units_in if final else stream.state.done_units
        samples = 0
        for pcm in chunks:
            if pcm.size == 0 or self._stale(turn.gen):
                continue
            if turn.first_chunk_at is None:
                turn.first_chunk_at = time.perf_counter()
                stream.chunk_units = utterance.chunking.chunk_units  # later chunks: the larger size
            samples += int(pcm.size)
            turn.samples_out += int(pcm.size)
            self._emit(AudioChunk(turn.turn_id, pcm))
            if not utterance.muted:
                utterance.hold(pcm)
        if samples:
            self._pacing.vocoded(done_after - done_before, samples, compute_s)

    # ---- feeding the speaker

    def _service(self, utterance: _Utterance) -> None:
        """Everything the worker does for the current utterance between jobs and on ticks."""
        if self._stale(utterance.gen):
            self._complete(utterance, cancelled=True)
            return
        now = time.perf_counter()
        turn = utterance.turn
        stream = self._stream
        if turn is not None and stream is not None and not utterance.ended and not utterance.muted:
            early = self._pacing.chunk_units(now, stream.pending_units, self._unplayed_s(utterance))
            if early is not None:
                self._vocode(utterance, turn, lambda: stream.push([], chunk_units=early), final=False)
        if not utterance.muted:
            self._feed(utterance, now)
        if utterance.ended and (utterance.muted or not utterance.held_samples):
            self._finish(utterance)

    def _unplayed_s(self, utterance: _Utterance) -> float:
        player = utterance.player
        queued = player.queued_s if player is not None and not utterance.muted else 0.0
        return queued + utterance.held_samples / MODEL_SAMPLE_RATE_HZ

    def _feed(self, utterance: _Utterance, now: float) -> None:
        """Write held audio to the Player as far as pacing allows and the ring has room."""
        if not utterance.held_samples:
            return
        player = utterance.player
        if player is None or player is not self._player:  # replaced or dropped since: start over
            self._attach(utterance)
            player = utterance.player
            if player is None or self._stale(utterance.gen):  # checked after reading its cancel generation
                return
        turn = utterance.turn
        if turn is not None:
            produced_s = turn.samples_out / MODEL_SAMPLE_RATE_HZ
            if player.underruns > utterance.underruns_seen:
                utterance.underruns_seen = player.underruns
                if not utterance.ended:
                    self._pacing.ran_dry(now, produced_s)
            if not utterance.ended and not self._pacing.may_play(now, self._unplayed_s(utterance), produced_s):
                self._report_slow(utterance, turn, now, produced_s)
                return
        room = int(player.free_s * MODEL_SAMPLE_RATE_HZ) - _WRITE_SLACK_SAMPLES
        if room <= 0:
            return
        try:
            written = player.write(
                utterance.take(room), timeout_s=PLAYER_WRITE_TIMEOUT_S, cancel_gen=utterance.player_gen
            )
        except AudioDeviceError as exc:
            self._mute(utterance, exc)
            self._drop_player()  # the next sound opens the speaker again
            return
        if not written:  # cancelled since this utterance began: nothing more of it may sound
            utterance.muted = True
            utterance.drop()

    def _report_slow(self, utterance: _Utterance, turn: TurnAudio, now: float, produced_s: float) -> None:
        if utterance.slow_reported:
            return
        utterance.slow_reported = True
        rate = self._pacing.rate(now) or 0.0
        wait_s = self._pacing.wait_s(now, self._unplayed_s(utterance), produced_s)
        logger.info("Slow device: speech is made at %.2fx real time; holding the answer ~%.1f s", rate, wait_s)
        self._emit(SlowDevice(turn.turn_id, rate, wait_s))

    def _mute(self, utterance: _Utterance, error: AudioDeviceError) -> None:
        utterance.muted = True
        utterance.drop()
        if utterance.turn is not None:
            utterance.turn.error = error
        if utterance.clip is not None:
            utterance.clip.error = error

    def _finish(self, utterance: _Utterance) -> None:
        """Everything was written: mark the utterance's end in the Player, then complete it."""
        player = utterance.player
        if player is not None and player is self._player and not utterance.muted and not self._stale(utterance.gen):
            try:
                player.finish(timeout_s=PLAYER_WRITE_TIMEOUT_S)
            except AudioDeviceError as exc:
                self._mute(utterance, exc)
                self._drop_player()
        self._complete(utterance, cancelled=False)

    def _account(self, watch: _LatencyWatch) -> None:
        """Once the last answer has been heard: decide the next host buffering from its dropouts
        (see the module docstring). The change is made by :meth:`_retune` when the speaker is idle."""
        player = self._player
        if player is not watch.player or player.error is not None:
            self._watch = None  # replaced meanwhile: the new Player starts from its own latency
            return
        try:
            if not player.wait_done(0.0):
                return  # still playing (or cut by the next turn: then it does not count)
        except AudioDeviceError:  # the next sound opens the speaker again
            self._watch = None
            self._drop_player()
            return
        self._watch = None
        dropouts = player.device_underflows - watch.dropouts_at_start
        current = player.requested_latency_s
        if dropouts:
            self._clean_turns = 0
            wanted = min(MAX_LATENCY_S, current * 2.0)
        else:
            self._clean_turns += 1
            if self._clean_turns < CLEAN_TURNS_TO_LOWER:
                return
            self._clean_turns = 0
            wanted = max(self._base_latency_s or current, current / 2.0)
        if wanted != current:
            logger.info("Speaker buffering %.0f -> %.0f ms (%d dropouts)", current * 1e3, wanted * 1e3, dropouts)
            self._wanted_latency_s = wanted

    def _retune(self) -> None:
        """Reopen the speaker with the wanted host buffering, now that nothing plays (a new stream
        starts with silence, so it is never done in front of an answer)."""
        player = self._player
        wanted, self._wanted_latency_s = self._wanted_latency_s, None
        if player is None or wanted is None or player.error is not None:
            return
        try:
            player.reopen(wanted)
        except AudioDeviceError as exc:  # the next sound opens the speaker again
            logger.warning("The speaker could not be reopened: %s", exc)
            self._drop_player()

    def _complete(self, utterance: _Utterance, cancelled: bool) -> None:
        utterance.drop()
        if self._current is utterance:
            self._current = None
        turn = utterance.turn
        if turn is not None:
            if self._stream is not None:
                self._stream.reset()
            complete = not cancelled and turn.error is None
            turn.pace = self._pacing.end(time.perf_counter(), turn.samples_out / MODEL_SAMPLE_RATE_HZ, complete)
            turn.done.set()
        if utterance.clip is not None:
            utterance.clip.done.set()
