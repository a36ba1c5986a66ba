"""A sound card in software: the one fake :class:`~engine.audio.backend.SoundBackend`.

``Recorder`` and ``Player`` open streams on it exactly as on PortAudio. It runs in one of two modes:

- **manual** (tests): streams never call back on their own. The test drives them, one block at a
  time (:meth:`FakeStream.push` delivers microphone blocks, :meth:`FakeStream.pull` runs the
  speaker's callback), so buffer logic is checked deterministically.
- **clocked** (the benchmark, and tests that need time to pass): every stream (or every stream of
  one direction, e.g. a clocked speaker with a manual microphone) has a clock thread
  that calls its callback once per block at the block's deadline, like a sound card. The
  microphone delivers silence, or the clip given to :meth:`Microphone.play`; what the speaker
  played can be kept (``record=True``) with the time of each block. ``speed`` > 1 runs the clocks
  faster than real time. ``latency_s`` is the output latency the device reports (its
  ``outputBufferDacTime`` offset): 0 makes ``Player.first_sample_at`` the moment the first sample
  is handed to the device.

Owners: the device object belongs to whoever created it (a test, the benchmark); each clock thread
is the only caller of its stream's callback. The clocks record how late they ran
(:class:`ClockStats`), which shows when a busy machine made the timings untrustworthy.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from engine.audio.backend import AudioDevice, Direction, StreamCallback
from engine.errors import AudioDeviceError

FAKE_RATE_HZ = 48_000
MANUAL_CLOCK_START_S = 1000.0  # a manual stream's clock (time_info.currentTime) starts here
# A clock that falls further behind than this skips ahead instead of bursting callbacks to catch up.
MAX_BACKLOG_BLOCKS = 5
JOIN_TIMEOUT_S = 5.0


def fake_device(
    index: int,
    name: str,
    *,
    host_api: str = "ALSA",
    inputs: int = 2,
    outputs: int = 2,
    rate_hz: int = FAKE_RATE_HZ,
    default_input: bool = False,
    default_output: bool = False,
) -> AudioDevice:
    return AudioDevice(index, name, host_api, inputs, outputs, rate_hz, default_input, default_output)


def default_devices() -> list[AudioDevice]:
    """One duplex device (stereo in and out, 48 kHz), the default for both directions."""
    return [fake_device(0, "Fake sound card", default_input=True, default_output=True)]


@dataclass(frozen=True, slots=True)
class StreamStatus:
    """PortAudio's callback flags."""

    input_overflow: bool = False
    output_underflow: bool = False

    def __bool__(self) -> bool:
        return self.input_overflow or self.output_underflow


@dataclass(frozen=True, slots=True)
class TimeInfo:
    """PortAudio's callback times, in seconds of the stream's clock."""

    currentTime: float = 0.0  # noqa: N815 - PortAudio's field names
    inputBufferAdcTime: float = 0.0  # noqa: N815
    outputBufferDacTime: float = 0.0  # noqa: N815


_NO_STATUS = StreamStatus()


@dataclass(slots=True)
class ClockStats:
    """How punctual a stream clock was: callbacks later than one block period, and the worst delay."""

    callbacks: int = 0
    late_blocks: int = 0
    max_late_s: float = 0.0


class Microphone:
    """What the clocked microphone hears: silence, or a clip played once (device rate, mono)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._clip = np.zeros(0, dtype=np.float32)
        self._pos = 0
        self._played = threading.Event()
        self._played.set()

    def play(self, clip: np.ndarray) -> None:
        """Start delivering ``clip`` (float32 (n,) at the device rate) from the next block on."""
        with self._lock:
            self._clip = np.asarray(clip, dtype=np.float32)
            self._pos = 0
            if self._clip.size:
                self._played.clear()
            else:
                self._played.set()

    def wait_played(self, timeout_s: float) -> bool:
        """Wait until the whole clip has been delivered to an input callback."""
        return self._played.wait(timeout_s)

    def fill(self, block: np.ndarray) -> bool:
        """Write the next ``block.shape[0]`` frames into ``block`` (frames, channels).

        Returns True when this block ends the clip: call :meth:`delivered` once the callback has it.
        """
        with self._lock:
            take = min(block.shape[0], self._clip.size - self._pos)
            block.fill(0.0)
            if take > 0:
                block[:take] = self._clip[self._pos : self._pos + take, None]
                self._pos += take
            return take > 0 and self._pos >= self._clip.size

    def delivered(self) -> None:
        self._played.set()


@dataclass(frozen=True, slots=True)
class PlayedBlock:
    at: float  # time.perf_counter() when the callback returned it
    stream: int  # which output stream played it (streams are numbered as they open)
    mono: np.ndarray  # float32 (frames,), the channels averaged


class Speaker:
    """What clocked output streams played (kept only when the device was made with ``record=True``)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._blocks: list[PlayedBlock] = []

    def keep(self, block: PlayedBlock) -> None:
        with self._lock:
            self._blocks.append(block)

    @property
    def blocks(self) -> list[PlayedBlock]:
        with self._lock:
            return list(self._blocks)

    def audio(self) -> np.ndarray:
        """Everything played, in order: float32 (n,) at the device rate."""
        blocks = self.blocks
        return np.concatenate([b.mono for b in blocks]) if blocks else np.zeros(0, dtype=np.float32)

    def loud_frames(self, since: float = float("-inf"), threshold: float = 1e-3) -> int:
        """Frames louder than ``threshold`` in the blocks played after ``since`` (perf_counter)."""
        return sum(int(np.count_nonzero(np.abs(b.mono) > threshold)) for b in self.blocks if b.at > since)

    def nonsilent_s(self, rate_hz: int = FAKE_RATE_HZ, threshold: float = 1e-4) -> float:
        return self.loud_frames(threshold=threshold) / rate_hz


