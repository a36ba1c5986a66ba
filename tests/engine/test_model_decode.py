"""The decode path CUDA takes, checked on the CPU: static KV slot, CUDA-graph wiring, pinned staging
row, chunked prefill, one read-back per token, and no deprecated transformers arguments.

The real graph capture and the real asynchronous copy need a GPU (``python -m engine gpu-check``);
here they are driven through fakes of ``torch.cuda`` to test our side of the contract. The
answers themselves are compared with the dynamic path in ``test_model_conversation.py``, which
runs every conversation test on both paths.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator

import pytest
import torch

from engine.config import ConversationOptions, DecodeOptions
from engine.errors import BadInput
from engine.model import kv_cache
from engine.model.events import TurnDone
from engine.model.kv_cache import GRAPH_WARMUP_STEPS, StaticSlot
from engine.model.omni import OmniModel

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SHORT = DecodeOptions(max_new_tokens=8)


@pytest.fixture(scope="module")
def static_model(tiny_omni) -> OmniModel:
    return OmniModel.load(tiny_omni.omni, device="cpu", quant="fp32", static_kv=True)


def _done(events) -> TurnDone:  # type: ignore[no-untyped-def]
    done = list(events)[-1]
    assert isinstance(done, TurnDone)
    return done


def test_one_read_back_per_token(tiny_omni_model: OmniModel, monkeypatch: pytest.MonkeyPatch) -> None:
    """Token id and unit labels come back together: on a GPU each read-back is a wait."""
    counts = {"tolist": 0, "item": 0}
    real_tolist, real_item = torch.Tensor.tolist, torch.Tensor.item

    def tolist(self):  # type: ignore[no-untyped-def]
        counts["tolist"] += 1
        return real_tolist(self)

    def item(self):  # type: ignore[no-untyped-def]
        counts["item"] += 1
        return real_item(self)

    chat = tiny_omni_model.conversation()
    _done(chat.respond_text("Warm up", decode=SHORT))  # the system prefix is prefilled on the first turn
    monkeypatch.setattr(torch.Tensor, "tolist", tolist)
    monkeypatch.setattr(torch.Tensor, "item", item)
    done = _done(chat.respond_text("Count the waits", decode=SHORT))
    monkeypatch.undo()
    assert done.n_tokens == 8 and done.n_units > 0
    assert counts == {"tolist": 8, "item": 0}


def test_no_deprecated_transformers_arguments(tiny_omni, static_model: OmniModel, speech_16k) -> None:
    """transformers 5.24 renamed ``past_key_values=`` to ``cache=``; the old name goes in 5.40."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)
        warnings.filterwarnings("error", category=DeprecationWarning, module=r"(engine|transformers)(\..*)?")
        dynamic = OmniModel.load(tiny_omni.omni, device="cpu", quant="fp32")
        for model in (dynamic, static_model):
            chat = model.conversation()
            _done(chat.respond_speech(speech_16k, decode=SHORT))
            _done(chat.respond_text("And then?", decode=SHORT))
            chat.truncate_last_answer(2)
            _done(chat.respond_text("Shorter", decode=SHORT))


def test_chunked_prefill_gives_the_same_states(static_model: OmniModel, monkeypatch: pytest.MonkeyPatch) -> None:
    chat = static_model.conversation()
    ids = chat.system_ids + chat.prompts.text_turn_ids("A question long enough for several chunks")
    embeds = static_model.build_embeds(ids)
    whole = static_model.forward(embeds, static_model.new_cache())
    monkeypatch.setattr(static_model, "prefill_chunk_tokens", 7)
    cache = static_model.new_cache()
    chunked = static_model.forward(embeds, cache)
    assert cache.length == len(ids) and chunked.shape == whole.shape
    torch.testing.assert_close(chunked, whole, rtol=1e-5, atol=1e-5)
    assert static_model.logits(chunked[0, -1]).argmax() == static_model.logits(whole[0, -1]).argmax()


def test_a_new_conversation_takes_the_slot_over(static_model: OmniModel, tiny_omni_model: OmniModel) -> None:
    """One static slot per model: another conversation's turn invalidates this one's cache, and
    this one rebuilds its context from its records (same answers as with a private cache)."""
    a, b = static_model.conversation(), static_model.conversation()
    ref = tiny_omni_model.conversation()
    for text in ("Hello", "And then?"):
        got = _done(a.respond_text(text, decode=SHORT))
        assert a._cache is not None and a._cache.valid
        _done(b.respond_text("Something else", decode=SHORT))
        assert not a._cache.valid
        assert got.token_ids == _done(ref.respond_text(text, decode=SHORT)).token_ids
    again = _done(a.respond_text("Once more", decode=SHORT))  # rebuilt from the records
    assert again.token_ids == _done(ref.respond_text("Once more", decode=SHORT)).token_ids


def test_context_is_capped_at_the_slot(static_model: OmniModel) -> None:
    assert static_model.max_context_tokens == static_model.parts.context_tokens == 2048
    chat = static_model.conversation(ConversationOptions(max_context_tokens=100_000))
    assert chat.max_context_tokens == 2048
    slot = StaticSlot(static_model.llm.config, 8, torch.device("cpu"), torch.float32)
    cache = slot.take()
    cache.reserve(8)
    with pytest.raises(BadInput, match="loaded for 8"):
        cache.reserve(9)
    cache.length = 5
    cache.crop_to(3)
    assert cache.length == 3 and int(slot.position_counter()) == 3
    slot.take()
    assert not cache.valid  # a second lease invalidates the first


