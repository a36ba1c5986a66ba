"""Running out of (GPU) memory: a clear ``NotEnoughMemory`` with advice, what was allocated is
released, and the vocoder falls back to the CPU where that is the better choice.

No GPU here: out-of-memory is injected where CUDA would raise it (``torch.OutOfMemoryError`` in
the loader and the decode step, onnxruntime's allocation failures through a fake onnxruntime).
"""

from __future__ import annotations

import gc
import threading
import types
import weakref
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

from engine.engine import Engine
from engine.errors import DeviceUnavailable, ModelCorrupt, NotEnoughMemory
from engine.events import Failed, LoadModel, Ready, SendText
from engine.model import loader
from engine.model.omni import OmniModel
from engine.pipeline import LoadedModel
from engine.vocoder import api
from engine.vocoder.checkpoint import load_torch_vocoder, write_tiny_vocoder
from engine.vocoder.runtime_torch import TorchVocoderRuntime
from tests.engine.engine_fixtures import ScriptedModel
from tests.engine.test_model_conversation import SHORT, oracle, run

pytestmark = pytest.mark.usefixtures("one_torch_thread")

CUDA_OOM = "CUDA out of memory. Tried to allocate 224.00 MiB. GPU 0 has a total capacity of 7.63 GiB"
ORT_OOM = (
    "[ONNXRuntimeError] : 6 : RUNTIME_EXCEPTION : Exception during initialization: bfc_arena.cc:359 "
    "onnxruntime::BFCArena::AllocateRawInternal Failed to allocate memory for requested buffer of size 8388608"
)


# ----------------------------------------------------------------------------------------- loading


def test_oom_while_loading_frees_the_partial_model_then_says_what_to_do(
    tiny_omni, monkeypatch: pytest.MonkeyPatch
) -> None:
    built: list[weakref.ref] = []
    real_assign = loader.assign_tensor
    calls = {"n": 0}

    def assign(root, name, tensor, device, dtype):  # type: ignore[no-untyped-def]
        built.append(weakref.ref(root))
        calls["n"] += 1
        if calls["n"] == 20:
            raise torch.OutOfMemoryError(CUDA_OOM)
        real_assign(root, name, tensor, device, dtype)

    released: list[int] = []

    def release() -> bool:
        gc.collect()
        released.append(sum(ref() is not None for ref in built))  # parts still alive when the cache is emptied
        return True

    monkeypatch.setattr(loader, "assign_tensor", assign)
    monkeypatch.setattr(loader, "release_cuda_cache", release)
    with pytest.raises(NotEnoughMemory, match="ran out of RAM") as info:
        OmniModel.load(tiny_omni.omni, device="cpu", quant="fp32")
    error = info.value
    assert "Tried to allocate 224.00 MiB" in error.message and "nf4" in (error.fix or "")
    assert error.__cause__ is None and error.__context__ is None  # nothing keeps the failed frames alive
    assert released == [0]  # every half-loaded part was gone before the cache was emptied


def test_errors_that_are_not_memory_pass_through(tiny_omni, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*args: object) -> None:
        raise RuntimeError("CUDA error: an illegal memory access was encountered")

    monkeypatch.setattr(loader, "assign_tensor", broken)
    with pytest.raises(RuntimeError, match="illegal memory access"):
        OmniModel.load(tiny_omni.omni, device="cpu", quant="fp32")


# ------------------------------------------------------------------------------------------ a turn