@dataclass(eq=False)
class FakeStream:
    """A started stream. Manual: drive it with :meth:`push` / :meth:`pull`. Clocked: its thread does."""

    direction: Direction
    device: AudioDevice
    rate_hz: int
    channels: int
    block_frames: int
    callback: StreamCallback
    finished_callback: Callable[[], None]
    latency: float
    number: int = 0
    active: bool = True
    closed: bool = False
    clock_s: float = MANUAL_CLOCK_START_S  # the stream clock (time_info.currentTime), one block per callback
    stats: ClockStats = field(default_factory=ClockStats)
    _owner: FakeSoundDevice | None = None
    _thread: threading.Thread | None = None
    _halt: threading.Event = field(default_factory=threading.Event)

    @property
    def clocked(self) -> bool:
        return self._thread is not None

    # --- manual mode ---------------------------------------------------------------------------
    def push(self, frames: np.ndarray, *, flags: StreamStatus | None = None) -> None:
        """Deliver captured audio (n, channels) to the input callback, ``block_frames`` at a time."""
        assert self.direction == "input" and self.active and not self.clocked
        data = np.asarray(frames, dtype=np.float32).reshape(-1, self.channels)
        for start in range(0, data.shape[0], self.block_frames):
            block = np.ascontiguousarray(data[start : start + self.block_frames])
            self._input_block(block, flags or _NO_STATUS)

    def pull(self, n_blocks: int = 1, *, flags: StreamStatus | None = None, clock_runs: bool = True) -> np.ndarray:
        """Run the output callback ``n_blocks`` times; return what it wrote, (n, channels).

        ``clock_runs=False`` models a host prefilling its buffer in a burst before it starts.
        """
        assert self.direction == "output" and self.active and not self.clocked
        out = np.full((n_blocks * self.block_frames, self.channels), np.nan, dtype=np.float32)
        for i in range(n_blocks):
            self._output_block(out[i * self.block_frames : (i + 1) * self.block_frames], flags or _NO_STATUS)
            if not clock_runs:
                self.clock_s -= self.block_frames / self.rate_hz
        return out

    # --- both modes ----------------------------------------------------------------------------
    def _input_block(self, block: np.ndarray, flags: StreamStatus) -> None:
        now = self.clock_s
        self.callback(block, block.shape[0], TimeInfo(now, now - self.latency, 0.0), flags)
        self.clock_s += block.shape[0] / self.rate_hz

    def _output_block(self, block: np.ndarray, flags: StreamStatus) -> None:
        now = self.clock_s
        self.callback(block, self.block_frames, TimeInfo(now, 0.0, now + self.latency), flags)
        self.clock_s += self.block_frames / self.rate_hz

    def die(self) -> None:
        """The device vanished: PortAudio stops the stream and calls finished_callback."""
        self._stop_clock()
        self.active = False
        self.finished_callback()

    def stop(self) -> None:
        self._stop_clock()
        self.active = False

    def abort(self) -> None:
        self.stop()

    def close(self) -> None:
        self.stop()
        self.closed = True

    # --- clocked mode --------------------------------------------------------------------------
    def _start_clock(self, owner: FakeSoundDevice) -> None:
        self._owner = owner
        self.clock_s = time.perf_counter()
        self._thread = threading.Thread(target=self._run_clock, name=f"fake-{self.direction}-clock", daemon=True)
        self._thread.start()

    def _stop_clock(self) -> None:
        self._halt.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(JOIN_TIMEOUT_S)

    def _run_clock(self) -> None:
        owner = self._owner
        assert owner is not None
        block = np.zeros((self.block_frames, self.channels), dtype=np.float32)
        deadline = time.perf_counter()
        stats = self.stats
        while not self._halt.is_set():
            period = self.block_frames / self.rate_hz / owner.speed
            deadline += period
            now = time.perf_counter()
            if deadline > now:
                self._halt.wait(deadline - now)
                now = time.perf_counter()
            if self._halt.is_set():
                return
            late = now - deadline
            stats.callbacks += 1
            if late > period:
                stats.late_blocks += 1
            stats.max_late_s = max(stats.max_late_s, late)
            if late > MAX_BACKLOG_BLOCKS * period:
                deadline = now  # a sound card drops what it cannot deliver; it does not burst
            if self.direction == "input":
                clip_ends = owner.microphone.fill(block)
                self._input_block(block, _NO_STATUS)
                if clip_ends:
                    owner.microphone.delivered()
            else:
                self._output_block(block, _NO_STATUS)
                if owner.record:
                    owner.speaker.keep(PlayedBlock(time.perf_counter(), self.number, block.mean(axis=1)))


