"""The engine thread driving the real (tiny) LLaMA-Omni model and the ONNX vocoder, end to end."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from engine.audio.capture import Recorder
from engine.audio.fake_device import FakeSoundDevice
from engine.audio.playback import Player
from engine.audio.vad import SpeechDetector
from engine.bench.event_log import EventLog
from engine.engine import Engine
from engine.events import (
    AudioChunk,
    ChunkingOptions,
    EngineOptions,
    Failed,
    LoadModel,
    LoadProgress,
    ModelInfo,
    Ready,
    SendText,
    TextDelta,
    TurnFinished,
)
from engine.model.events import TokenStep
from engine.omni_backend import OmniBackend, find_vocoder_dir
from engine.pipeline import TurnRequest
from engine.tiny import TinyPaths
from engine.vocoder.api import load_vocoder_runtime

OPTIONS = EngineOptions(max_new_tokens=24, chunking=ChunkingOptions(first_chunk_units=4, chunk_units=8))


def test_vocoder_is_found_next_to_the_model(tiny_omni: TinyPaths, tmp_path: Path) -> None:
    assert find_vocoder_dir(tiny_omni.omni) == tiny_omni.vocoder
    assert find_vocoder_dir(tmp_path) is None


@pytest.fixture
def engine_run(tiny_omni: TinyPaths) -> Iterator[tuple[Engine, EventLog, FakeSoundDevice]]:
    backend = FakeSoundDevice(clocked="output")  # a speaker playing in real time
    log = EventLog()
    engine = Engine(
        log,
        recorder_factory=lambda device, **kw: Recorder(device, backend=backend, **kw),
        player_factory=lambda device: Player(device, backend=backend),
        speech_detector=SpeechDetector(use_model=False),
        options=OPTIONS,
    )
    engine.start()
    yield engine, log, backend
    engine.shutdown()
    backend.close()


def test_engine_loads_the_tiny_model_and_answers_like_the_model_itself(
    engine_run: tuple[Engine, EventLog, FakeSoundDevice], tiny_omni: TinyPaths, tiny_omni_model, one_torch_thread
) -> None:  # type: ignore[no-untyped-def]
    engine, log, backend = engine_run
    engine.send(LoadModel(model_dir=tiny_omni.omni, device="cpu", quant="fp32"))
    ready = log.wait_for(Ready, timeout_s=120)
    assert "LLaMA-Omni" in ready.summary and "vocoder: onnx on CPUExecutionProvider" in ready.summary
    # What it runs on, as facts for Help → About: the providers the session uses, not the wheel's list.
    assert ready.info == ModelInfo("cpu", "fp32", "onnx", ("CPUExecutionProvider",), licence=None, official=False)
    fractions = [p.fraction for p in log.of(LoadProgress)]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0
    assert not log.of(Failed)

    engine.send(SendText("What is the capital of France?"))
    done = log.wait_for(TurnFinished, timeout_s=120)

    # The same question asked of the model directly (greedy): identical text and units.
    direct = OmniBackend(tiny_omni_model)
    steps = [
        s
        for s in direct.respond(TurnRequest(None, "What is the capital of France?", OPTIONS), lambda: False)
        if isinstance(s, TokenStep)
    ]
    expected_text = "".join(s.text_delta for s in steps)
    expected_units = [u for s in steps for u in s.new_units]
    assert done.text == expected_text == "".join(d.text for d in log.of(TextDelta))
    assert done.metrics.n_tokens == len(steps) and done.metrics.n_units == len(expected_units)
    # What was streamed to the speaker is the whole answer's speech: the same length as synthesizing
    # all units at once (streaming with look-ahead keeps every duration).
    streamed = np.concatenate([c.pcm for c in log.of(AudioChunk)])
    runtime = load_vocoder_runtime(tiny_omni.vocoder, device="cpu", backend="torch")  # type: ignore[arg-type]
    whole = runtime.synthesize(expected_units)
    assert streamed.size == whole.size
    m = done.metrics
    assert m.first_token_ms is not None and m.first_chunk_ms is not None and m.first_audio_ms is not None


def test_barge_in_keeps_only_the_heard_part_in_context(tiny_omni_model, one_torch_thread) -> None:  # type: ignore[no-untyped-def]
    backend = OmniBackend(tiny_omni_model)
    steps = [s for s in backend.respond(TurnRequest(None, "Tell me something.", OPTIONS), lambda: False)]
    chat = backend.conversation
    full = list(chat.turns[-1].answer_ids)
    assert len(full) > 3
    backend.keep_spoken_prefix(2)
    eot = tiny_omni_model.tokenizer.special.eot_id
    assert chat.turns[-1].answer_ids == full[:2] + [eot]
    assert steps  # the turn produced tokens
    # The next turn continues from the shortened answer, and its context shows it.
    list(backend.respond(TurnRequest(None, "Go on.", OPTIONS), lambda: False))
    context = chat.context_ids()
    first_answer_end = context.index(eot, context.index(full[0]))
    assert context[first_answer_end - 2 : first_answer_end] == full[:2]


def test_new_system_prompt_starts_a_new_conversation(tiny_omni_model, one_torch_thread) -> None:  # type: ignore[no-untyped-def]
    backend = OmniBackend(tiny_omni_model)
    list(backend.respond(TurnRequest(None, "Hello", OPTIONS), lambda: False))
    assert len(backend.conversation.turns) == 1
    custom = EngineOptions(system_prompt="Answer in one word.", max_new_tokens=8)
    list(backend.respond(TurnRequest(None, "Hello", custom), lambda: False))
    assert len(backend.conversation.turns) == 1
    assert backend.conversation.options.system_prompt == "Answer in one word."


def test_loading_freezes_the_heap_and_shutting_down_thaws_it(
    engine_run: tuple[Engine, EventLog, FakeSoundDevice], tiny_omni: TinyPaths
) -> None:
    """engine/heap.py: after a load, full collections skip the long-lived objects (no UI stalls);
    unloading makes them collectable again, so a swapped model's cycles cannot leak."""
    engine, log, _ = engine_run
    engine.send(LoadModel(model_dir=tiny_omni.omni, device="cpu", quant="fp32"))
    log.wait_for(Ready, timeout_s=120)
    frozen = gc.get_freeze_count()
    assert frozen > 100_000  # torch, transformers, onnxruntime and the model
    assert len(gc.get_objects()) < frozen // 10  # what a full collection still walks
    engine.shutdown()
    assert gc.get_freeze_count() == 0
