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

from engine.audio.playback import Player, PlayerOptions
from engine.errors import AudioDeviceError
from engine.events import AudioChunk, ChunkingOptions, Event
from engine.speech_out import SpeechOutput, TurnAudio
from engine.vocoder.api import load_vocoder_runtime
from engine.vocoder.checkpoint import write_tiny_vocoder
from engine.vocoder.runtime import VocoderRuntime
from tests.engine.audio_fixtures import FakeBackend

CHUNKING = ChunkingOptions(first_chunk_units=3, chunk_units=6, lookahead_units=2)
UNITS = tuple(range(5, 29))  # 24 units: a few chunks
DONE_TIMEOUT_S = 10.0
FAST_FAIL = PlayerOptions(first_callback_timeout_s=1.0, stall_timeout_s=0.5, lead_silence_s=0.0, latency_s=0.01)


class Clock:
    """The sound card: pulls blocks from the newest live output stream as fast as the test wants."""

    def __init__(self, backend: FakeBackend, block_sleep_s: float = 0.001) -> None:
        self.backend = backend
        self.block_sleep_s = block_sleep_s
        self.blocks: list[tuple[float, np.ndarray]] = []  # (perf_counter, mono block)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Clock:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)

    def _run(self) -> None:
        while not self._stop.is_set():
            live = [s for s in list(self.backend.streams) if s.direction == "output" and s.active]
            if live:
                try:
                    block = live[-1].pull(1)
                except AssertionError:  # the stream died between the check and the pull
                    continue
                self.blocks.append((time.perf_counter(), block.mean(axis=1)))
            time.sleep(self.block_sleep_s)

    def loud_since(self, t: float, threshold: float = 1e-3) -> int:
        return sum(int(np.count_nonzero(np.abs(b) > threshold)) for at, b in list(self.blocks) if at > t)


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


class Rig:
    def __init__(self, runtime: VocoderRuntime) -> None:
        self.backend = FakeBackend()
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

    def barge_in(self) -> None:
        """What Engine.send(StartTurn) does in the UI thread."""
        self.gen += 1
        self.speech.cancel()


def test_a_turn_is_vocoded_and_heard_in_full(runtime: VocoderRuntime) -> None:
    rig = Rig(runtime)
    try:
        with Clock(rig.backend) as clock:
            started = time.perf_counter()
            audio = rig.turn(1)
            assert audio.done.wait(DONE_TIMEOUT_S) and audio.error is None
            assert rig.speech.wait_played(rig.gen, DONE_TIMEOUT_S)
            assert audio.samples_out == runtime.synthesize(list(UNITS)).size
            assert audio.units_vocoded == len(UNITS)
            assert sum(c.pcm.size for _, c in rig.events.chunks) == audio.samples_out
            assert clock.loud_since(started) > 0.5 * audio.samples_out * 3  # 16 kHz -> 48 kHz device
            assert rig.speech.first_sample_at is not None and rig.speech.first_sample_at >= started
    finally:
        rig.speech.close()


def test_a_lost_speaker_fails_the_turn_and_the_next_sound_reopens_it(runtime: VocoderRuntime) -> None:
    rig = Rig(runtime)
    try:
        with Clock(rig.backend):
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
        rig.speech.close()


def test_cancel_from_another_thread_silences_the_answer(runtime: VocoderRuntime) -> None:
    rig = Rig(runtime)
    try:
        with Clock(rig.backend, block_sleep_s=0.01) as clock:  # about real time: the answer is still playing
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
            assert clock.loud_since(cancelled_at + 0.05) == 0
    finally:
        rig.speech.close()


INTERLEAVINGS = 200


def _storm(rig: Rig, clock: Clock, rng: random.Random) -> None:
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
        live = [s for s in list(rig.backend.streams) if s.direction == "output" and s.active]
        if live and rng.random() < 0.7:
            live[-1].die()

    clock.block_sleep_s = rng.choice((0.0005, 0.001, 0.003))
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
        with Clock(rig.backend) as clock:
            for seed in range(INTERLEAVINGS):
                rng = random.Random(seed)
                _storm(rig, clock, rng)
                rig.gen += 1
                clock.block_sleep_s = 0.0002  # play the clean turn out quickly
                started = time.perf_counter()
                audio = rig.turn(1000 + seed)
                assert audio.done.wait(DONE_TIMEOUT_S), f"seed {seed}: the clean turn never ended"
                assert audio.error is None, f"seed {seed}: {audio.error!r}"
                assert rig.speech.wait_played(rig.gen, DONE_TIMEOUT_S), f"seed {seed}: never heard"
                assert audio.samples_out == expected, f"seed {seed}"
                assert clock.loud_since(started) > 0, f"seed {seed}: the clean turn was silent"
                assert rig.speech._thread.is_alive()
    finally:
        rig.speech.close()
    assert not rig.speech._thread.is_alive()  # close() ended the worker after all that
