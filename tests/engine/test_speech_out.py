"""SpeechOutput owns the Player: turns, clips, cancels from other threads and lost devices never
race it into a deadlock, a dead worker, a lost turn, or sound from a cancelled answer."""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from engine.audio.fake_device import FakeSoundDevice
from engine.audio.playback import Player, PlayerOptions
from engine.errors import AudioDeviceError
from engine.events import AudioChunk, ChunkingOptions, Event
from engine.speech_out import SpeechOutput, TurnAudio
from engine.vocoder.api import load_vocoder_runtime
from engine.vocoder.checkpoint import write_tiny_vocoder
from engine.vocoder.runtime import VocoderRuntime

CHUNKING = ChunkingOptions(first_chunk_units=3, chunk_units=6, lookahead_units=2)
UNITS = tuple(range(5, 29))  # 24 units: a few chunks
DONE_TIMEOUT_S = 10.0
FAST_FAIL = PlayerOptions(first_callback_timeout_s=1.0, stall_timeout_s=0.5, lead_silence_s=0.0, latency_s=0.01)


class Recorded:
    def __init__(self) -> None:
        self.chunks: list[tuple[float, AudioChunk]] = []

    def __call__(self, event: Event) -> None:
        if isinstance(event, AudioChunk):
            self.chunks.append((time.perf_counter(), event))


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


def _storm(rig: Rig, rng: random.Random) -> None:
    """Three threads race the worker: the engine starts turns and earcons, the UI thread barges in,
    the device thread unplugs the speaker."""
    turns: list[TurnAudio] = []

    def engine() -> None:
        for turn_id in range(1, 3):
            if rng.random() < 0.5:
                rig.speech.play(rig.gen, np.full(800, 0.2, np.float32))  # an earcon
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
    for audio in turns:
        assert audio.done.wait(DONE_TIMEOUT_S), f"turn {audio.turn_id} never ended"
        assert audio.error is None or isinstance(audio.error, AudioDeviceError), repr(audio.error)


def test_barge_in_device_loss_and_cancel_in_random_interleavings(runtime: VocoderRuntime) -> None:
    """200 seeded storms on one SpeechOutput: every turn ends, nothing but AudioDeviceError is
    reported, the worker survives, and after each storm a clean turn plays in full."""
    rig = Rig(runtime)
    expected = runtime.synthesize(list(UNITS)).size
    try:
        for seed in range(INTERLEAVINGS):
            rng = random.Random(seed)
            _storm(rig, rng)
            rig.gen += 1
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
