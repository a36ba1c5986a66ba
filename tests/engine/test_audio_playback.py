"""Player against a fake output device whose callbacks the test drives."""

from __future__ import annotations

import threading
import time
import tracemalloc
from typing import Any

import numpy as np
import pytest
import soxr

from engine.audio.fake_device import FakeSoundDevice, StreamStatus, TimeInfo, fake_device
from engine.audio.playback import Player, PlayerOptions
from engine.audio.resample import MODEL_SAMPLE_RATE_HZ
from engine.errors import AudioDeviceError
from tests.engine.audio_fixtures import dominant_frequency_hz, max_step, sine
from tests.waiting import wait_until

RATE_48K = 48_000
BLOCK = 480  # 10 ms at 48 kHz, the default block_s
LEAD = round((PlayerOptions().lead_silence_s + PlayerOptions().latency_s) * RATE_48K)  # silence at stream start
CLICK = 0.05  # a 440 Hz sine at 0.5 moves at most 0.029 per sample at 48 kHz; a click jumps ~0.5


def make_player(**options: Any) -> tuple[Player, FakeSoundDevice]:
    speaker = fake_device(0, "Fake Speaker", outputs=2, rate_hz=RATE_48K, default_output=True)
    backend = FakeSoundDevice(devices=[speaker])
    player = Player(backend=backend, options=PlayerOptions(**options))
    player.start()
    return player, backend


