"""The fine-tune wizard's commands: RecordClip / StopClip take a clip with the engine's recorder
without a turn, with or without a model loaded (a turn after it still works); UnloadModel frees the
model for a training and LoadModel brings it back."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from engine.events import (
    ClipRecorded,
    EngineState,
    Failed,
    LoadModel,
    Ready,
    RecordClip,
    SendText,
    StateChanged,
    StopClip,
    StopTurn,
    TurnFinished,
    TurnStarted,
    UnloadModel,
)
from tests.engine.audio_fixtures import espeak_wav, read_wav
from tests.engine.engine_fixtures import ScriptedModel
from tests.engine.test_engine import Harness


@pytest.fixture
def harness(tmp_path: Path) -> Iterator[Harness]:
    h = Harness(tmp_path, ScriptedModel())
    yield h
    h.close()


def test_a_clip_comes_back_without_a_turn_even_without_a_model(harness: Harness, tmp_path: Path) -> None:
    question, rate = read_wav(espeak_wav("What is the capital of France?", tmp_path))
    assert rate == 16_000
    harness.engine.send(RecordClip())  # no model loaded
    harness.log.wait_for(StateChanged, lambda e: e.state is EngineState.LISTENING)
    harness.speak(question)
    harness.engine.send(StopClip())
    clip = harness.log.wait_for(ClipRecorded)
    assert clip.pcm.dtype == np.float32 and not clip.limit
    assert clip.pcm.size == pytest.approx(question.size, rel=0.02)
    assert np.corrcoef(clip.pcm[: question.size], question[: clip.pcm.size])[0, 1] > 0.9
    harness.log.wait_for(StateChanged, lambda e: e.state is EngineState.IDLE)
    assert harness.log.of(TurnStarted) == [] and harness.model.requests == []

    # With a model: a clip is still not a turn, and the next press is an ordinary turn again.
    harness.load()
    mark = harness.log.mark()
    harness.engine.send(RecordClip())
    harness.log.wait_for(StateChanged, lambda e: e.state is EngineState.LISTENING)
    harness.speak(question)
    harness.engine.send(StopClip())
    harness.log.wait_for(ClipRecorded, since=mark)
    assert harness.model.requests == []
    harness.press()
    harness.speak(question)
    harness.engine.send(StopTurn())
    harness.log.wait_for(TurnFinished, since=mark)
    assert len(harness.model.requests) == 1 and len(harness.log.of(ClipRecorded)) == 2


def test_unload_frees_the_model_and_a_load_brings_it_back(harness: Harness) -> None:
    harness.load()
    mark = harness.log.mark()
    harness.engine.send(UnloadModel())
    harness.log.wait_for(StateChanged, lambda e: e.state is EngineState.IDLE and e.detail == "unloaded", since=mark)
    assert harness.model.closed
    harness.engine.send(SendText("Still there?"))
    assert harness.log.wait_for(Failed, since=mark).message == "No model is loaded."
    harness.model.closed = False
    again = harness.log.mark()
    harness.engine.send(LoadModel(model_dir=Path("unused")))
    harness.log.wait_for(Ready, since=again)
    harness.engine.send(SendText("Back?"))
    harness.log.wait_for(TurnFinished, since=mark)
