"""Speaker playback for streamed replies: 16 kHz chunks in, click-free device-rate audio out.

Data path::

    write(pcm16k): soxr.ResampleStream 16 kHz -> device rate --copy--> RingBuffer  [caller thread]
    PortAudio callback: fixed-size block <--copy-- RingBuffer, gain ramps applied  [audio thread]

The ring is the bounded queue (``queue_s`` seconds): :meth:`Player.write` blocks while it is full,
which paces a faster-than-real-time writer (``free_s`` says how much fits without blocking).
:meth:`Player.cancel` is lock-free and may be called from any thread; it also releases a blocked
``write``. A writer that passes the ``cancel_gen`` it read before deciding to write
(:attr:`Player.cancel_generation`) never queues audio after a cancel it had not seen.

Short sounds (earcons) go through :meth:`Player.mix` instead: a second, small ring mixed on top
of whatever plays, so a "got it" tone never delays the answer queued after it, and a cancel does
not cut it.

Positions in the ring are absolute frame counts, so the writer side communicates with the
callback through marks instead of locks: ``_end_mark`` (where the current utterance ends, set by
:meth:`finish`) and ``_discard_until`` (everything before it is dropped, set by :meth:`cancel`).

Click-free rules, all applied in the callback with preallocated buffers:

- the stream starts with ``lead_silence_s + latency_s`` of silence (servers drop the first buffer);
- audio after silence (start, after an underrun, after cancel) fades in over ``fade_in_s``;
- the last ``fade_out_s`` before an utterance's end fades out;
- when the queue runs dry mid-utterance (an underrun), the output ramps from its last sample
  to zero over ``fade_out_s`` instead of dropping to it, and fades back in when audio returns;
- cancel fades out over ``cancel_fade_s`` from wherever playback is, then drops the rest.

The callback also measures what the listener hears: ``underruns`` (the queue ran dry mid-utterance)
and, of those, the ``gaps`` after which the same utterance went on, with their length (``gap_s``).

Keep one Player started across turns: starting an output stream can take a second or more.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import soxr

from engine.audio.backend import AudioStream, SoundBackend, device_lost
from engine.audio.devices import DeviceSpec, default_backend, resolve_device
from engine.audio.resample import MODEL_SAMPLE_RATE_HZ
from engine.audio.ringbuffer import RingBuffer
from engine.errors import AudioDeviceError

logger = logging.getLogger(__name__)

MAX_PLAYBACK_CHANNELS = 2
MAX_CALLBACK_S = 0.5  # largest block the preallocated callback buffers handle
MAX_PLAUSIBLE_LATENCY_S = 1.0  # larger DAC-time offsets are host API bugs; ignore them
MIX_QUEUE_S = 1.0  # room for mixed-in sounds (earcons are 0.09 s)
MAX_LATENCY_S = 0.2  # host buffering that survived two busy-looping processes on 2 cores (8 runs)
_POLL_S = 0.002


@dataclass(frozen=True, slots=True)
class PlayerOptions:
    queue_s: float = 2.0  # bound of the queue between write() and the device
    block_s: float = 0.01  # PortAudio block: the granularity of cancel and of underrun detection
    # Host buffering. An idle stream keeps it full of silence, so every answer's first sample waits
    # this long behind it (0.2 s made first audio through PulseAudio ~200 ms later than on a
    # device without latency; bench/RESULTS.md). Smaller needs a callback that is never late: a
    # busy CPU or the GIL can delay it into an audible dropout (device_underflows), so the speaker's
    # owner doubles it when that happens (engine/speech_out.py), up to MAX_LATENCY_S.
    latency_s: float = 0.04
    lead_silence_s: float = 0.15  # silence at stream start, on top of latency_s (see _lead_silence)
    fade_in_s: float = 0.005
    fade_out_s: float = 0.005
    cancel_fade_s: float = 0.008
    first_callback_timeout_s: float = 5.0
    # No callback for this long = device lost. PortAudio's ALSA host API on PulseAudio recovers from
    # a dropout by restarting the stream, with no callback for up to ~1.9 s (measured); two in a
    # row must not look like an unplugged speaker.
    stall_timeout_s: float = 5.0
    resample_quality: str = "HQ"


class Player:
    """Streaming speaker output. ``write()`` chunks, ``finish()``, then ``wait_done()``; or ``cancel()``.

    ``write``/``finish``/``wait_done``/``start``/``stop`` are meant for one owner thread at a time
    (the engine); ``cancel`` and the properties may be used from any thread.
    """

    def __init__(
        self,
        device: DeviceSpec = None,
        *,
        options: PlayerOptions | None = None,
        backend: SoundBackend | None = None,
    ) -> None:
        self._device_spec = device
        self._opts = options or PlayerOptions()
        self._backend = backend or default_backend()
        self._write_lock = threading.RLock()
        self._mark_lock = threading.Lock()
        self._stream: AudioStream | None = None
        self._device_rate_hz = 0
        self._ring = RingBuffer(1, 1)
        self._resampler: soxr.ResampleStream | None = None
        self._resampler_gen = 0
        self._error: AudioDeviceError | None = None
        self._started_at = 0.0
        self._seen_callbacks = 0
        self._last_progress = 0.0
        self._latency_s = 0.0
        # Callback scratch, sized in _allocate(); never reallocated while a stream runs.
        self._mono = np.zeros(1, dtype=np.float32)
        self._gain_buf = np.zeros(1, dtype=np.float32)
        self._tail_buf = np.zeros(1, dtype=np.float32)
        self._index0 = np.zeros(1, dtype=np.float32)  # 0, 1, 2, ...
        self._index1 = np.zeros(1, dtype=np.float32)  # 1, 2, 3, ...
        self._fade_in_frames = self._fade_out_frames = self._cancel_fade_frames = 1
        # Marks and counters shared with the callback: each attribute has one writer side.
        self._end_mark = 0  # writer: finish()
        self._discard_until = 0  # writers: cancel() / write(), under _mark_lock
        self._cancel_gen = 0  # writer: cancel()
        self._first_sample_at: float | None = None  # writers: callback (set), cancel() (clear)
        self._first_sample_latency_s = 0.0  # writer: callback; the DAC offset inside _first_sample_at
        self._played_s_at_cancel: float | None = None  # writer: cancel(), under _mark_lock
        self._closing = False
        # Callback-only state (read elsewhere for reporting only).
        self._stream_died = False
        self._seen_cancel_gen = 0
        self._cancelling = False
        self._playing = False
        self._utterance_started = False
        self._gain = 0.0
        self._last_value = 0.0
        self._decay_level = self._decay_delta = 0.0
        self._decay_left = 0
        self._lead_s = 0.0
        self._lead_left = 0
        self._lead_started_at = -1.0
        self._done_mark = 0
        self._done_at = 0.0
        self._callbacks = 0
        self._underruns = 0
        self._gaps = 0
        self._gap_frames = 0
        self._gap_open = False
        self._gap_pending = 0
        self._mix_ring = RingBuffer(1, 1)  # producer: mix(); consumer: the callback
        self._mix_buf = np.zeros(1, dtype=np.float32)
        self._device_underflows = 0
        self._samples_played = 0

    # --- properties (any thread) ---------------------------------------------------------------
    @property
    def underruns(self) -> int:
        """Times the queue ran dry in the middle of an utterance (the writer was too slow)."""
        return self._underruns

    @property
    def gaps(self) -> int:
        """Underruns after which the same utterance went on: silences the listener heard inside it."""
        return self._gaps

    @property
    def gap_s(self) -> float:
        """Total length of those gaps (device-rate frames of silence between the utterance's audio)."""
        rate = self._device_rate_hz
        return self._gap_frames / rate if rate else 0.0

    @property
    def device_underflows(self) -> int:
        """Blocks PortAudio reported as output underflow (our callback ran late)."""
        return self._device_underflows

    @property
    def samples_played(self) -> int:
        """Frames of queued audio (device rate, lead silence excluded) handed to the device."""
        return self._samples_played

    @property
    def played_s(self) -> float:
        rate = self._device_rate_hz
        return self._samples_played / rate if rate else 0.0

    @property
    def first_sample_at(self) -> float | None:
        """``time.perf_counter()`` at which the latest utterance's first sample reaches the DAC.

        Estimated from the callback time plus the host's reported output latency; None until
        audio plays, and cleared by :meth:`cancel`.
        """
        return self._first_sample_at

    @property
    def first_sample_latency_s(self) -> float:
        """The output latency inside :attr:`first_sample_at`: how long after the callback handed the
        first sample to the host it was due at the DAC (``outputBufferDacTime - currentTime``)."""
        return self._first_sample_latency_s

    @property
    def requested_latency_s(self) -> float:
        """The host buffering this Player asks for when it opens its stream."""
        return self._opts.latency_s

    def reopen(self, latency_s: float) -> None:
        """Close the stream and open it again with ``latency_s`` of host buffering. For the owner
        thread, when nothing plays: anything still queued is dropped, but unlike :meth:`stop` this
        is not a cancel (``first_sample_at`` and ``played_s_at_cancel`` stay). Raises
        AudioDeviceError like :meth:`start`."""
        with self._write_lock:
            self._opts = replace(self._opts, latency_s=latency_s)
            self._close_stream()
            self.start()

    @property
    def output_latency_s(self) -> float:
        """The open stream's output latency as the host reports it (0 before the first start)."""
        return self._latency_s

    @property
    def cancel_generation(self) -> int:
        """Changes with every :meth:`cancel`; pass it to :meth:`write` as ``cancel_gen``."""
        return self._cancel_gen

    @property
    def queued_s(self) -> float:
        rate = self._device_rate_hz
        return self._ring.available / rate if rate else 0.0

    @property
    def free_s(self) -> float:
        """Seconds of audio that ``write`` accepts right now without blocking."""
        rate = self._device_rate_hz
        return self._ring.free / rate if rate else 0.0

    @property
    def played_s_at_cancel(self) -> float | None:
        """``played_s`` when the latest :meth:`cancel` arrived (None: never cancelled)."""
        return self._played_s_at_cancel

    @property
    def device_rate_hz(self) -> int:
        return self._device_rate_hz

    @property
    def error(self) -> AudioDeviceError | None:
        if self._error is None and self._stream_died:
            self._error = device_lost("output", "The speaker stopped unexpectedly (was it unplugged?).")
        return self._error

    # --- lifecycle -----------------------------------------------------------------------------
    def start(self) -> None:
        """Open and start the output stream (silence until audio is written).

        Idempotent while healthy; after a device error it opens the device again. Raises
        AudioDeviceError if no usable speaker.
        """
        with self._write_lock:
            if self._stream is not None and self.error is None:
                return
            self._close_stream()
            device = resolve_device(self._device_spec, "output", backend=self._backend)
            channels = max(1, min(device.max_output_channels, MAX_PLAYBACK_CHANNELS))
            rate = device.default_rate_hz
            self._allocate(rate)
            self._error = None
            self._stream_died = False
            self._closing = False
            self._started_at = time.perf_counter()
            self._last_progress = self._started_at
            self._seen_callbacks = 0
            self._callbacks = 0
            self._stream = self._backend.open_stream(
                "output",
                device=device,
                rate_hz=rate,
                channels=channels,
                block_frames=max(1, round(rate * self._opts.block_s)),
                latency_s=self._opts.latency_s,
                callback=self._on_audio,
                finished_callback=self._on_finished,
            )
            try:
                self._latency_s = float(self._stream.latency)
            except Exception:
                self._latency_s = 0.0
            logger.info("Speaker open: %s, %d Hz, %d ch", device.key, rate, channels)

    def _allocate(self, rate: int) -> None:
        o = self._opts
        self._device_rate_hz = rate
        self._ring = RingBuffer(max(1, round(rate * o.queue_s)), 1)
        max_block = max(1, round(rate * MAX_CALLBACK_S))
        self._mono = np.zeros(max_block, dtype=np.float32)
        self._mix_buf = np.zeros(max_block, dtype=np.float32)
        self._mix_ring = RingBuffer(max(1, round(rate * MIX_QUEUE_S)), 1)
        self._gain_buf = np.zeros(max_block, dtype=np.float32)
        self._tail_buf = np.zeros(max_block, dtype=np.float32)
        self._index0 = np.arange(max_block, dtype=np.float32)
        self._index1 = self._index0 + 1.0
        self._fade_in_frames = max(1, round(rate * o.fade_in_s))
        self._fade_out_frames = max(1, round(rate * o.fade_out_s))
        self._cancel_fade_frames = max(1, round(rate * o.cancel_fade_s))
        self._resampler = None
        if rate != MODEL_SAMPLE_RATE_HZ:
            self._resampler = soxr.ResampleStream(
                MODEL_SAMPLE_RATE_HZ, rate, 1, dtype="float32", quality=o.resample_quality
            )
        self._end_mark = self._discard_until = self._done_mark = 0
        # The cancel generation only grows (writers hold on to it across a re-open).
        self._seen_cancel_gen = self._resampler_gen = self._cancel_gen
        self._cancelling = self._playing = self._utterance_started = False
        self._gap_open = False
        self._gap_pending = 0
        self._gain = self._last_value = self._decay_level = self._decay_delta = 0.0
        self._decay_left = 0
        self._lead_s = o.lead_silence_s + o.latency_s
        self._lead_left = round(rate * self._lead_s)
        self._lead_started_at = -1.0

    def write(self, pcm16k: np.ndarray, *, timeout_s: float | None = None, cancel_gen: int | None = None) -> bool:
        """Queue float32 mono audio at 16 kHz, (n_samples,). Starts the stream if needed.

        Blocks while the queue is full (backpressure; see ``free_s`` to avoid blocking).
        Returns True when everything was queued, False if :meth:`cancel` was called meanwhile
        (the rest is dropped) or, with ``cancel_gen``, already before. Raises AudioDeviceError if
        the device fails or accepts nothing for ``timeout_s``.
        """
        audio = np.asarray(pcm16k, dtype=np.float32)
        if audio.ndim != 1:
            raise ValueError(f"pcm16k must be mono (n_samples,), got shape {audio.shape}")
        with self._write_lock:
            if self._stream is None:
                self.start()
            self._raise_if_failed()
            gen = self._cancel_gen
            if cancel_gen is not None and cancel_gen != gen:
                return False
            if self._resampler is not None:
                if self._resampler_gen != gen:  # a cancel happened: forget the old utterance's filter state
                    self._resampler.clear()
                    self._resampler_gen = gen
                audio = self._resampler.resample_chunk(audio)
            return self._push(audio, gen, timeout_s)

    def mix(self, pcm16k: np.ndarray) -> bool:
        """Mix a short sound (float32 mono 16 kHz) on top of whatever plays, from the next block on.

        Never waits for the queue and is not cut by :meth:`cancel`. Returns False if it did not
        fit in full (``MIX_QUEUE_S``); the rest is dropped. Raises AudioDeviceError like ``write``.
        """
        audio = np.asarray(pcm16k, dtype=np.float32)
        if audio.ndim != 1:
            raise ValueError(f"pcm16k must be mono (n_samples,), got shape {audio.shape}")
        with self._write_lock:
            if self._stream is None:
                self.start()
            self._raise_if_failed()
            if self._device_rate_hz != MODEL_SAMPLE_RATE_HZ:
                audio = soxr.resample(audio, MODEL_SAMPLE_RATE_HZ, self._device_rate_hz, self._opts.resample_quality)
            return self._mix_ring.write(audio) == audio.shape[0]

    def finish(self, *, timeout_s: float | None = None) -> bool:
        """Mark the end of the current utterance: flush the resampler, fade the tail out.

        Returns False if cancelled meanwhile. :meth:`wait_done` then waits for the end mark.
        """
        with self._write_lock:
            if self._stream is None:
                return True
            gen = self._cancel_gen
            ok = True
            if self._resampler is not None:
                if self._resampler_gen == gen:
                    tail = self._resampler.resample_chunk(np.zeros(0, dtype=np.float32), last=True)
                    ok = self._push(tail, gen, timeout_s)
                self._resampler.clear()
                self._resampler_gen = gen
            self._end_mark = self._ring.total_written
            return ok

    def wait_done(self, timeout_s: float) -> bool:
        """Wait until everything up to the last :meth:`finish` has left the speaker.

        Returns False on timeout. Raises AudioDeviceError if the device failed.
        """
        deadline = time.perf_counter() + timeout_s
        while True:
            if self._stream is None:
                return True
            self._raise_if_failed()
            end = self._end_mark
            if self._done_mark >= end and self._ring.total_read >= end and time.perf_counter() >= self._done_at:
                return True
            if time.perf_counter() >= deadline:
                return False
            time.sleep(_POLL_S)

    def cancel(self) -> None:
        """Fade out within ``cancel_fade_s`` and drop everything queued. Any thread; returns at once."""
        with self._mark_lock:
            self._played_s_at_cancel = self.played_s
            self._discard_until = max(self._discard_until, self._ring.total_written)
            self._first_sample_at = None
            self._cancel_gen += 1  # after the mark: a callback that sees the new generation sees it too
        if self._stream is None:
            self._ring.skip_to(self._discard_until)  # no callback consuming: flush here

    def wait_flushed(self, timeout_s: float) -> bool:
        """Wait until a :meth:`cancel` has faded out and dropped the queue; False on timeout."""
        deadline = time.perf_counter() + timeout_s
        while (
            self._stream is not None
            and self.error is None
            and (
                self._seen_cancel_gen != self._cancel_gen
                or self._cancelling
                or self._ring.total_read < self._discard_until
            )
        ):
            if time.perf_counter() >= deadline:
                return False
            time.sleep(_POLL_S)
        return True

    def stop(self) -> None:
        """Fade out, drop the queue and close the stream. Safe to call twice."""
        self.cancel()
        with self._write_lock:
            if self._stream is None:
                return
            self.wait_flushed(self._opts.cancel_fade_s + 4 * self._opts.block_s + 0.2)
            self._close_stream()

    def __enter__(self) -> Player:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- audio thread --------------------------------------------------------------------------
    def _on_audio(self, outdata: np.ndarray, frames: int, time_info: Any, status: Any) -> None:
        # Runs on the PortAudio thread: copies and ufuncs into preallocated buffers only.
        self._callbacks += 1
        if status.output_underflow:
            self._device_underflows += 1
        n = min(frames, self._mono.shape[0])
        mono = self._mono[:n]
        mono.fill(0.0)
        ring = self._ring
        pos = 0
        if self._lead_left > 0:
            pos = self._lead_silence(n, time_info)
        lead = pos

        if self._cancel_gen != self._seen_cancel_gen:
            self._seen_cancel_gen = self._cancel_gen
            self._utterance_started = False
            self._gap_open = False
            if ring.total_read >= self._discard_until and not self._cancelling and self._playing:
                self._stop_playing(decay_from=self._last_value)  # queue already empty: just land softly
        if ring.total_read < self._discard_until and not self._cancelling:
            if self._playing and self._gain > 0.0:
                self._cancelling = True
            else:
                ring.skip_to(self._discard_until)
                self._playing = False
                self._gain = 0.0

        if self._decay_left > 0:
            pos += self._emit_decay(mono, pos)
        if pos < n:
            self._play_into(mono, pos, time_info)
        if self._done_mark < self._end_mark <= ring.total_read:
            # Covers utterances with no audio at all (finish() right after cancel or start()), and
            # an end marked while the queue was dry: that silence was the end, not a gap.
            self._done_mark = self._end_mark
            self._done_at = time.perf_counter() + self._latency_s
            self._gap_open = False
        self._last_value = float(mono[n - 1]) if n else 0.0
        if lead < n and self._mix_ring.available:
            self._mix_into(mono, lead)
        outdata[:n] = mono[:, None]
        if n < frames:
            outdata[n:] = 0.0

    def _mix_into(self, mono: np.ndarray, pos: int) -> None:
        k = self._mix_ring.read_into(self._mix_buf[: mono.shape[0] - pos])
        seg = mono[pos : pos + k]
        seg += self._mix_buf[:k]
        np.clip(seg, -1.0, 1.0, out=seg)

    def _lead_silence(self, n: int, time_info: Any) -> int:
        """Frames of this block that stay silent at stream start.

        The lead lasts ``lead_silence_s + latency_s``, both in frames and on the stream's clock
        since the first callback. PulseAudio (through ALSA) prefills its buffer in a burst, stalls
        for up to ~1.5 s, then drops about the first buffer plus 60 ms of what it was given:
        measured on a null sink, 0.1 s of lead lost speech at ``latency_s=0.1``; 0.2 s did not.
        """
        now = float(time_info.currentTime)
        if self._lead_started_at < 0.0:
            self._lead_started_at = now
        silent = self._lead_left
        if now > 0.0:  # a host without a stream clock reports 0: then frames alone decide
            until_s = self._lead_started_at + self._lead_s - now
            silent = max(silent, math.ceil(until_s * self._device_rate_hz - 1e-6))
        pos = min(n, silent)
        self._lead_left = silent - pos
        return pos

    def _play_into(self, mono: np.ndarray, pos: int, time_info: Any) -> None:
        ring = self._ring
        n = mono.shape[0]
        p0 = ring.total_read
        want = n - pos
        if self._cancelling:
            limit, hard_end = self._discard_until, True
            want = min(want, math.ceil(self._gain * self._cancel_fade_frames))
        elif p0 < self._end_mark:
            limit, hard_end = self._end_mark, True
        else:
            limit, hard_end = ring.total_written, False
        seg = mono[pos : pos + want]
        k = ring.read_into(seg, limit)
        starving = not hard_end and k < n - pos
        if self._gap_open and not self._cancelling:
            if k > 0:  # the utterance goes on after a dry spell: that silence was a gap
                self._gaps += 1
                self._gap_frames += self._gap_pending
                self._gap_open = False
            else:
                self._gap_pending += n - pos
        if k > 0:
            seg = seg[:k]
            target, fade_frames = (0.0, self._cancel_fade_frames) if self._cancelling else (1.0, self._fade_in_frames)
            if self._gain != target:
                g = self._gain_buf[:k]
                np.multiply(self._index1[:k], 1.0 / fade_frames, out=g)
                if target == 0.0:
                    np.negative(g, out=g)
                g += self._gain
                np.clip(g, 0.0, 1.0, out=g)
                seg *= g
                self._gain = float(g[k - 1])
            if hard_end and limit - (p0 + k) < self._fade_out_frames:
                # The end is known ahead of time: fade the last fade_out_frames of real audio.
                t = self._tail_buf[:k]
                np.subtract(float(limit - p0), self._index0[:k], out=t)
                t *= 1.0 / self._fade_out_frames
                np.minimum(t, 1.0, out=t)
                seg *= t
            self._samples_played += k
            if not self._utterance_started and not self._cancelling:
                self._utterance_started = True
                offset = self._dac_offset_s(time_info)
                self._first_sample_latency_s = offset
                self._first_sample_at = time.perf_counter() + offset + pos / self._device_rate_hz
            self._playing = True
        reached = ring.total_read
        if self._cancelling:
            if self._gain <= 0.0 or reached >= self._discard_until:
                ring.skip_to(self._discard_until)
                self._cancelling = False
                self._stop_playing(decay_from=float(mono[pos + k - 1]) if k else self._last_value)
        elif hard_end and reached >= limit:
            self._stop_playing(decay_from=0.0)
            self._utterance_started = False
            self._gap_open = False
            self._done_at = time.perf_counter() + self._latency_s
            self._done_mark = limit
        elif starving and self._playing:
            # The writer fell behind. The end was not known in advance, so there was no audio left
            # to fade: ramp from the last sample down to zero instead of dropping to it.
            self._underruns += 1
            self._gap_open = True
            self._gap_pending = n - pos - k
            self._stop_playing(decay_from=float(mono[pos + k - 1]) if k else self._last_value)
            self._emit_decay(mono, pos + k)

    def _stop_playing(self, decay_from: float) -> None:
        self._playing = False
        self._gain = 0.0
        if decay_from != 0.0:
            self._decay_level = decay_from
            self._decay_delta = decay_from / self._fade_out_frames
            self._decay_left = self._fade_out_frames

    def _emit_decay(self, mono: np.ndarray, pos: int) -> int:
        """Write the pending ramp-to-zero into mono[pos:]; return how many frames it used."""
        d = min(self._decay_left, mono.shape[0] - pos)
        if d <= 0:
            return 0
        seg = mono[pos : pos + d]
        np.multiply(self._index1[:d], -self._decay_delta, out=seg)
        seg += self._decay_level
        self._decay_level -= self._decay_delta * d
        self._decay_left -= d
        return d

    @staticmethod
    def _dac_offset_s(time_info: Any) -> float:
        offset = float(time_info.outputBufferDacTime - time_info.currentTime)
        return offset if 0.0 <= offset < MAX_PLAUSIBLE_LATENCY_S else 0.0

    def _on_finished(self) -> None:
        if not self._closing:
            self._stream_died = True

    # --- helpers (caller thread) ---------------------------------------------------------------
    def _push(self, data: np.ndarray, gen: int, timeout_s: float | None) -> bool:
        deadline = None if timeout_s is None else time.perf_counter() + timeout_s
        done = 0
        while done < data.shape[0]:
            if self._cancel_gen != gen:
                return False
            done += self._ring.write(data[done:])
            if self._cancel_gen != gen:
                # cancel() raced with this copy: make sure the callback drops what we just added.
                with self._mark_lock:
                    self._discard_until = max(self._discard_until, self._ring.total_written)
                return False
            if done < data.shape[0]:
                self._raise_if_failed()
                if deadline is not None and time.perf_counter() >= deadline:
                    raise device_lost("output", f"The speaker accepted no audio for {timeout_s:.1f} s.")
                time.sleep(self._opts.block_s / 2)
        return True

    def _raise_if_failed(self) -> None:
        error = self.error
        if error is None and self._stream is not None:
            error = self._health_error()
            if error is not None:
                self._error = error
        if error is not None:
            raise error

    def _health_error(self) -> AudioDeviceError | None:
        now = time.perf_counter()
        callbacks = self._callbacks
        if callbacks != self._seen_callbacks:
            self._seen_callbacks = callbacks
            self._last_progress = now
            return None
        if callbacks == 0 and now - self._started_at > self._opts.first_callback_timeout_s:
            return device_lost(
                "output", f"The speaker did not start within {self._opts.first_callback_timeout_s:.0f} s."
            )
        if callbacks > 0 and now - self._last_progress > self._opts.stall_timeout_s:
            return device_lost("output", "The speaker stopped taking audio (was it unplugged?).")
        return None

    def _close_stream(self) -> None:
        stream, self._stream = self._stream, None
        if stream is None:
            return
        self._closing = True
        try:
            stream.stop()  # lets the faded-out tail already in the host buffer play: no click
        except Exception as exc:
            logger.warning("Stopping the speaker stream failed: %s", exc)
        try:
            stream.close()
        except Exception as exc:
            logger.warning("Closing the speaker stream failed: %s", exc)