def test_plays_resampled_audio_after_lead_silence_with_fades() -> None:
    player, backend = make_player()
    stream = backend.last
    assert (stream.rate_hz, stream.channels, stream.block_frames) == (RATE_48K, 2, BLOCK)
    tone = sine(440.0, 0.5, MODEL_SAMPLE_RATE_HZ, 0.5)
    assert player.write(tone)
    assert player.finish()
    out = stream.pull(LEAD // BLOCK + 60)
    np.testing.assert_array_equal(out[:, 0], out[:, 1])  # mono on both channels
    mono = out[:, 0]
    assert np.all(mono[:LEAD] == 0.0)
    played = mono[LEAD:]
    assert player.samples_played == pytest.approx(0.5 * RATE_48K, abs=2)
    assert player.played_s == pytest.approx(0.5, abs=1e-4)
    assert dominant_frequency_hz(played[:24000], RATE_48K) == pytest.approx(440.0, abs=2.0)
    assert max_step(np.concatenate([[0.0], played[:600]])) < CLICK  # fade-in from silence
    end = LEAD + player.samples_played
    assert max_step(mono[end - 600 : end + 10]) < CLICK  # fade-out into silence
    assert np.all(mono[end:] == 0.0)
    assert player.underruns == 0
    assert player.wait_done(1.0)
    player.stop()
    assert stream.closed


def test_lead_silence_covers_a_prefill_burst() -> None:
    player, backend = make_player()
    stream = backend.last
    player.write(sine(440.0, 1.0, MODEL_SAMPLE_RATE_HZ, 0.5))
    burst = stream.pull(2 * LEAD // BLOCK, clock_runs=False)  # twice the lead, all "at once"
    assert np.all(burst == 0.0) and player.samples_played == 0
    after = stream.pull(LEAD // BLOCK + 2)[:, 0]  # the clock runs: the lead ends on time
    assert np.all(after[:LEAD] == 0.0) and np.max(np.abs(after[LEAD:])) > 0.3


def test_streamed_chunks_equal_one_pass_resampling() -> None:
    player, backend = make_player(lead_silence_s=0.0, latency_s=0.0, fade_in_s=1e-9, fade_out_s=1e-9)
    rng = np.random.default_rng(3)
    audio = (0.1 * rng.standard_normal(8000)).astype(np.float32)
    for start in range(0, audio.shape[0], 1234):
        player.write(audio[start : start + 1234])
    player.finish()
    out = backend.last.pull(60)[:, 0]
    offline = soxr.resample(audio, MODEL_SAMPLE_RATE_HZ, RATE_48K, quality="HQ")
    np.testing.assert_allclose(out[: offline.shape[0]], offline, atol=1e-6)


def test_cancel_fades_out_fast_and_flushes_the_queue() -> None:
    player, backend = make_player(lead_silence_s=0.0, latency_s=0.0)
    stream = backend.last
    player.write(sine(440.0, 1.0, MODEL_SAMPLE_RATE_HZ, 0.5))
    before = stream.pull(20)[:, 0]
    assert np.max(np.abs(before[-BLOCK:])) > 0.4
    player.cancel()
    after = stream.pull(5)[:, 0]
    assert max_step(np.concatenate([before[-10:], after])) < CLICK
    assert np.all(after[round(0.010 * RATE_48K) :] == 0.0)  # silent within 10 ms
    assert player.queued_s == 0.0 and player.wait_flushed(0.1)
    assert player.first_sample_at is None
    # The next utterance starts cleanly with a fade-in.
    player.write(sine(440.0, 0.2, MODEL_SAMPLE_RATE_HZ, 0.5))
    nxt = stream.pull(10)[:, 0]
    assert max_step(np.concatenate([[0.0], nxt])) < CLICK and np.max(np.abs(nxt)) > 0.4
    assert player.first_sample_at is not None
    assert player.underruns == 0


def test_underruns_are_counted_once_per_dry_spell_and_not_at_the_end() -> None:
    player, backend = make_player(lead_silence_s=0.0, latency_s=0.0)
    stream = backend.last
    chunk = sine(440.0, 0.1, MODEL_SAMPLE_RATE_HZ, 0.5)
    player.write(chunk)
    out1 = stream.pull(20)[:, 0]  # 0.2 s of callbacks for ~0.1 s of audio
    assert player.underruns == 1
    player.write(chunk)
    out2 = stream.pull(20)[:, 0]
    assert player.underruns == 2
    assert max_step(np.concatenate([out1, out2])) < CLICK  # dry spells fade out and back in
    player.write(chunk)
    player.finish()
    stream.pull(20)
    assert player.underruns == 2  # a finished utterance is not an underrun
    stream.pull(1, flags=StreamStatus(output_underflow=True))
    assert player.device_underflows == 1


def test_write_blocks_when_the_queue_is_full_and_cancel_releases_it() -> None:
    player, backend = make_player(queue_s=0.2, lead_silence_s=0.0, latency_s=0.0)
    stream = backend.last
    result: list[bool] = []
    writer = threading.Thread(target=lambda: result.append(player.write(np.zeros(8000, dtype=np.float32) + 0.1)))
    writer.start()
    wait_until(lambda: player.free_s == 0.0, 5.0, "the queue to fill")
    writer.join(0.05)  # it stays blocked: nothing drains the queue
    assert writer.is_alive() and player.queued_s == pytest.approx(0.2, abs=1e-3)  # bounded
    stream.pull(10)  # the device takes 0.1 s: the writer refills it
    wait_until(lambda: player.free_s == 0.0 and player.samples_played == 4800, 5.0, "the writer to refill")
    assert writer.is_alive()
    player.cancel()
    writer.join(5.0)
    assert result == [False]
    stream.pull(3)
    assert player.queued_s == 0.0


def test_write_times_out_when_the_device_takes_nothing() -> None:
    player, _ = make_player(queue_s=0.05)
    with pytest.raises(AudioDeviceError, match="accepted no audio"):
        player.write(np.zeros(4000, dtype=np.float32), timeout_s=0.1)


def test_wait_done_waits_for_the_end_of_the_utterance() -> None:
    player, backend = make_player(lead_silence_s=0.0, latency_s=0.0)
    player.write(sine(440.0, 0.1, MODEL_SAMPLE_RATE_HZ, 0.5))
    player.finish()
    assert not player.wait_done(0.05)
    backend.last.pull(11)
    assert player.wait_done(1.0)
    player.finish()  # an empty utterance is done at once
    backend.last.pull(1)
    assert player.wait_done(1.0)


def test_first_sample_time_includes_lead_and_reported_latency() -> None:
    player, backend = make_player()
    player.write(sine(440.0, 0.1, MODEL_SAMPLE_RATE_HZ, 0.5))
    t0 = time.perf_counter()
    backend.last.pull(LEAD // BLOCK + 2)
    t1 = time.perf_counter()
    first = player.first_sample_at
    assert first is not None
    latency = backend.last.latency  # the fake reports the suggested latency as its DAC delay
    assert latency == pytest.approx(PlayerOptions().latency_s)
    assert t0 + latency <= first <= t1 + latency + 0.001  # the lead silence ended at a block edge


def test_device_lost_raises_then_start_recovers() -> None:
    player, backend = make_player()
    player.write(np.zeros(1600, dtype=np.float32))
    backend.last.die()
    with pytest.raises(AudioDeviceError, match="stopped unexpectedly") as info:
        player.write(np.zeros(1600, dtype=np.float32))
    assert info.value.fix
    with pytest.raises(AudioDeviceError):
        player.wait_done(0.1)
    player.start()
    assert len(backend.streams) == 2 and backend.streams[0].closed
    assert player.write(np.zeros(1600, dtype=np.float32))


def test_stalled_device_is_detected() -> None:
    player, _ = make_player(queue_s=0.05, stall_timeout_s=0.1, first_callback_timeout_s=0.1)
    with pytest.raises(AudioDeviceError, match="did not start"):
        player.write(np.zeros(8000, dtype=np.float32))


def test_no_speaker_is_a_clear_error() -> None:
    backend = FakeSoundDevice(devices=[fake_device(0, "Mic only", outputs=0, default_input=True)])
    with pytest.raises(AudioDeviceError, match="No speaker found") as info:
        Player(backend=backend).start()
    assert "speakers or headphones" in str(info.value)


def test_write_rejects_multichannel_input() -> None:
    player, _ = make_player()
    with pytest.raises(ValueError, match="mono"):
        player.write(np.zeros((10, 2), dtype=np.float32))


def test_callback_allocates_nothing_big() -> None:
    player, backend = make_player(lead_silence_s=0.0, latency_s=0.0, queue_s=3.0)
    stream = backend.last
    player.write(sine(440.0, 2.0, MODEL_SAMPLE_RATE_HZ, 0.5))
    out = np.zeros((BLOCK, 2), dtype=np.float32)
    flags, info = StreamStatus(), TimeInfo()
    stream.callback(out, BLOCK, info, flags)
    tracemalloc.start()
    try:
        before = tracemalloc.take_snapshot()
        for i in range(50):
            if i == 25:
                player.cancel()  # the fade-out path too
            stream.callback(out, BLOCK, info, flags)
        growth = sum(s.size_diff for s in tracemalloc.take_snapshot().compare_to(before, "filename"))
    finally:
        tracemalloc.stop()
    assert growth < 1_000  # one block of float32 alone is 1,920 bytes


def test_no_clicks_under_random_writes_pulls_and_cancels() -> None:
    player, backend = make_player(lead_silence_s=0.0, latency_s=0.0, queue_s=1.0)
    stream = backend.last
    rng = np.random.default_rng(7)
    phase = 0.0
    outputs = []
    for step in range(400):
        action = rng.random()
        if action < 0.45 and player.free_s > 0.2:
            n = int(rng.integers(1, 1600))
            t = phase + np.arange(n) / MODEL_SAMPLE_RATE_HZ
            player.write((0.5 * np.sin(2 * np.pi * 440.0 * t)).astype(np.float32))
            phase = t[-1] + 1 / MODEL_SAMPLE_RATE_HZ
        elif action < 0.48:
            player.cancel()
        elif action < 0.5:
            player.finish()
        outputs.append(stream.pull(int(rng.integers(1, 4)))[:, 0])
        assert np.all(np.isfinite(outputs[-1])), f"step {step}"
    audio = np.concatenate(outputs)
    assert np.max(np.abs(audio)) > 0.4  # it really played
    assert max_step(audio) < CLICK
    assert player.underruns > 0