class _FakeGraph:
    """Stands in for torch.cuda.CUDAGraph: 'capture' runs the body once (as recording does not),
    replay runs the recorded callable."""

    captured: object = None

    def replay(self) -> None:
        assert callable(self.captured)
        self.captured()


class _BrokenGraph(_FakeGraph):
    """A graph whose replay computes nothing (what a step that baked in a host value would look like)."""

    def replay(self) -> None:
        pass


@contextlib.contextmanager
def _fake_cuda(
    monkeypatch: pytest.MonkeyPatch, step: kv_cache.DecodeStep, fail: bool, graph_class: type = _FakeGraph
) -> Iterator[list[str]]:
    calls: list[str] = []

    @contextlib.contextmanager
    def graph(g: _FakeGraph, capture_error_mode: str = "global") -> Iterator[None]:
        assert capture_error_mode == "thread_local"  # other threads (the vocoder's) may use CUDA meanwhile
        calls.append("capture")
        if fail:
            raise RuntimeError("CUDA error: operation not permitted when stream is capturing")
        g.captured = step._body
        yield

    class Stream:
        def __init__(self, device: object = None) -> None:
            pass

        def wait_stream(self, other: object) -> None:
            pass

    monkeypatch.setattr(torch.cuda, "Stream", Stream)
    monkeypatch.setattr(torch.cuda, "stream", lambda s: contextlib.nullcontext())
    monkeypatch.setattr(torch.cuda, "current_stream", lambda device=None: Stream())
    monkeypatch.setattr(torch.cuda, "CUDAGraph", graph_class)
    monkeypatch.setattr(torch.cuda, "graph", graph)
    monkeypatch.setattr(torch.cuda, "synchronize", lambda device=None: calls.append("synchronize"))
    yield calls


def test_graph_capture_resets_the_slot_and_replays(
    static_model: OmniModel, tiny_omni_model: OmniModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    step = static_model._step
    assert step is not None
    bodies = {"n": 0}
    real_body = step._body

    def counted() -> None:
        bodies["n"] += 1
        real_body()

    monkeypatch.setattr(step, "_body", counted)
    try:
        with _fake_cuda(monkeypatch, step, fail=False), torch.inference_mode():
            assert step.capture()
        # The warm-ups, the pass that is recorded, then one eager step and one replay compared.
        assert bodies["n"] == GRAPH_WARMUP_STEPS + 1 + 2
        assert int(static_model._slot.position_counter()) == 0  # type: ignore[union-attr]  # their writes undone
        assert static_model.decode_path == "cuda graph"
        done = _done(static_model.conversation().respond_text("Hello", decode=SHORT))
        # Every step after the first token was a replay of the recorded body.
        assert bodies["n"] == GRAPH_WARMUP_STEPS + 3 + SHORT.max_new_tokens - 1
        ref = _done(tiny_omni_model.conversation().respond_text("Hello", decode=SHORT))
        assert done.token_ids == ref.token_ids and done.units == ref.units
    finally:
        step.graph = None


def test_failed_capture_runs_eagerly_and_says_why(static_model: OmniModel, monkeypatch: pytest.MonkeyPatch) -> None:
    step = static_model._step
    assert step is not None and step.graph is None
    with _fake_cuda(monkeypatch, step, fail=True) as calls, torch.inference_mode():
        assert not step.capture()
    assert calls == ["capture", "synchronize"] and step.graph is None
    assert int(static_model._slot.position_counter()) == 0  # type: ignore[union-attr]
    reason = "CUDA error: operation not permitted when stream is capturing"
    assert static_model.decode_path == f"static cache, eager ({reason})"
    step.graph_error = None


def test_a_replay_that_differs_from_the_eager_step_is_not_used(
    static_model: OmniModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    step = static_model._step
    assert step is not None and step.graph is None
    with _fake_cuda(monkeypatch, step, fail=False, graph_class=_BrokenGraph), torch.inference_mode():
        assert not step.capture()
    assert step.graph is None and "differs from the eager one" in (step.graph_error or "")
    assert int(static_model._slot.position_counter()) == 0  # type: ignore[union-attr]
    step.graph_error = None


class _FakeEvent:
    def __init__(self, log: list[str]) -> None:
        self.log = log

    def synchronize(self) -> None:
        self.log.append("wait for the previous copy")

    def record(self) -> None:
        self.log.append("copy queued")


def test_token_embedding_goes_through_the_staging_row(static_model: OmniModel, monkeypatch: pytest.MonkeyPatch) -> None:
    """CUDA keeps the table in host RAM and copies one row per token from a pinned buffer: the row
    is rewritten only after the previous copy out of it has finished."""
    log: list[str] = []
    row = torch.empty((1, static_model.dims.llm.hidden_size), dtype=static_model.plan.compute_dtype)
    monkeypatch.setattr(static_model, "_staging", (row, _FakeEvent(log)))
    expected = static_model.embed_ids([7]).unsqueeze(0)
    got = static_model._embed_token(7)
    assert torch.equal(got, expected) and torch.equal(row[0], expected[0, 0])
    assert log == ["wait for the previous copy", "copy queued"]
    static_model._embed_token(9)
    assert log[2:] == ["wait for the previous copy", "copy queued"]
