"""Microphone capture for push-to-talk: native-rate input stream -> mono float32 at 16 kHz.

Data path::

    PortAudio callback --copy--> RingBuffer (native rate, 1-2 ch)      [audio thread]
    reader thread: ring -> mono -> soxr.ResampleStream -> take buffer  [recorder thread]

The callback only copies into the preallocated ring, counts, and stores the block's mean square
for the level meter. Mixing, resampling, the 30 s limit notification and device-failure detection
happen on the reader thread, which is also where ``on_limit`` and ``on_error`` are called.

Keep the stream open between presses (:meth:`Recorder.open`) when you can: on some systems the
first input block arrives a second or more after a stream starts, which would cut off the start
of the user's first word. :meth:`Recorder.start` opens it on demand otherwise.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import soxr

from engine.audio.backend import AudioStream, SoundBackend, device_lost
from engine.audio.devices import DeviceSpec, default_backend, resolve_device
from engine.audio.resample import MODEL_SAMPLE_RATE_HZ, to_mono
from engine.audio.ringbuffer import RingBuffer
from engine.errors import AudioDeviceError

logger = logging.getLogger(__name__)

MAX_RECORDING_S = 30.0  # the speech encoder's window; longer takes are cut here
MIN_PRESS_S = 0.3  # shorter presses are accidental taps: the caller drops them without a turn
MAX_CAPTURE_CHANNELS = 2
LEVEL_FLOOR_DBFS = -120.0  # what the meter shows for digital silence or a closed stream
_MIN_MEAN_SQUARE = 10.0 ** (LEVEL_FLOOR_DBFS / 10.0)


def dbfs(mean_square: float) -> float:
    """Level of a signal with this mean square, relative to a full-scale square wave.

    A full-scale sine is -3.01 dBFS; floors at ``LEVEL_FLOOR_DBFS``.
    """
    return 10.0 * math.log10(max(mean_square, _MIN_MEAN_SQUARE))


@dataclass(frozen=True, slots=True)
class RecorderOptions:
    max_recording_s: float = MAX_RECORDING_S
    block_s: float = 0.02  # PortAudio block; also the level meter's update period
    # Host buffering: room for the GIL or a busy CPU to delay a callback. Blocks still arrive
    # every block_s, so a larger value does not delay capture.
    latency_s: float = 0.2
    ring_s: float = 2.0  # how far the reader thread may fall behind before input is dropped
    read_interval_s: float = 0.02  # reader thread wake-up period
    first_callback_timeout_s: float = 5.0  # PulseAudio can take ~2 s to deliver the first block
    stall_timeout_s: float = 3.0  # no block for this long after the first one = device lost
    resample_quality: str = "HQ"


class Recorder:
    """Push-to-talk recorder. ``start()`` on press, ``stop()`` on release.

    ``on_limit()`` is called once per take when it reaches ``max_recording_s`` (recording has
    already stopped; call :meth:`stop` to collect the audio). ``on_error(err)`` is called when the
    device fails while the stream is open. Both run on the recorder's reader thread: post a
    command to your own thread rather than doing work there.

    Public methods may be called from any thread; properties are cheap and lock-free.
    """

    def __init__(
        self,
        device: DeviceSpec = None,
        *,
        on_limit: Callable[[], None] | None = None,
        on_error: Callable[[AudioDeviceError], None] | None = None,
        options: RecorderOptions | None = None,
        backend: SoundBackend | None = None,
    ) -> None:
        self._device_spec = device
        self._on_limit = on_limit
        self._on_error = on_error
        self._opts = options or RecorderOptions()
        self._backend = backend or default_backend()
        self._api_lock = threading.RLock()
        self._consume_lock = threading.Lock()
        self._max_samples = round(self._opts.max_recording_s * MODEL_SAMPLE_RATE_HZ)
        self._take = np.zeros(self._max_samples, dtype=np.float32)
        self._take_len = 0
        self._stream: AudioStream | None = None
        self._device_rate_hz = 0
        self._ring = RingBuffer(1, 1)
        self._scratch = np.zeros((1, 1), dtype=np.float32)
        self._resampler: soxr.ResampleStream | None = None
        self._reader: threading.Thread | None = None
        self._reader_stop = threading.Event()
        self._opened_implicitly = False
        self._take_active = False
        self._opened_at = 0.0
        self._error: AudioDeviceError | None = None
        self._limit_reported = False
        # Shared with the audio callback: plain attributes, each written by one side only.
        self._recording = False
        self._closing = False
        self._stream_died = False
        self._frames_left = 0
        self._take_frames = 0
        self._limit_hit = False
        self._callbacks = 0
        self._in_callback = False
        self._overflows = 0
        self._mean_square = 0.0

    # --- properties (any thread) ---------------------------------------------------------------
    @property
    def level_dbfs(self) -> float:
        """Level of the most recent input block (updated every ``block_s`` while the stream is open)."""
        return dbfs(self._mean_square) if self._stream is not None else LEVEL_FLOOR_DBFS

    @property
    def duration_s(self) -> float:
        """Seconds captured in the current (or last) take."""
        rate = self._device_rate_hz
        return self._take_frames / rate if rate else 0.0

    @property
    def is_open(self) -> bool:
        return self._stream is not None

    @property
    def is_recording(self) -> bool:
        return self._recording

    @property
    def max_recording_s(self) -> float:
        """The longest take; recording stops by itself there (``on_limit``)."""
        return self._opts.max_recording_s

    @property
    def limit_reached(self) -> bool:
        """True once the current (or last) take hit ``max_recording_s``."""
        return self._limit_hit

    @property
    def overflows(self) -> int:
        """Input blocks lost since open (PortAudio input overflow, or the reader fell behind)."""
        return self._overflows

    @property
    def device_rate_hz(self) -> int:
        return self._device_rate_hz

    @property
    def error(self) -> AudioDeviceError | None:
        """The device failure since the last open, if any."""
        return self._error

    # --- lifecycle -----------------------------------------------------------------------------
    def open(self) -> None:
        """Open and start the input stream (level meter live, nothing recorded yet).

        Re-opens after a device error. Raises AudioDeviceError if no usable microphone.
        """
        with self._api_lock:
            self._opened_implicitly = False
            self._open()

    def _open(self) -> None:
        with self._api_lock:
            if self._stream is not None and self._error is None:
                return
            self._close_stream()
            device = resolve_device(self._device_spec, "input", backend=self._backend)
            channels = max(1, min(device.max_input_channels, MAX_CAPTURE_CHANNELS))
            rate = device.default_rate_hz
            block = max(1, round(rate * self._opts.block_s))
            if self._ring.channels != channels or self._device_rate_hz != rate:
                self._ring = RingBuffer(max(block * 4, round(rate * self._opts.ring_s)), channels)
                self._scratch = np.zeros(
                    (max(block, round(rate * self._opts.read_interval_s)) * 4, channels), dtype=np.float32
                )
            self._ring.clear()
            self._device_rate_hz = rate
            self._error = None
            self._closing = False
            self._stream_died = False
            self._callbacks = 0
            self._mean_square = 0.0
            self._opened_at = time.perf_counter()
            self._stream = self._backend.open_stream(
                "input",
                device=device,
                rate_hz=rate,
                channels=channels,
                block_frames=block,
                latency_s=self._opts.latency_s,
                callback=self._on_audio,
                finished_callback=self._on_finished,
            )
            logger.info("Microphone open: %s, %d Hz, %d ch", device.key, rate, channels)
            self._reader_stop.clear()
            self._reader = threading.Thread(target=self._reader_loop, name="omnitalk-recorder", daemon=True)
            self._reader.start()

    def wait_ready(self, timeout_s: float) -> bool:
        """Wait until the open stream has delivered its first block; False on timeout or error."""
        deadline = time.perf_counter() + timeout_s
        while self._callbacks == 0:
            if self._stream is None or self._error is not None or time.perf_counter() >= deadline:
                return False
            time.sleep(0.005)
        return True

    def start(self) -> None:
        """Begin a take (opening the stream if needed). A second start() while recording is ignored."""
        with self._api_lock:
            if self._take_active:
                return
            if self._stream is None:
                self._opened_implicitly = True
            self._open()  # no-op while healthy; re-opens after a device error
            with self._consume_lock:
                self._ring.clear()
                self._take_len = 0
                self._resampler = soxr.ResampleStream(
                    self._device_rate_hz,
                    MODEL_SAMPLE_RATE_HZ,
                    1,
                    dtype="float32",
                    quality=self._opts.resample_quality,
                )
            self._limit_hit = False
            self._limit_reported = False
            self._take_frames = 0
            self._frames_left = math.ceil(self._opts.max_recording_s * self._device_rate_hz)
            self._take_active = True
            self._recording = True

    def stop(self) -> np.ndarray:
        """End the take; return it as float32 mono (n_samples,) at 16 kHz.

        Returns an empty array if no take was running. Raises AudioDeviceError if the device
        failed during the take (the recorder is then closed and can be started again).
        """
        with self._api_lock:
            if not self._take_active:
                return np.zeros(0, dtype=np.float32)
            self._recording = False
            self._take_active = False
            self._wait_for_inflight_block()
            with self._consume_lock:
                self._drain()
                if self._resampler is not None:
                    self._append(self._resampler.resample_chunk(np.zeros(0, dtype=np.float32), last=True))
                    self._resampler = None
                audio = self._take[: self._take_len].copy()
            error = self._error
            if self._opened_implicitly or error is not None:
                self.close()
            if error is not None:
                raise error
            return audio

    def close(self) -> None:
        """Discard any take, stop the reader thread and close the stream. Safe to call twice."""
        with self._api_lock:
            self._recording = False
            self._take_active = False
            self._opened_implicitly = False
            self._close_stream()

    def __enter__(self) -> Recorder:
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- audio thread --------------------------------------------------------------------------
    def _on_audio(self, indata: np.ndarray, frames: int, time_info: Any, status: Any) -> None:
        # Runs on the PortAudio thread: copy and count only. No allocation beyond views, no locks.
        self._in_callback = True  # first, before _recording is read (see _wait_for_inflight_block)
        try:
            self._copy_block(indata, frames, status)
        finally:
            self._in_callback = False

    def _copy_block(self, indata: np.ndarray, frames: int, status: Any) -> None:
        self._callbacks += 1
        if status.input_overflow:
            self._overflows += 1
        flat = indata.reshape(-1)
        if flat.shape[0]:
            self._mean_square = float(np.dot(flat, flat)) / flat.shape[0]
        if not self._recording:
            return
        left = self._frames_left
        n = frames if frames < left else left
        if self._ring.write(indata[:n]) < n:
            self._overflows += 1
        self._take_frames += n
        self._frames_left = left - n
        if n == left:
            self._recording = False
            self._limit_hit = True

    def _on_finished(self) -> None:
        if not self._closing:
            self._stream_died = True

    # --- reader thread -------------------------------------------------------------------------
    def _reader_loop(self) -> None:
        seen_callbacks = 0
        last_progress = time.perf_counter()
        while not self._reader_stop.wait(self._opts.read_interval_s):
            if self._take_active:
                with self._consume_lock:
                    if self._take_active:
                        self._drain()
            if self._limit_hit and not self._limit_reported:
                self._limit_reported = True
                logger.info("Recording reached the %.0f s limit", self._opts.max_recording_s)
                self._notify(self._on_limit)
            now = time.perf_counter()
            if self._callbacks != seen_callbacks:
                seen_callbacks = self._callbacks
                last_progress = now
            error = self._health_error(seen_callbacks, now - last_progress, now - self._opened_at)
            if error is not None:
                self._error = error
                self._recording = False
                logger.error("Microphone failed: %s", error)
                self._notify(self._on_error, error)
                return

    def _health_error(self, callbacks: int, since_progress_s: float, since_open_s: float) -> AudioDeviceError | None:
        if self._stream_died:
            return device_lost("input", "The microphone stopped unexpectedly (was it unplugged?).")
        if callbacks == 0 and since_open_s > self._opts.first_callback_timeout_s:
            return device_lost(
                "input", f"The microphone delivered no audio within {self._opts.first_callback_timeout_s:.0f} s."
            )
        if callbacks > 0 and since_progress_s > self._opts.stall_timeout_s:
            return device_lost(
                "input", f"The microphone stopped delivering audio for {since_progress_s:.1f} s (was it unplugged?)."
            )
        return None

    def _notify(self, callback: Callable[..., None] | None, *args: object) -> None:
        if callback is None:
            return
        try:
            callback(*args)
        except Exception:
            logger.exception("Recorder owner callback %r failed", callback)

    def _drain(self) -> None:
        """Move everything in the ring through mono + resampling into the take (consume lock held)."""
        if self._resampler is None:
            return
        while True:
            n = self._ring.read_into(self._scratch)
            if n == 0:
                return
            self._append(self._resampler.resample_chunk(to_mono(self._scratch[:n])))

    def _append(self, audio16k: np.ndarray) -> None:
        n = min(audio16k.shape[0], self._max_samples - self._take_len)
        self._take[self._take_len : self._take_len + n] = audio16k[:n]
        self._take_len += n

    # --- helpers (API lock held) ---------------------------------------------------------------
    def _wait_for_inflight_block(self) -> None:
        """Let a callback that saw ``_recording`` still True finish its copy before the last drain.

        ``_recording`` is already False here, so a callback that has not started copies nothing; only
        one in progress can still be writing. Waiting for the *next* block instead would add up to a
        block (20 ms) to every key release.
        """
        if self._stream is None or self._error is not None:
            return
        deadline = time.perf_counter() + 2 * self._opts.block_s + 0.05
        while self._in_callback and time.perf_counter() < deadline:
            time.sleep(0.0005)

    def _close_stream(self) -> None:
        reader, self._reader = self._reader, None
        self._reader_stop.set()
        if reader is not None and reader is not threading.current_thread():
            reader.join(timeout=5.0)
        stream, self._stream = self._stream, None
        if stream is None:
            return
        self._closing = True
        try:
            stream.abort()  # input: nothing queued worth waiting for
        except Exception as exc:  # a vanished device may fail to stop; closing still frees it
            logger.warning("Stopping the microphone stream failed: %s", exc)
        try:
            stream.close()
        except Exception as exc:
            logger.warning("Closing the microphone stream failed: %s", exc)