def test_oom_during_an_answer_is_not_enough_memory_and_the_next_turn_works(
    tiny_omni_model: OmniModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    chat = tiny_omni_model.conversation()
    run(chat.respond_text("Hello", decode=SHORT))
    real_step = tiny_omni_model.step
    calls = {"n": 0}

    def step(token: int, cache):  # type: ignore[no-untyped-def]
        calls["n"] += 1
        if calls["n"] == 3:
            raise torch.OutOfMemoryError(CUDA_OOM)
        return real_step(token, cache)

    monkeypatch.setattr(tiny_omni_model, "step", step)
    with pytest.raises(NotEnoughMemory, match="The answer ran out of memory") as info:
        run(chat.respond_text("Tell me more", decode=SHORT))
    assert "new conversation" in (info.value.fix or "") and info.value.__context__ is None
    monkeypatch.undo()
    assert chat._cache is None  # released with the failure; rebuilt from the records
    assert chat.turns[-1].answer_ids[-1] == tiny_omni_model.tokenizer.special.eot_id
    _, done = run(chat.respond_text("Once more", decode=SHORT))
    assert oracle(chat)[0][: done.n_tokens] == list(done.token_ids)


# ---------------------------------------------------------------------------------------- the engine


def test_unload_releases_the_cuda_cache_after_the_model_is_gone(monkeypatch: pytest.MonkeyPatch) -> None:
    from engine import engine as engine_module
    from engine.audio.vad import SpeechDetector
    from engine.bench.event_log import EventLog

    models: list[weakref.ref] = []
    commands: list[LoadModel] = []

    def load(command: LoadModel, progress: Callable[[float, str], None]) -> LoadedModel:
        commands.append(command)
        model = ScriptedModel()
        models.append(weakref.ref(model))
        return LoadedModel(model=model, vocoder=None)

    alive_at_release: list[list[bool]] = []
    release_lock = threading.Lock()

    def release() -> bool:
        gc.collect()
        with release_lock:
            alive_at_release.append([ref() is not None for ref in models])
        return True

    monkeypatch.setattr(engine_module, "release_cuda_cache", release)
    log = EventLog()
    engine = Engine(log, model_loader=load, speech_detector=SpeechDetector(use_model=False))
    engine.start()
    try:
        engine.send(LoadModel(model_dir=Path("first")))
        log.wait_for(Ready)
        mark = log.mark()
        engine.send(LoadModel(model_dir=Path("second"), max_new_tokens=64))
        log.wait_for(Ready, since=mark)
    finally:
        engine.shutdown()
    # Reloading released the first model, then the cache (before the second load); shutting down
    # did the same for the second.
    assert alive_at_release == [[False], [False, False]]
    # The pre-flight budgets for the answer length in force unless the command says otherwise.
    assert commands[0].max_new_tokens == engine.options.max_new_tokens and commands[1].max_new_tokens == 64


def test_vocoder_memory_errors_reach_the_user_with_their_kind() -> None:
    """A vocoder that ran out of memory mid-answer is reported as not_enough_memory, with advice."""
    import tempfile

    from engine.audio.vad import SpeechDetector
    from engine.bench.event_log import EventLog

    class OutOfMemoryVocoder(TorchVocoderRuntime):
        def generate(self, frame_units: np.ndarray) -> np.ndarray:
            raise NotEnoughMemory("The vocoder ran out of GPU memory (test).", fix="Close other programs.")

    def load(command: LoadModel, progress: Callable[[float, str], None]) -> LoadedModel:
        folder = Path(command.model_dir)
        vocoder = OutOfMemoryVocoder(load_torch_vocoder(write_tiny_vocoder(folder / "vocoder")), "cpu")
        return LoadedModel(model=ScriptedModel(), vocoder=vocoder)

    log = EventLog()
    with tempfile.TemporaryDirectory() as tmp:
        engine = Engine(log, model_loader=load, speech_detector=SpeechDetector(use_model=False))
        engine.start()
        try:
            engine.send(LoadModel(model_dir=Path(tmp)))
            log.wait_for(Ready)
            engine.send(SendText("Hello"))
            failed = log.wait_for(Failed)
        finally:
            engine.shutdown()
    assert failed.kind == "not_enough_memory" and failed.fix == "Close other programs."
    assert "Speech synthesis failed" in failed.message


# ------------------------------------------------------------------------------------- the vocoder


def _fake_onnxruntime(monkeypatch: pytest.MonkeyPatch, *, cuda_error: str | None, cpu_error: str | None = None):
    """onnxruntime with a CUDA provider whose session creation fails with ``cuda_error``."""
    from engine.vocoder import runtime_onnx

    created: list[tuple[str, list]] = []

    class Session:
        def __init__(self, path: str, sess_options: object = None, providers: list | None = None) -> None:
            providers = list(providers or [])
            created.append((path, providers))
            names = [p[0] if isinstance(p, tuple) else p for p in providers]
            if "CUDAExecutionProvider" in names and cuda_error is not None:
                raise RuntimeError(cuda_error)
            if names == ["CPUExecutionProvider"] and cpu_error is not None:
                raise RuntimeError(cpu_error)
            self._providers = names

        def get_providers(self) -> list[str]:
            return self._providers

    fake = types.SimpleNamespace(
        SessionOptions=lambda: types.SimpleNamespace(
            graph_optimization_level=None, add_session_config_entry=lambda key, value: None
        ),
        GraphOptimizationLevel=types.SimpleNamespace(ORT_ENABLE_ALL=99),
        InferenceSession=Session,
        get_available_providers=lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"],
        cuda_version="12.9",
    )
    monkeypatch.setattr(runtime_onnx, "onnxruntime", fake)
    monkeypatch.setattr(runtime_onnx, "_preload_cuda_libraries", lambda: None)
    return created


def test_onnx_session_on_the_models_gpu(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from engine.vocoder.runtime_onnx import create_session

    created = _fake_onnxruntime(monkeypatch, cuda_error=None)
    session, reason = create_session(tmp_path / "generator.onnx", "auto", gpu_index=1)
    assert reason is None and session.get_providers()[0] == "CUDAExecutionProvider"
    (_, providers), = created
    name, options = providers[0]
    assert name == "CUDAExecutionProvider" and options["device_id"] == 1
    assert options["arena_extend_strategy"] == "kSameAsRequested"


def test_onnx_out_of_memory_at_session_creation_is_not_a_damaged_file(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from engine.vocoder.runtime_onnx import create_session

    created = _fake_onnxruntime(monkeypatch, cuda_error=ORT_OOM)
    session, reason = create_session(tmp_path / "g.onnx", "auto", gpu_index=0)
    assert session.get_providers() == ["CPUExecutionProvider"]  # auto: the vocoder runs on the CPU
    assert reason is not None and "no memory left" in reason
    assert [p for _, p in created][-1] == ["CPUExecutionProvider"]
    with pytest.raises(NotEnoughMemory, match="ran out of GPU memory") as info:
        create_session(tmp_path / "g.onnx", "cuda")
    assert "nf4" in (info.value.fix or "")


def test_other_cuda_failures_and_real_corruption(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from engine.vocoder.runtime_onnx import create_session

    _fake_onnxruntime(monkeypatch, cuda_error="CUDA failure 35: CUDA driver version is insufficient")
    session, reason = create_session(tmp_path / "g.onnx", "auto")
    assert session.get_providers() == ["CPUExecutionProvider"] and "driver version" in (reason or "")
    with pytest.raises(DeviceUnavailable, match="driver version is insufficient"):
        create_session(tmp_path / "g.onnx", "cuda")
    _fake_onnxruntime(monkeypatch, cuda_error="INVALID_PROTOBUF", cpu_error="INVALID_PROTOBUF : protobuf parsing")
    with pytest.raises(ModelCorrupt, match="cannot open the vocoder export"):
        create_session(tmp_path / "g.onnx", "auto")


def test_vocoder_that_does_not_fit_on_the_gpu_runs_on_the_cpu(
    tiny_omni, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Warming up on the GPU runs out of memory: "auto" gives a working CPU vocoder, "cuda" the error."""
    made: list[tuple[str, int]] = []
    closed: list[str] = []

    class GpuOom(TorchVocoderRuntime):
        def warm_up(self) -> None:
            raise torch.OutOfMemoryError(CUDA_OOM)

        def close(self) -> None:
            closed.append("the runtime that ran out of memory")
            super().close()

    def make(vocoder_dir, device, gpu_index, *rest):  # type: ignore[no-untyped-def]
        made.append((device, gpu_index))
        cls = GpuOom if device != "cpu" else TorchVocoderRuntime
        return cls(load_torch_vocoder(vocoder_dir), "cpu")

    monkeypatch.setattr(api, "_make_runtime", make)
    runtime = api.load_vocoder_runtime(tiny_omni.vocoder, "auto", backend="torch", gpu_index=1)
    assert made == [("auto", 1), ("cpu", 1)] and closed == ["the runtime that ran out of memory"]
    assert type(runtime) is TorchVocoderRuntime and runtime.synthesize([1, 2, 3]).size > 0
    with pytest.raises(torch.OutOfMemoryError):
        api.load_vocoder_runtime(tiny_omni.vocoder, "cuda", backend="torch")


def test_torch_vocoder_uses_the_models_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    from engine.vocoder.runtime_torch import torch_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert torch_device("auto", 1) == torch.device("cuda", 1)
    assert torch_device("cuda", 2) == torch.device("cuda", 2)
    assert torch_device("cpu", 1) == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert torch_device("auto", 1) == torch.device("cpu")
    with pytest.raises(DeviceUnavailable):
        torch_device("cuda", 0)

