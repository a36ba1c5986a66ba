"""A whole push-to-talk turn with real sounddevice streams (PulseAudio null sinks) and the tiny model.

An espeak-ng question is played into the virtual microphone while the talk key is held; the answer's
speech must arrive at the virtual speaker with the length the engine produced; a second press while
it speaks (barge-in) must cut it short.
"""

from __future__ import annotations

import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from engine.bench.event_log import EventLog
from engine.bench.pulse import best_correlation
from engine.engine import Engine
from engine.events import (
    AudioChunk,
    ChunkingOptions,
    EngineOptions,
    EngineState,
    Failed,
    LoadModel,
    Ready,
    SendText,
    StartTurn,
    StateChanged,
    StopTurn,
    TurnFinished,
    TurnStarted,
)
from engine.tiny import TinyPaths
from tests.engine.audio_fixtures import QUESTION_TEXT, espeak_wav, read_wav
from tests.pulse import PulseServer, pulse_server, require_tools

__all__ = ["pulse_server"]

pytestmark = [pytest.mark.timeout(300), pytest.mark.slow]

SILENCE_THRESHOLD = 1e-3
RATE_HZ = 16_000


def _active_s(audio: np.ndarray) -> float:
    """Seconds between the first and the last sample above the silence threshold."""
    loud = np.flatnonzero(np.abs(audio) > SILENCE_THRESHOLD)
    return 0.0 if loud.size == 0 else (loud[-1] - loud[0] + 1) / RATE_HZ


class SpeakerRecording:
    """parecord on the fake speaker's monitor, started before and stopped after the turn."""

    def __init__(self, server: PulseServer, path: Path) -> None:
        self.path = path
        self.proc = subprocess.Popen(
            ["parecord", "-d", "spk.monitor", f"--rate={RATE_HZ}", "--channels=1", "--file-format=wav", str(path)],
            env=server.env(),
        )
        time.sleep(0.3)  # parecord must be connected before playback starts

    def stop(self) -> np.ndarray:
        time.sleep(0.3)
        self.proc.send_signal(signal.SIGINT)
        self.proc.wait(timeout=10)
        audio, rate = read_wav(self.path)
        assert rate == RATE_HZ
        return audio


@pytest.fixture(scope="module")
def engine_on_pulse(pulse_server: PulseServer, tiny_omni: TinyPaths) -> Iterator[tuple[Engine, EventLog]]:
    require_tools("paplay", "parecord", "espeak-ng", "sox")
    log = EventLog()
    engine = Engine(
        log,
        options=EngineOptions(
            max_new_tokens=40, earcons=False, chunking=ChunkingOptions(first_chunk_units=10, chunk_units=40)
        ),
    )
    engine.start()
    engine.send(LoadModel(model_dir=tiny_omni.omni, device="cpu", quant="fp32"))
    log.wait_for(Ready, timeout_s=180)
    yield engine, log
    engine.shutdown()


def _wait_idle(log: EventLog, since: int) -> None:
    log.wait_for(StateChanged, lambda e: e.state is EngineState.READY, timeout_s=120, since=since)


def test_spoken_question_is_answered_out_loud(
    engine_on_pulse: tuple[Engine, EventLog], pulse_server: PulseServer, tmp_path: Path
) -> None:
    engine, log = engine_on_pulse
    question = espeak_wav(QUESTION_TEXT, tmp_path)
    question_audio, _ = read_wav(question)
    speaker = SpeakerRecording(pulse_server, tmp_path / "speaker.wav")
    mark = log.mark()
    engine.send(StartTurn())  # talk key down
    log.wait_for(StateChanged, lambda e: e.state is EngineState.LISTENING, since=mark)
    subprocess.run(["paplay", "-d", "micfeed", str(question)], env=pulse_server.env(), check=True, timeout=30)
    time.sleep(0.3)  # the tail of the question reaches the recorder
    engine.send(StopTurn())  # talk key up
    done = log.wait_for(TurnFinished, timeout_s=120, since=mark)
    _wait_idle(log, log.mark() - 1)
    heard = speaker.stop()

    assert not [f for f in log.of(Failed) if f.turn_id == done.turn_id]
    started = log.wait_for(TurnStarted, lambda e: e.turn_id == done.turn_id)
    # The whole question was captured (real microphone stream, resampled to 16 kHz).
    assert started.speech_s == pytest.approx(question_audio.size / RATE_HZ, abs=0.6)
    assert not done.interrupted and done.metrics.n_tokens > 0 and done.metrics.audio_s > 0.5
    # The speaker played the answer the engine produced, all of it.
    produced = np.concatenate([c.pcm for c in log.of(AudioChunk) if c.turn_id == done.turn_id])
    assert _active_s(heard) == pytest.approx(_active_s(produced), abs=0.15)
    correlation, _lag = best_correlation(produced[: 2 * RATE_HZ], heard)
    assert correlation > 0.9
    m = done.metrics
    assert m.first_audio_ms is not None and m.first_token_ms is not None
    assert m.first_token_ms <= m.first_audio_ms <= m.total_ms  # type: ignore[operator]


def test_barge_in_cuts_the_answer_short(
    engine_on_pulse: tuple[Engine, EventLog], pulse_server: PulseServer, tmp_path: Path
) -> None:
    engine, log = engine_on_pulse
    speaker = SpeakerRecording(pulse_server, tmp_path / "speaker.wav")
    mark = log.mark()
    engine.send(SendText("Tell me a long story about the sea."))
    first = log.wait_for(AudioChunk, timeout_s=120, since=mark)
    time.sleep(0.8)  # let it speak a little
    engine.send(StartTurn())  # the user presses the talk key while it speaks
    done = log.wait_for(TurnFinished, lambda e: e.turn_id == first.turn_id, timeout_s=60, since=mark)
    log.wait_for(StateChanged, lambda e: e.state is EngineState.LISTENING, since=mark)
    engine.send(StopTurn())  # a short press: ignored, no new turn
    heard = speaker.stop()
    assert done.interrupted
    produced = np.concatenate([c.pcm for c in log.of(AudioChunk) if c.turn_id == done.turn_id])
    # Playback stopped at once: the speaker heard clearly less than what had been synthesized.
    assert _active_s(heard) < _active_s(produced) - 0.3
    assert _active_s(heard) > 0.3
