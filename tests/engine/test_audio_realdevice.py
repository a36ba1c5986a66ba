"""Recorder and Player with real sounddevice streams against PulseAudio null sinks (tests/pulse.py)."""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest

from engine.audio.capture import Recorder
from engine.audio.devices import list_devices, refresh_devices, resolve_device
from engine.audio.io import load_audio
from engine.audio.playback import Player
from engine.audio.resample import MODEL_SAMPLE_RATE_HZ
from engine.bench.pulse import best_correlation
from engine.errors import AudioDeviceError
from tests.engine.audio_fixtures import QUESTION_TEXT, espeak_wav, read_wav
from tests.pulse import PulseServer, pulse_server
from tests.waiting import wait_until

__all__ = ["pulse_server"]  # the fixture is used by name

pytestmark = [pytest.mark.timeout(120), pytest.mark.slow]

STREAM_START_TIMEOUT_S = 10.0  # the recipe saw first input blocks up to 1.9 s after start


@pytest.fixture(scope="module")
def question_wav(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return espeak_wav(QUESTION_TEXT, tmp_path_factory.mktemp("speech"))


def test_pulse_devices_are_listed_with_defaults_and_stable_keys(pulse_server: PulseServer) -> None:
    devices = list_devices()
    assert any(d.is_default_input for d in devices) and any(d.is_default_output for d in devices)
    mic = resolve_device(None, "input")
    assert mic.max_input_channels > 0 and mic.default_rate_hz > 0 and mic.host_api
    again = resolve_device(mic.key, "input")
    assert (again.key, again.index) == (mic.key, mic.index)
    refresh_devices()
    assert resolve_device(mic.key, "input").key == mic.key  # same key after a re-scan


def test_recorder_captures_speech_played_into_the_virtual_mic(pulse_server: PulseServer, question_wav: Path) -> None:
    source = load_audio(question_wav)
    rec = Recorder()
    rec.open()
    try:
        assert rec.wait_ready(STREAM_START_TIMEOUT_S), "no input block from the PulseAudio mic"
        rec.start()
        started = rec.duration_s
        feeder = subprocess.Popen(["paplay", "-d", "micfeed", str(question_wav)], env=pulse_server.env())
        peak_level = rec.level_dbfs
        while feeder.poll() is None:  # the meter is read from another thread while audio flows
            peak_level = max(peak_level, rec.level_dbfs)
            time.sleep(0.01)
        assert feeder.returncode == 0
        after_play = rec.duration_s
        wait_until(lambda: rec.duration_s >= after_play + 0.5, 10.0, "0.5 s more capture after paplay")
        audio = rec.stop()
    finally:
        rec.close()
    assert started < 0.1
    assert audio.dtype == np.float32 and audio.ndim == 1
    source_s = source.shape[0] / MODEL_SAMPLE_RATE_HZ
    captured_s = audio.shape[0] / MODEL_SAMPLE_RATE_HZ
    assert source_s + 0.3 <= captured_s <= source_s + 3.0
    assert abs(captured_s - rec.duration_s) < 0.05
    corr, lag = best_correlation(source, audio)
    assert corr > 0.9, f"captured speech correlates only {corr:.3f} with the source"
    assert lag + source.shape[0] <= audio.shape[0]  # all of the question is in the take
    assert peak_level > -40.0  # the meter moved while speech was playing
    assert rec.overflows == 0


def test_player_output_reaches_the_speaker_sink(pulse_server: PulseServer, question_wav: Path, tmp_path: Path) -> None:
    source = load_audio(question_wav)
    out_wav = tmp_path / "played.wav"
    recorder = subprocess.Popen(
        ["parecord", "-d", "spk.monitor", "--rate=16000", "--channels=1", "--file-format=wav", str(out_wav)],
        env=pulse_server.env(),
    )
    try:
        wait_until(lambda: _source_outputs(pulse_server) > 0, 10.0, "parecord to connect")
        player = Player()
        player.start()
        try:
            t0 = time.perf_counter()
            for start in range(0, source.shape[0], 4000):  # streamed in 250 ms chunks, like the vocoder
                assert player.write(source[start : start + 4000])
            assert player.finish()
            assert player.wait_done(30.0)
            elapsed = time.perf_counter() - t0
            first = player.first_sample_at
            played_s = player.played_s
            underruns = player.underruns
        finally:
            player.stop()
        time.sleep(0.3)  # let the null sink's monitor pass the tail on to parecord
    finally:
        recorder.send_signal(signal.SIGINT)
        recorder.wait(timeout=10)
    recorded, rate = read_wav(out_wav)
    assert rate == MODEL_SAMPLE_RATE_HZ
    source_s = source.shape[0] / MODEL_SAMPLE_RATE_HZ
    assert played_s == pytest.approx(source_s, abs=0.01)
    assert elapsed >= source_s  # paced by the device, not dumped
    assert first is not None and t0 <= first <= t0 + elapsed
    assert underruns == 0
    corr, lag = best_correlation(source, recorded)
    assert corr > 0.9, f"played speech correlates only {corr:.3f} with the source"
    assert lag + source.shape[0] <= recorded.shape[0]  # the whole question arrived
    assert _loud_extent_s(recorded) == pytest.approx(_loud_extent_s(source), abs=0.05)


def test_player_cancel_silences_the_speaker_quickly(pulse_server: PulseServer, tmp_path: Path) -> None:
    t = np.arange(3 * MODEL_SAMPLE_RATE_HZ) / MODEL_SAMPLE_RATE_HZ
    tone = (0.5 * np.sin(2 * np.pi * 440.0 * t)).astype(np.float32)
    player = Player()
    player.start()
    try:
        player.write(tone[:MODEL_SAMPLE_RATE_HZ])
        wait_until(lambda: player.played_s > 0.3, 10.0, "playback to start")
        player.cancel()
        assert player.wait_flushed(1.0)
        assert player.queued_s == 0.0
        played = player.played_s
        time.sleep(0.2)
        assert player.played_s == played  # nothing more is handed to the device
        assert player.write(tone[:1600])  # and the next utterance plays
        player.finish()
        assert player.wait_done(10.0)
    finally:
        player.stop()
    with pytest.raises(AudioDeviceError, match="while 1 stream"):
        rec = Recorder()
        rec.open()
        try:
            refresh_devices()  # refused: re-initialising PortAudio would free the open stream
        finally:
            rec.close()


def _source_outputs(server: PulseServer) -> int:
    listing = subprocess.run(
        ["pactl", "list", "short", "source-outputs"], env=server.env(), capture_output=True, text=True, timeout=10
    )
    return len([line for line in listing.stdout.splitlines() if line.strip()])


def _loud_extent_s(audio: np.ndarray, threshold: float = 0.01) -> float:
    """Seconds from the first to the last sample above ``threshold`` (espeak pads with silence)."""
    loud = np.flatnonzero(np.abs(audio) > threshold)
    return float(loud[-1] - loud[0]) / MODEL_SAMPLE_RATE_HZ if loud.size else 0.0