class FakeSoundDevice:
    """The fake backend; see the module docstring.

    ``devices`` is what ``query_devices`` lists (a test may change it, e.g. to "plug in" a device);
    ``fail_next_open`` makes the next ``open_stream`` raise it; ``refresh`` refuses while a stream
    is open, like PortAudio.
    """

    def __init__(
        self,
        devices: list[AudioDevice] | None = None,
        *,
        clocked: bool | Direction = False,
        speed: float = 1.0,
        latency_s: float | None = None,
        record: bool = False,
    ) -> None:
        self.devices = default_devices() if devices is None else devices
        self.clocked = clocked  # True: every stream; "input"/"output": streams of that direction
        self.speed = speed  # clocked mode: how much faster than real time the clocks run
        self.latency_s = latency_s  # None: report the latency each stream asked for
        self.record = record
        self.microphone = Microphone()
        self.speaker = Speaker()
        self.streams: list[FakeStream] = []
        self.fail_next_open: AudioDeviceError | None = None
        self.refreshes = 0
        self._numbers = itertools.count()

    # --- SoundBackend --------------------------------------------------------------------------
    def query_devices(self) -> list[AudioDevice]:
        return list(self.devices)

    def open_stream(
        self,
        direction: Direction,
        *,
        device: AudioDevice,
        rate_hz: int,
        channels: int,
        block_frames: int,
        latency_s: float,
        callback: StreamCallback,
        finished_callback: Callable[[], None],
    ) -> FakeStream:
        if self.fail_next_open is not None:
            error, self.fail_next_open = self.fail_next_open, None
            raise error
        latency = latency_s if self.latency_s is None else self.latency_s
        stream = FakeStream(
            direction,
            device,
            rate_hz,
            channels,
            block_frames,
            callback,
            finished_callback,
            latency,
            number=next(self._numbers),
        )
        self.streams.append(stream)
        if self.clocked is True or self.clocked == direction:
            stream._start_clock(self)
        return stream

    def refresh(self) -> None:
        """Like PortAudio: no rescan while a stream is open."""
        open_streams = [s for s in self.streams if not s.closed]
        if open_streams:
            raise AudioDeviceError(f"Cannot refresh audio devices while {len(open_streams)} stream(s) are open.")
        self.refreshes += 1

    # --- for tests and the benchmark -----------------------------------------------------------
    @property
    def last(self) -> FakeStream:
        return self.streams[-1]

    def live(self, direction: Direction) -> list[FakeStream]:
        """Streams of one direction that are still running, oldest first."""
        return [s for s in list(self.streams) if s.direction == direction and s.active]

    def clock_stats(self, direction: Direction) -> ClockStats:
        """Punctuality of all clocked streams of one direction opened so far, summed."""
        total = ClockStats()
        for stream in list(self.streams):
            if stream.direction == direction:
                total.callbacks += stream.stats.callbacks
                total.late_blocks += stream.stats.late_blocks
                total.max_late_s = max(total.max_late_s, stream.stats.max_late_s)
        return total

    def close(self) -> None:
        """Stop every stream's clock (streams the Recorder/Player forgot to close included)."""
        for stream in list(self.streams):
            stream._stop_clock()
