"""Test doubles and helpers for the audio layer.

``FakeBackend`` stands in for PortAudio: streams never call back on their own; the test drives
them (``push`` input blocks, ``pull`` output blocks), so buffer logic is tested deterministically.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import soundfile as sf

from engine.audio.backend import AudioDevice, Direction, StreamCallback
from engine.errors import AudioDeviceError
from tests.pulse import require_tools

QUESTION_TEXT = "What is the capital of France?"


@dataclass(slots=True)
class FakeFlags:
    input_overflow: bool = False
    output_underflow: bool = False

    def __bool__(self) -> bool:
        return self.input_overflow or self.output_underflow


@dataclass(slots=True)
class FakeTime:
    currentTime: float = 0.0  # noqa: N815 - PortAudio's field names
    inputBufferAdcTime: float = 0.0  # noqa: N815
    outputBufferDacTime: float = 0.0  # noqa: N815


@dataclass(slots=True)
class FakeStream:
    direction: Direction
    device: AudioDevice
    rate_hz: int
    channels: int
    block_frames: int
    callback: StreamCallback
    finished_callback: Callable[[], None]
    latency: float = 0.02
    active: bool = True
    closed: bool = False
    clock_s: float = 1000.0  # the stream clock (time_info.currentTime), advanced one block per callback

    def push(self, frames: np.ndarray, *, flags: FakeFlags | None = None) -> None:
        """Deliver captured audio (n, channels) to the input callback, ``block_frames`` at a time."""
        assert self.direction == "input" and self.active
        data = np.asarray(frames, dtype=np.float32).reshape(-1, self.channels)
        for start in range(0, data.shape[0], self.block_frames):
            block = np.ascontiguousarray(data[start : start + self.block_frames])
            self.callback(block, block.shape[0], FakeTime(), flags or FakeFlags())

    def pull(self, n_blocks: int = 1, *, flags: FakeFlags | None = None, clock_runs: bool = True) -> np.ndarray:
        """Run the output callback ``n_blocks`` times; return what it wrote, (n, channels).

        ``clock_runs=False`` models a host prefilling its buffer in a burst before it starts.
        """
        assert self.direction == "output" and self.active
        out = np.full((n_blocks * self.block_frames, self.channels), np.nan, dtype=np.float32)
        for i in range(n_blocks):
            block = out[i * self.block_frames : (i + 1) * self.block_frames]
            now = self.clock_s
            self.callback(block, self.block_frames, FakeTime(now, 0.0, now + self.latency), flags or FakeFlags())
            if clock_runs:
                self.clock_s += self.block_frames / self.rate_hz
        return out

    def die(self) -> None:
        """The device vanished: PortAudio stops the stream and calls finished_callback."""
        self.active = False
        self.finished_callback()

    def stop(self) -> None:
        self.active = False

    def abort(self) -> None:
        self.active = False

    def close(self) -> None:
        self.active = False
        self.closed = True


def make_device(
    index: int,
    name: str,
    *,
    host_api: str = "ALSA",
    inputs: int = 2,
    outputs: int = 2,
    rate_hz: int = 48_000,
    default_input: bool = False,
    default_output: bool = False,
) -> AudioDevice:
    return AudioDevice(index, name, host_api, inputs, outputs, rate_hz, default_input, default_output)


@dataclass
class FakeBackend:
    devices: list[AudioDevice] = field(
        default_factory=lambda: [make_device(0, "Fake Mic", default_input=True, default_output=True)]
    )
    streams: list[FakeStream] = field(default_factory=list)
    fail_next_open: AudioDeviceError | None = None
    refreshes: int = 0

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
        stream = FakeStream(
            direction, device, rate_hz, channels, block_frames, callback, finished_callback, latency=latency_s
        )
        self.streams.append(stream)
        return stream

    def refresh(self) -> None:
        """Like PortAudio: no rescan while a stream is open."""
        open_streams = [s for s in self.streams if not s.closed]
        if open_streams:
            raise AudioDeviceError(f"Cannot refresh audio devices while {len(open_streams)} stream(s) are open.")
        self.refreshes += 1

    @property
    def last(self) -> FakeStream:
        return self.streams[-1]


def sine(freq_hz: float, seconds: float, rate_hz: int, amplitude: float = 1.0, channels: int = 0) -> np.ndarray:
    """float32 (n,) or, with ``channels``, the same sine on every channel (n, channels)."""
    t = np.arange(round(seconds * rate_hz)) / rate_hz
    wave = (amplitude * np.sin(2 * np.pi * freq_hz * t)).astype(np.float32)
    return np.repeat(wave[:, None], channels, axis=1) if channels else wave


def dominant_frequency_hz(audio: np.ndarray, rate_hz: int) -> float:
    spectrum = np.abs(np.fft.rfft(audio * np.hanning(audio.shape[0])))
    return float(np.fft.rfftfreq(audio.shape[0], 1.0 / rate_hz)[np.argmax(spectrum)])


def max_step(audio: np.ndarray) -> float:
    """Largest jump between consecutive samples: a click shows up as a big one."""
    return float(np.max(np.abs(np.diff(audio)))) if audio.shape[0] > 1 else 0.0


def espeak_wav(text: str, folder: Path, name: str = "q") -> Path:
    """espeak-ng speech converted with sox to 16 kHz mono 16-bit WAV (the recipe's format)."""
    require_tools("espeak-ng", "sox")
    raw = folder / f"{name}-raw.wav"
    out = folder / f"{name}.wav"
    subprocess.run(["espeak-ng", "-v", "en-us", "-s", "160", "-w", str(raw), text], check=True, timeout=60)
    subprocess.run(["sox", str(raw), "-r", "16000", "-c", "1", "-b", "16", str(out)], check=True, timeout=60)
    return out


def read_wav(path: Path) -> tuple[np.ndarray, int]:
    data, rate = sf.read(str(path), dtype="float32", always_2d=True)
    return data.mean(axis=1), int(rate)


def best_correlation(reference: np.ndarray, recorded: np.ndarray) -> tuple[float, int]:
    """Max normalised cross-correlation of ``reference`` inside ``recorded`` and its lag (samples)."""
    n = reference.shape[0] + recorded.shape[0] - 1
    size = 1 << (n - 1).bit_length()
    xc = np.fft.irfft(np.fft.rfft(recorded, size) * np.conj(np.fft.rfft(reference, size)), size)
    xc = xc[: recorded.shape[0]]  # lags 0 .. len(recorded)-1: reference starting inside recorded
    lag = int(np.argmax(xc))
    segment = recorded[lag : lag + reference.shape[0]]
    ref = reference[: segment.shape[0]]
    denom = float(np.linalg.norm(ref) * np.linalg.norm(segment))
    return (float(np.dot(ref, segment)) / denom if denom else 0.0), lag
