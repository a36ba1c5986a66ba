"""SpeechOutput owns the Player: turns, clips, cancels from other threads and lost devices never
race it into a deadlock, a dead worker, a lost turn, or sound from a cancelled answer; earcons and
replays never delay an answer's first sample; a slow producer is held back instead of stuttering."""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from engine.audio.earcons import done_earcon
from engine.audio.fake_device import FakeSoundDevice, StreamStatus
from engine.audio.playback import Player, PlayerOptions
from engine.audio.resample import MODEL_SAMPLE_RATE_HZ
from engine.errors import AudioDeviceError
from engine.events import AudioChunk, ChunkingOptions, Event, SlowDevice
from engine.speech_out import CLEAN_TURNS_TO_LOWER, SpeechOutput, TurnAudio
from engine.vocoder.api import load_vocoder_runtime
from engine.vocoder.checkpoint import write_tiny_vocoder
from engine.vocoder.runtime import VocoderRuntime
from tests.waiting import wait_until

CHUNKING = ChunkingOptions(first_chunk_units=3, chunk_units=6, lookahead_units=2)
UNITS = tuple(range(5, 29))  # 24 units: a few chunks
DONE_TIMEOUT_S = 10.0
FAST_FAIL = PlayerOptions(first_callback_timeout_s=1.0, stall_timeout_s=0.5, lead_silence_s=0.0, latency_s=0.01)


class Recorded:
    def __init__(self) -> None:
        self.chunks: list[tuple[float, AudioChunk]] = []
        self.slow: list[SlowDevice] = []

    def __call__(self, event: Event) -> None:
        if isinstance(event, AudioChunk):
            self.chunks.append((time.perf_counter(), event))
        elif isinstance(event, SlowDevice):
            self.slow.append(event)


@pytest.fixture(scope="module")
def runtime(tmp_path_factory: pytest.TempPathFactory) -> Iterator[VocoderRuntime]:
    folder = write_tiny_vocoder(tmp_path_factory.mktemp("voc") / "vocoder")
    rt = load_vocoder_runtime(Path(folder), device="cpu", backend="torch")
    yield rt
    rt.close()


BLOCK_S = 0.01  # the Player's output block


def speed(block_sleep_s: float) -> float:
    """The clock speed at which a 10 ms block plays every ``block_sleep_s``."""
    return BLOCK_S / block_sleep_s


