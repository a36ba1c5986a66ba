"""A sound device for the benchmark whose microphone and speaker run on real-time clocks.

``BenchSoundBackend`` is a :class:`engine.audio.backend.SoundBackend`: ``Recorder`` and ``Player``
open streams on it exactly as on PortAudio. Each stream has a clock thread that calls the stream
callback once per block at the block's real-time deadline, like a sound card:

- the microphone delivers silence, or the clip given to :meth:`BenchMicrophone.play`, in blocks;
- the speaker pulls a block every block period. ``outputBufferDacTime`` equals ``currentTime``,
  so ``Player.first_sample_at`` is the moment the first answer sample is handed to the device,
  with no output latency added.

The clocks also record how late their callbacks ran, which shows when the machine was too busy
for the measurements to be trusted.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from engine.audio.backend import AudioDevice, Direction, StreamCallback

DEVICE_RATE_HZ = 48_000
BENCH_DEVICE = AudioDevice(
    index=0,
    name="Benchmark clocked device",
    host_api="bench",
    max_input_channels=1,
    max_output_channels=2,
    default_rate_hz=DEVICE_RATE_HZ,
    is_default_input=True,
    is_default_output=True,
)
# A clock that falls further behind than this skips ahead instead of bursting callbacks to catch up.
MAX_BACKLOG_BLOCKS = 5
JOIN_TIMEOUT_S = 5.0


@dataclass(frozen=True, slots=True)
class _Status:
    input_overflow: bool = False
    output_underflow: bool = False


@dataclass(frozen=True, slots=True)
class _TimeInfo:
    currentTime: float  # noqa: N815 - PortAudio's field names
    inputBufferAdcTime: float  # noqa: N815
    outputBufferDacTime: float  # noqa: N815


_NO_STATUS = _Status()


@dataclass(slots=True)
class ClockStats:
    """How punctual a stream clock was: callbacks later than one block period, and the worst delay."""

    callbacks: int = 0
    late_blocks: int = 0
    max_late_s: float = 0.0


class BenchMicrophone:
    """What the microphone hears: silence, or a clip played once (device rate, mono)."""

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
        """Wait until the whole clip has been delivered to the input callback."""
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


class ClockedStream:
    """A started stream whose callback runs on its own thread once per block, in real time."""

    def __init__(
        self,
        direction: Direction,
        rate_hz: int,
        channels: int,
        block_frames: int,
        callback: StreamCallback,
        microphone: BenchMicrophone,
    ) -> None:
        self.direction = direction
        self.rate_hz = rate_hz
        self.channels = channels
        self.block_frames = block_frames
        self._callback = callback
        self._microphone = microphone
        self._stop = threading.Event()
        self.stats = ClockStats()
        self._thread = threading.Thread(target=self._run, name=f"bench-{direction}-clock", daemon=True)
        self._thread.start()

    @property
    def active(self) -> bool:
        return not self._stop.is_set()

    @property
    def latency(self) -> float:
        return 0.0

    def _run(self) -> None:
        period = self.block_frames / self.rate_hz
        block = np.zeros((self.block_frames, self.channels), dtype=np.float32)
        deadline = time.perf_counter()
        while not self._stop.is_set():
            deadline += period
            now = time.perf_counter()
            if deadline > now:
                time.sleep(deadline - now)
                now = time.perf_counter()
            late = now - deadline
            stats = self.stats
            stats.callbacks += 1
            if late > period:
                stats.late_blocks += 1
            stats.max_late_s = max(stats.max_late_s, late)
            if late > MAX_BACKLOG_BLOCKS * period:
                deadline = now  # a sound card drops what it cannot deliver; it does not burst
            if self._stop.is_set():
                return
            clip_ends = self.direction == "input" and self._microphone.fill(block)
            self._callback(block, self.block_frames, _TimeInfo(now, now, now), _NO_STATUS)
            if clip_ends:
                self._microphone.delivered()

    def _halt(self) -> None:
        self._stop.set()
        if threading.current_thread() is not self._thread:
            self._thread.join(JOIN_TIMEOUT_S)

    def stop(self) -> None:
        self._halt()

    def abort(self) -> None:
        self._halt()

    def close(self) -> None:
        self._halt()


class BenchSoundBackend:
    """One clocked device (mono microphone, stereo speaker, 48 kHz); see the module docstring."""

    def __init__(self) -> None:
        self.microphone = BenchMicrophone()
        self.streams: list[ClockedStream] = []

    def query_devices(self) -> list[AudioDevice]:
        return [BENCH_DEVICE]

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
    ) -> ClockedStream:
        stream = ClockedStream(direction, rate_hz, channels, block_frames, callback, self.microphone)
        self.streams.append(stream)
        return stream

    def refresh(self) -> None:
        """Nothing to re-scan: the device list is fixed."""

    def clock_stats(self, direction: Direction) -> ClockStats:
        """Punctuality of all streams of one direction opened so far, summed."""
        total = ClockStats()
        for stream in self.streams:
            if stream.direction == direction:
                total.callbacks += stream.stats.callbacks
                total.late_blocks += stream.stats.late_blocks
                total.max_late_s = max(total.max_late_s, stream.stats.max_late_s)
        return total

    def close(self) -> None:
        for stream in self.streams:
            stream.close()
