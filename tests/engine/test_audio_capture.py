"""Recorder against a fake input device whose callbacks the test drives."""

from __future__ import annotations

import threading
import tracemalloc

import numpy as np
import pytest
import soxr

from engine.audio.capture import LEVEL_FLOOR_DBFS, MAX_RECORDING_S, MIN_PRESS_S, Recorder, RecorderOptions
from engine.audio.fake_device import FakeSoundDevice, StreamStatus, fake_device
from engine.audio.resample import MODEL_SAMPLE_RATE_HZ, to_mono
from engine.errors import AudioDeviceError
from tests.engine.audio_fixtures import dominant_frequency_hz, sine
from tests.waiting import wait_until

RATE_48K = 48_000


def stereo_48k_backend() -> FakeSoundDevice:
    return FakeSoundDevice(devices=[fake_device(0, "Fake Mic", inputs=2, rate_hz=RATE_48K, default_input=True)])


def test_constants_match_the_encoder_window_and_tap_rejection() -> None:
    assert MAX_RECORDING_S == 30.0
    assert 0.2 <= MIN_PRESS_S <= 0.5


def test_48k_stereo_becomes_16k_mono_with_the_right_length_and_pitch() -> None:
    backend = stereo_48k_backend()
    rec = Recorder(backend=backend)
    rec.start()
    stream = backend.last
    assert (stream.rate_hz, stream.channels) == (RATE_48K, 2)
    left = sine(440.0, 1.5, RATE_48K, 0.5)
    right = sine(440.0, 1.5, RATE_48K, 0.3)
    stream.push(np.stack([left, right], axis=1))
    assert rec.duration_s == pytest.approx(1.5)
    audio = rec.stop()
    assert audio.dtype == np.float32 and audio.ndim == 1
    assert audio.shape[0] == pytest.approx(1.5 * MODEL_SAMPLE_RATE_HZ, abs=2)
    assert dominant_frequency_hz(audio, MODEL_SAMPLE_RATE_HZ) == pytest.approx(440.0, abs=1.0)
    middle = audio[4000:20000]
    assert np.sqrt(np.mean(middle**2)) == pytest.approx(0.4 / np.sqrt(2), rel=0.01)  # mean of the channels
    assert stream.closed  # start() opened it, so stop() closed it


def test_streaming_capture_equals_one_pass_resampling() -> None:
    backend = stereo_48k_backend()
    rng = np.random.default_rng(1)
    raw = (0.1 * rng.standard_normal((RATE_48K, 2))).astype(np.float32)
    rec = Recorder(backend=backend)
    rec.start()
    for start in range(0, raw.shape[0], 5000):  # odd sizes, split into device blocks by the fake
        backend.last.push(raw[start : start + 5000])
    captured = rec.stop()
    offline = soxr.resample(to_mono(raw), RATE_48K, MODEL_SAMPLE_RATE_HZ, quality="HQ")
    np.testing.assert_allclose(captured, offline, atol=1e-6)


def test_level_meter_reads_full_scale_sine_as_minus_3_dbfs() -> None:
    backend = stereo_48k_backend()
    rec = Recorder(backend=backend)
    assert rec.level_dbfs == LEVEL_FLOOR_DBFS
    rec.open()
    backend.last.push(sine(1000.0, 0.1, RATE_48K, 1.0, channels=2))
    assert rec.level_dbfs == pytest.approx(-3.01, abs=0.01)
    backend.last.push(sine(1000.0, 0.1, RATE_48K, 0.1, channels=2))
    assert rec.level_dbfs == pytest.approx(-23.01, abs=0.01)
    backend.last.push(np.zeros((960, 2), dtype=np.float32))
    assert rec.level_dbfs == LEVEL_FLOOR_DBFS
    rec.close()


def test_open_stream_is_kept_between_takes_and_only_takes_are_recorded() -> None:
    backend = stereo_48k_backend()
    rec = Recorder(backend=backend)
    rec.open()
    assert rec.wait_ready(0.01) is False
    backend.last.push(np.ones((960, 2), dtype=np.float32))  # before the press: not recorded
    assert rec.wait_ready(1.0)
    rec.start()
    backend.last.push(sine(300.0, 0.5, RATE_48K, 0.5, channels=2))
    first = rec.stop()
    rec.start()
    backend.last.push(sine(300.0, 0.25, RATE_48K, 0.5, channels=2))
    second = rec.stop()
    assert len(backend.streams) == 1 and not backend.last.closed
    assert first.shape[0] == pytest.approx(8000, abs=2) and second.shape[0] == pytest.approx(4000, abs=2)
    assert np.max(np.abs(first)) < 0.6  # the pre-press block of ones is not in the take
    rec.close()
    assert backend.last.closed