class Rig:
    def __init__(self, runtime: VocoderRuntime, block_sleep_s: float = 0.001) -> None:
        # The sound card: pulls blocks from every live output stream, as fast as the test wants.
        self.backend = FakeSoundDevice(clocked=True, speed=speed(block_sleep_s), record=True)
        self.speaker = self.backend.speaker
        self.gen = 0
        self.events = Recorded()
        self.speech = SpeechOutput(
            lambda device: Player(device, backend=self.backend, options=FAST_FAIL), self.events, lambda: self.gen
        )
        self.speech.start()
        self.speech.set_vocoder(runtime)

    def turn(self, turn_id: int, pushes: int = 4) -> TurnAudio:
        audio = self.speech.begin_turn(turn_id, self.gen, CHUNKING)
        step = max(1, len(UNITS) // pushes)
        for i in range(0, len(UNITS), step):
            self.speech.push_units(self.gen, UNITS[i : i + step])
        self.speech.end_turn(self.gen)
        return audio

    def close(self) -> None:
        self.speech.close()
        self.backend.close()

    def barge_in(self) -> None:
        """What Engine.send(StartTurn) does in the UI thread."""
        self.gen += 1
        self.speech.cancel()


def test_a_turn_is_vocoded_and_heard_in_full(runtime: VocoderRuntime) -> None:
    rig = Rig(runtime)
    try:
        started = time.perf_counter()
        audio = rig.turn(1)
        assert audio.done.wait(DONE_TIMEOUT_S) and audio.error is None
        assert rig.speech.wait_played(rig.gen, DONE_TIMEOUT_S)
        assert audio.samples_out == runtime.synthesize(list(UNITS)).size
        assert audio.units_vocoded == len(UNITS)
        assert sum(c.pcm.size for _, c in rig.events.chunks) == audio.samples_out
        assert rig.speaker.loud_frames(started) > 0.5 * audio.samples_out * 3  # 16 kHz -> 48 kHz device
        assert rig.speech.first_sample_at is not None and rig.speech.first_sample_at >= started
    finally:
        rig.close()


def test_a_lost_speaker_fails_the_turn_and_the_next_sound_reopens_it(runtime: VocoderRuntime) -> None:
    rig = Rig(runtime)
    try:
        assert rig.speech.open().wait(DONE_TIMEOUT_S)
        first = [s for s in rig.backend.streams if s.direction == "output"][-1]
        first.die()
        audio = rig.turn(1)
        assert audio.done.wait(DONE_TIMEOUT_S)
        # Either the dead stream was noticed when the turn began (replaced, played) or while
        # writing (the turn reports it and still vocodes everything for the transcript).
        assert audio.error is None or isinstance(audio.error, AudioDeviceError)
        assert audio.samples_out == runtime.synthesize(list(UNITS)).size
        clip = rig.speech.play(rig.gen, np.full(1600, 0.3, np.float32))
        assert clip.done.wait(DONE_TIMEOUT_S) and clip.error is None
        live = [s for s in rig.backend.streams if s.direction == "output" and not s.closed]
        assert live and live[-1] is not first
    finally:
        rig.close()


def test_cancel_from_another_thread_silences_the_answer(runtime: VocoderRuntime) -> None:
    rig = Rig(runtime)
    try:
        rig.backend.speed = speed(0.01)  # about real time: the answer is still playing
        audio = rig.turn(1)
        assert audio.done.wait(DONE_TIMEOUT_S)
        deadline = time.perf_counter() + DONE_TIMEOUT_S
        while rig.speech.played_s < 0.05 and time.perf_counter() < deadline:
            time.sleep(0.005)
        threading.Thread(target=rig.barge_in).start()
        deadline = time.perf_counter() + DONE_TIMEOUT_S
        while rig.speech.played_s_at_cancel is None and time.perf_counter() < deadline:
            time.sleep(0.005)
        cancelled_at = time.perf_counter()
        heard = rig.speech.played_s_at_cancel
        assert heard is not None and 0.05 <= heard < audio.samples_out / 16_000
        time.sleep(0.1)  # the fade-out takes 8 ms; then nothing of the old answer may sound
        assert rig.speaker.loud_frames(cancelled_at + 0.05) == 0
    finally:
        rig.close()


INTERLEAVINGS = 200
# After a press, the fade-out (8 ms) and an earcon mixed just before it (50 ms) end within this
# much device time; at the storm's clock speeds (3x to 20x) that is at most 20 ms of wall time.
STALE_MARGIN_S = 0.02


def _storm(rig: Rig, rng: random.Random) -> None:
    """Three threads race the worker: the engine starts turns and earcons, the UI thread barges in,
    the device thread unplugs the speaker."""
    turns: list[TurnAudio] = []

    def engine() -> None:
        for turn_id in range(1, 3):
            if rng.random() < 0.5:
                rig.speech.earcon(rig.gen, np.full(800, 0.2, np.float32))
            if rng.random() < 0.3:
                rig.speech.play(rig.gen, np.full(4000, 0.2, np.float32))  # a replay, cut by the turn
            turns.append(rig.turn(turn_id, pushes=rng.randint(1, 6)))
            time.sleep(rng.uniform(0, 0.01))

    def ui() -> None:
        for _ in range(rng.randint(1, 3)):
            time.sleep(rng.uniform(0, 0.02))
            rig.barge_in()

    def device() -> None:
        time.sleep(rng.uniform(0, 0.03))
        live = rig.backend.live("output")
        if live and rng.random() < 0.7:
            live[-1].die()

    rig.backend.speed = speed(rng.choice((0.0005, 0.001, 0.003)))
    workers = [threading.Thread(target=f) for f in (engine, ui, device)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(DONE_TIMEOUT_S)
        assert not w.is_alive()
    rig.barge_in()  # the last press: nothing of the storm's answers may sound after its fade-out
    silenced = time.perf_counter() + STALE_MARGIN_S
    for audio in turns:
        assert audio.done.wait(DONE_TIMEOUT_S), f"turn {audio.turn_id} never ended"
        assert audio.error is None or isinstance(audio.error, AudioDeviceError), repr(audio.error)
    time.sleep(STALE_MARGIN_S)  # let anything written after the press reach the speaker
    assert rig.speaker.loud_frames(silenced) == 0, "a cancelled answer was heard"


def test_barge_in_device_loss_and_cancel_in_random_interleavings(runtime: VocoderRuntime) -> None:
    """200 seeded storms on one SpeechOutput: every turn ends, nothing but AudioDeviceError is
    reported, the worker survives, and after each storm a clean turn plays in full."""
    rig = Rig(runtime)
    expected = runtime.synthesize(list(UNITS)).size
    try:
        for seed in range(INTERLEAVINGS):
            rng = random.Random(seed)
            _storm(rig, rng)
            rig.backend.speed = speed(0.0002)  # play the clean turn out quickly
            started = time.perf_counter()
            audio = rig.turn(1000 + seed)
            assert audio.done.wait(DONE_TIMEOUT_S), f"seed {seed}: the clean turn never ended"
            assert audio.error is None, f"seed {seed}: {audio.error!r}"
            assert rig.speech.wait_played(rig.gen, DONE_TIMEOUT_S), f"seed {seed}: never heard"
            assert audio.samples_out == expected, f"seed {seed}"
            assert rig.speaker.loud_frames(started) > 0, f"seed {seed}: the clean turn was silent"
            assert rig.speech._thread.is_alive()
    finally:
        rig.close()
    assert not rig.speech._thread.is_alive()  # close() ended the worker after all that


# ----------------------------------------------------------------- earcons and replays vs answers

QUICK = PlayerOptions(lead_silence_s=0.0, latency_s=0.01)


def _manual_speech(runtime: VocoderRuntime) -> tuple[SpeechOutput, FakeSoundDevice]:
    """A SpeechOutput on a manual fake device, opened and past its lead silence."""
    device = FakeSoundDevice()
    speech = SpeechOutput(lambda d: Player(d, backend=device, options=QUICK), Recorded(), lambda: 0)
    speech.start()
    speech.set_vocoder(runtime)
    assert speech.open().wait(DONE_TIMEOUT_S)
    assert not np.any(device.last.pull(round(QUICK.latency_s / BLOCK_S) + 1))
    return speech, device


def _answer(speech: SpeechOutput) -> TurnAudio:
    audio = speech.begin_turn(1, 0, CHUNKING)
    speech.push_units(0, UNITS)
    speech.end_turn(0)
    return audio


def _played_answer(runtime: VocoderRuntime, earcon: bool) -> np.ndarray:
    """What the speaker plays for an answer (preceded by the done earcon if ``earcon``). The device is
    pulled only once everything is written, so anything queued ahead of the answer would show as a
    shift of the answer."""
    speech, device = _manual_speech(runtime)
    try:
        if earcon:
            assert speech.earcon(0, done_earcon()).done.wait(DONE_TIMEOUT_S)
        audio = _answer(speech)
        assert audio.done.wait(DONE_TIMEOUT_S) and audio.error is None
        return device.last.pull(round((audio.samples_out / MODEL_SAMPLE_RATE_HZ + 0.2) / BLOCK_S))[:, 0]
    finally:
        speech.close()


def test_the_done_earcon_never_delays_the_first_answer_sample(runtime: VocoderRuntime) -> None:
    """The earcon is mixed over the answer's start, not queued ahead of it: the answer's samples are
    at the same positions as without the earcon, and the difference is the earcon itself."""
    plain = _played_answer(runtime, earcon=False)
    with_earcon = _played_answer(runtime, earcon=True)
    first = int(np.flatnonzero(np.abs(plain) > 1e-6)[0])
    assert first < 2 * round(BLOCK_S * 48_000)  # the answer starts at once on an idle speaker
    tone_frames = round(done_earcon().size * 48_000 / MODEL_SAMPLE_RATE_HZ)
    difference = with_earcon - plain
    assert np.max(np.abs(difference[:tone_frames])) > 0.1  # the earcon is heard...
    assert np.max(np.abs(difference[tone_frames + 200 :])) < 1e-6  # ...and nothing of the answer moved


REPLAY_LEVEL = 0.3


def test_a_replay_is_cut_when_a_turn_begins(runtime: VocoderRuntime) -> None:
    """A 5 s replay is playing when an answer arrives: it fades out at once and the answer plays in
    full; the seconds of replay still queued are never played ahead of it."""
    speech, device = _manual_speech(runtime)
    stream = device.last
    try:
        replay = speech.play(0, np.full(5 * MODEL_SAMPLE_RATE_HZ, REPLAY_LEVEL, np.float32))
        wait_until(lambda: stream.pull(1)[:, 0].max() > REPLAY_LEVEL - 0.01, DONE_TIMEOUT_S, "the replay to play")
        audio = _answer(speech)
        blocks = []
        while not audio.done.is_set():  # the sound card keeps pulling, in real time, while the worker works
            blocks.append(stream.pull(1)[:, 0])
            time.sleep(BLOCK_S)
            assert len(blocks) < 400, "the answer never got written"
        assert replay.done.is_set() and replay.error is None
        blocks.append(stream.pull(round((audio.samples_out / MODEL_SAMPLE_RATE_HZ + 0.2) / BLOCK_S))[:, 0])
        out = np.concatenate(blocks)
        replay_blocks = sum(1 for b in blocks[:-1] if np.isclose(b, REPLAY_LEVEL, atol=0.01).mean() > 0.5)
        assert replay_blocks < 20  # it was cut at once, not after the 4+ s still queued
        replay_end = int(np.flatnonzero(np.isclose(out, REPLAY_LEVEL, atol=0.005))[-1])
        after = out[replay_end + round(QUICK.cancel_fade_s * 48_000) + 1 :]  # past the fade-out
        loud = np.flatnonzero(np.abs(after) > 1e-4)
        assert loud[0] < round(0.5 * 48_000)  # the answer follows once vocoded (not after the replay)...
        heard_s = (loud[-1] - loud[0]) / 48_000
        assert heard_s == pytest.approx(audio.samples_out / MODEL_SAMPLE_RATE_HZ, abs=0.05)  # ...in full
    finally:
        speech.close()


def _play_out(speech: SpeechOutput, device: FakeSoundDevice, audio: TurnAudio, dropout: bool) -> None:
    """Pull the turn's audio through the manual device; with ``dropout`` the host reports one block late."""
    assert audio.done.wait(DONE_TIMEOUT_S)
    stream = device.last
    stream.pull(1, flags=StreamStatus(output_underflow=dropout))
    deadline = time.monotonic() + DONE_TIMEOUT_S
    while not speech.wait_played(0, 0.0):
        stream.pull(1)
        assert time.monotonic() < deadline, "the answer never played out"


def test_the_host_buffering_grows_after_dropouts_and_shrinks_after_clean_answers(runtime: VocoderRuntime) -> None:
    speech, device = _manual_speech(runtime)
    try:
        first = device.last
        assert first.latency == QUICK.latency_s
        _play_out(speech, device, _answer(speech), dropout=True)
        wait_until(lambda: device.last is not first, DONE_TIMEOUT_S, "the speaker to reopen")
        assert device.last.latency == 2 * QUICK.latency_s and first.closed
        raised = device.last
        assert not np.any(raised.pull(round(2 * QUICK.latency_s / BLOCK_S) + 1))  # past its lead silence
        for _ in range(CLEAN_TURNS_TO_LOWER):
            _play_out(speech, device, _answer(speech), dropout=False)
        wait_until(lambda: device.last is not raised, DONE_TIMEOUT_S, "the speaker to reopen again")
        assert device.last.latency == QUICK.latency_s
    finally:
        speech.close()


# ----------------------------------------------------------------------- a slow producer


def _slow_turn(rig: Rig, turn_id: int, unit_interval_s: float, n_units: int = 60) -> TurnAudio:
    """Units trickle in one at a time, like a model slower than real time."""
    audio = rig.speech.begin_turn(turn_id, rig.gen, ChunkingOptions())  # the engine's 10 then 40
    for i in range(n_units):
        time.sleep(unit_interval_s)
        rig.speech.push_units(rig.gen, (5 + i % 20,))
    rig.speech.end_turn(rig.gen)
    return audio


def test_a_slow_producer_is_held_back_and_reported(runtime: VocoderRuntime) -> None:
    """Units arrive at about half the speed they play. The first answer teaches SpeechOutput this
    PC's rate; the second is held back (SlowDevice says for how long) and then plays through."""
    rig = Rig(runtime, block_sleep_s=BLOCK_S)  # a real-time speaker
    unit_s = runtime.synthesize(list(UNITS)).size / len(UNITS) / MODEL_SAMPLE_RATE_HZ
    try:
        first = _slow_turn(rig, 1, unit_interval_s=2.0 * unit_s)
        assert first.done.wait(60) and rig.speech.wait_played(rig.gen, 60)
        gaps_before = rig.speech.gaps
        second = _slow_turn(rig, 2, unit_interval_s=2.0 * unit_s)
        assert second.done.wait(60) and rig.speech.wait_played(rig.gen, 60)
        assert second.pace.slow and second.pace.held_s > 0.3
        announced = [e for e in rig.events.slow if e.turn_id == 2]
        assert len(announced) == 1 and 0.0 < announced[0].speed < 1.0 and announced[0].wait_s > 0.0
        assert second.first_chunk_at is not None
        assert rig.speech.first_sample_at is not None and rig.speech.first_sample_at - second.first_chunk_at > 0.3
        assert rig.speech.gaps - gaps_before <= 1  # a busy test machine may still make one
    finally:
        rig.close()