def test_thirty_second_limit_stops_recording_and_fires_once() -> None:
    backend = stereo_48k_backend()
    fired: list[str] = []
    # The fake delivers 31 s instantly; a real device takes 31 s, so give the ring room for it all.
    rec = Recorder(
        backend=backend,
        on_limit=lambda: fired.append(threading.current_thread().name),
        options=RecorderOptions(ring_s=MAX_RECORDING_S + 2),
    )
    rec.start()
    block = sine(200.0, 1.0, RATE_48K, 0.3, channels=2)
    for _ in range(31):
        backend.last.push(block)
    assert not rec.is_recording and rec.limit_reached
    assert rec.duration_s == pytest.approx(MAX_RECORDING_S)
    wait_until(lambda: fired, 5.0, "on_limit")
    backend.last.push(block)
    audio = rec.stop()
    assert fired == ["omnitalk-recorder"]  # once, on the reader thread, not the audio callback
    assert audio.shape[0] == round(MAX_RECORDING_S * MODEL_SAMPLE_RATE_HZ)
    assert rec.overflows == 0


def test_overflows_are_counted() -> None:
    backend = stereo_48k_backend()
    rec = Recorder(backend=backend, options=RecorderOptions(ring_s=0.05, read_interval_s=10.0))
    rec.start()
    backend.last.push(np.zeros((RATE_48K // 5, 2), dtype=np.float32))  # 0.2 s into a 0.05 s ring, no reader
    backend.last.push(np.zeros((960, 2), dtype=np.float32), flags=StreamStatus(input_overflow=True))
    assert rec.overflows >= 2
    rec.stop()


def test_callback_allocates_nothing_big() -> None:
    backend = stereo_48k_backend()
    rec = Recorder(backend=backend, options=RecorderOptions(read_interval_s=10.0))
    rec.start()
    stream = backend.last
    block = np.ascontiguousarray(sine(440.0, 0.02, RATE_48K, 0.5, channels=2))
    stream.push(block)
    flags, info = StreamStatus(), None
    tracemalloc.start()
    try:
        before = tracemalloc.take_snapshot()
        for _ in range(50):
            stream.callback(block, block.shape[0], info, flags)
        growth = sum(s.size_diff for s in tracemalloc.take_snapshot().compare_to(before, "filename"))
    finally:
        tracemalloc.stop()
    assert growth < 2_000  # one 20 ms stereo block alone is 7,680 bytes
    rec.stop()


def test_no_microphone_is_a_clear_error_and_the_recorder_recovers() -> None:
    backend = FakeSoundDevice(devices=[fake_device(0, "Speakers", inputs=0, default_output=True)])
    rec = Recorder(backend=backend)
    with pytest.raises(AudioDeviceError, match="No microphone found") as info:
        rec.start()
    assert "Connect a microphone" in str(info.value)
    backend.devices.append(fake_device(1, "USB Mic", outputs=0, default_input=True))
    rec.start()
    backend.last.push(np.zeros((4800, 2), dtype=np.float32))
    assert rec.stop().shape[0] == pytest.approx(1600, abs=2)


def test_busy_device_error_propagates_and_a_later_start_works() -> None:
    backend = stereo_48k_backend()
    backend.fail_next_open = AudioDeviceError("The microphone is busy.", fix="Close other programs.")
    rec = Recorder(backend=backend)
    with pytest.raises(AudioDeviceError, match="busy"):
        rec.start()
    assert not rec.is_open
    rec.start()
    assert rec.is_recording
    rec.stop()


def test_unplugged_mid_take_reports_then_restarts() -> None:
    backend = stereo_48k_backend()
    errors: list[AudioDeviceError] = []
    rec = Recorder(backend=backend, on_error=errors.append)
    rec.start()
    backend.last.push(np.zeros((4800, 2), dtype=np.float32))
    backend.last.die()
    wait_until(lambda: errors, 5.0, "on_error")
    assert "stopped unexpectedly" in errors[0].message and errors[0].fix
    with pytest.raises(AudioDeviceError, match="stopped unexpectedly"):
        rec.stop()
    assert backend.streams[0].closed
    rec.start()  # usable again: a fresh stream
    assert len(backend.streams) == 2
    backend.last.push(np.zeros((4800, 2), dtype=np.float32))
    assert rec.stop().shape[0] == pytest.approx(1600, abs=2)


def test_a_silent_stall_is_detected() -> None:
    backend = stereo_48k_backend()
    errors: list[AudioDeviceError] = []
    rec = Recorder(backend=backend, on_error=errors.append, options=RecorderOptions(stall_timeout_s=0.2))
    rec.start()
    backend.last.push(np.zeros((960, 2), dtype=np.float32))
    wait_until(lambda: errors, 5.0, "stall detection")
    assert "stopped delivering audio" in errors[0].message
    with pytest.raises(AudioDeviceError):
        rec.stop()


def test_no_first_block_is_detected() -> None:
    backend = stereo_48k_backend()
    errors: list[AudioDeviceError] = []
    rec = Recorder(backend=backend, on_error=errors.append, options=RecorderOptions(first_callback_timeout_s=0.2))
    rec.open()
    wait_until(lambda: errors, 5.0, "first-callback timeout")
    assert "delivered no audio" in errors[0].message
    rec.close()
