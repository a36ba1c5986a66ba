"""Streaming turns: equal to an offline full recompute, multi-turn context, limits, cancel, errors.

The oracle everywhere is a from-scratch forward (no KV cache) over the whole context followed by
the reference's offline unit decoder: what the reference would compute for these ids.

Every test runs twice: with the CPU's dynamic KV cache, and with the static cache and decode step
CUDA uses (eagerly here), so both give the reference's answers.
"""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch

from engine.audio.resample import resample
from engine.config import ConversationOptions, DecodeOptions
from engine.errors import BadInput
from engine.model.conversation import Conversation
from engine.model.events import Stage, StageDone, TokenStep, TurnDone
from engine.model.unit_decoder import units_offline

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SHORT = DecodeOptions(max_new_tokens=8)


@pytest.fixture(scope="module", params=["dynamic cache", "static cache"])
def tiny_omni_model(request: pytest.FixtureRequest, tiny_omni):  # -> OmniModel; overrides conftest's for this module
    from engine.model.omni import OmniModel

    model = OmniModel.load(tiny_omni.omni, device="cpu", quant="fp32", static_kv=request.param == "static cache")
    assert model.decode_path == ("static cache, eager" if request.param == "static cache" else "dynamic cache")
    return model


def run(events) -> tuple[list[TokenStep], TurnDone]:
    steps, done = [], None
    for event in events:
        if isinstance(event, TokenStep):
            assert done is None
            steps.append(event)
        elif isinstance(event, TurnDone):
            done = event
    assert done is not None
    return steps, done


def oracle(chat: Conversation):
    """Recompute the last turn from scratch: -> (greedy tokens, units) over the whole context."""
    model = chat.model
    context = chat.context_ids()
    speech = [s for turn in chat.turns for s in turn.speech]
    answer = chat.turns[-1].answer_ids  # closed with eot; its last element was never fed
    n_prompt = chat.positions(context) - len(answer)
    hidden = model.forward(model.build_embeds(context[:-1], speech), None)[0]
    states = hidden[n_prompt - 1 :]
    greedy = model.logits(states).argmax(-1).tolist()
    return greedy, units_offline(model.unit_decoder, states), states


def test_stream_equals_offline_reference(tiny_omni_model, speech_16k) -> None:
    chat = tiny_omni_model.conversation()
    steps, done = run(chat.respond_speech(speech_16k, decode=SHORT))
    assert done.finish_reason == "length" and done.n_tokens == 8 == len(steps)
    assert [s.token_id for s in steps] == list(done.token_ids)
    assert "".join(s.text_delta for s in steps) == done.text == tiny_omni_model.tokenizer.decode(done.token_ids)
    assert [u for s in steps for u in s.new_units] == list(done.units)
    assert done.n_units == len(done.units) > 0 and len(set(done.units)) > 1
    greedy, units, states = oracle(chat)
    assert greedy[:8] == list(done.token_ids)  # the 9th state is the closing eot's, beyond the answer
    offline_units = units_offline(tiny_omni_model.unit_decoder, states[:8])
    assert offline_units == list(done.units)  # one offline pass over [h(prompt), h(y1..y7)]
    assert done.timings.encoder_ms > 0 and done.timings.total_ms >= done.timings.first_token_ms > 0
    assert done.n_context_tokens == len(chat.system_ids) + chat.positions(chat.turns[0].prompt_ids) + 9


def test_second_turn_sees_the_first_answer_and_equals_full_recompute(tiny_omni_model, speech_16k) -> None:
    chat = tiny_omni_model.conversation()
    _, first = run(chat.respond_speech(speech_16k, decode=SHORT))
    steps, second = run(chat.respond_text("And why is that?", decode=SHORT))
    context = chat.context_ids()
    turn2_prompt = chat.turns[1].prompt_ids
    start = len(context) - len(chat.turns[1].answer_ids) - len(turn2_prompt)
    first_answer = list(first.token_ids) + [tiny_omni_model.tokenizer.special.eot_id]
    assert context[start - len(first_answer) : start] == first_answer  # turn 2's prompt follows answer 1
    assert context[start : start + len(turn2_prompt)] == turn2_prompt
    greedy, _, states = oracle(chat)
    assert greedy[: second.n_tokens] == list(second.token_ids)
    assert units_offline(tiny_omni_model.unit_decoder, states[: second.n_tokens]) == list(second.units)
    assert [s.token_id for s in steps] == list(second.token_ids)
    # Without turn 1 in context the same question is answered differently: the context matters.
    fresh = tiny_omni_model.conversation()
    _, alone = run(fresh.respond_text("And why is that?", decode=SHORT))
    assert alone.token_ids != second.token_ids


def test_context_limit_drops_oldest_turns(tiny_omni_model, speech_16k) -> None:
    chat = tiny_omni_model.conversation()
    run(chat.respond_speech(speech_16k, decode=SHORT))
    run(chat.respond_text("Tell me more.", decode=SHORT))
    second_turn = chat.turns[1]
    q3 = "Thank you very much."
    # One position short of keeping everything (+1: the eot that will close the answer).
    chat.max_context_tokens = (
        chat.n_context_tokens + chat.positions(chat.prompts.text_turn_ids(q3)) + SHORT.max_new_tokens
    )
    limit = chat.max_context_tokens
    _, third = run(chat.respond_text(q3, decode=SHORT))
    assert third.n_dropped_turns == 1
    assert len(chat.turns) == 2 and chat.turns[0] is second_turn
    assert chat.n_context_tokens <= limit
    assert chat.context_ids()[: len(chat.system_ids)] == chat.system_ids
    assert -200 not in chat.context_ids()  # the speech turn is gone
    greedy, _, states = oracle(chat)  # the re-prefilled cache equals a fresh forward of what is left
    assert greedy[: third.n_tokens] == list(third.token_ids)
    assert units_offline(tiny_omni_model.unit_decoder, states[: third.n_tokens]) == list(third.units)


def test_turn_too_long_for_the_context_is_refused(tiny_omni_model, speech_16k) -> None:
    probe = tiny_omni_model.conversation()
    limit = len(probe.system_ids) + probe.positions(probe.prompts.text_turn_ids("Hi")) + 12
    chat = tiny_omni_model.conversation(ConversationOptions(max_context_tokens=limit))
    _, done = run(chat.respond_text("Hi", decode=DecodeOptions(max_new_tokens=1000)))
    assert done.finish_reason in ("context", "eos") and chat.n_context_tokens <= limit
    if done.finish_reason == "context":
        assert done.n_tokens == 11 and chat.n_context_tokens == limit  # filled exactly, closing eot included
    with pytest.raises(BadInput, match="context"):
        run(chat.respond_speech(speech_16k, decode=SHORT))  # 300 speech positions can never fit
    assert len(chat.turns) == 1  # a refused turn does not throw the history away


def test_cancel_stops_within_one_token(tiny_omni_model, speech_16k) -> None:
    chat = tiny_omni_model.conversation()
    steps: list[TokenStep] = []
    events = chat.respond_speech(speech_16k, decode=SHORT, should_stop=lambda: len(steps) >= 1)
    done = None
    for event in events:
        if isinstance(event, TokenStep):
            steps.append(event)
        elif isinstance(event, TurnDone):
            done = event
    assert len(steps) == 1 and done is not None
    assert done.finish_reason == "cancelled" and done.n_tokens == 1
    eot = tiny_omni_model.tokenizer.special.eot_id
    assert chat.turns[-1].answer_ids == [steps[0].token_id, eot]  # the partial answer stays, closed
    _, nxt = run(chat.respond_text("Go on.", decode=SHORT))
    assert oracle(chat)[0][: nxt.n_tokens] == list(nxt.token_ids)


def test_cancel_before_start_changes_nothing(tiny_omni_model, speech_16k) -> None:
    chat = tiny_omni_model.conversation()
    run(chat.respond_text("Hello", decode=SHORT))
    before = (chat.n_context_tokens, len(chat.turns))
    steps, done = run(chat.respond_speech(speech_16k, decode=SHORT, should_stop=lambda: True))
    assert steps == [] and done.finish_reason == "cancelled" and done.n_tokens == 0
    assert (chat.n_context_tokens, len(chat.turns)) == before


def test_closing_the_generator_keeps_the_context_consistent(tiny_omni_model) -> None:
    chat = tiny_omni_model.conversation()
    events = chat.respond_text("Hello there", decode=SHORT)
    assert isinstance(next(events), StageDone)  # the prefill mark (a typed turn has no speech stages)
    first, second = next(events), next(events)
    events.close()
    eot = tiny_omni_model.tokenizer.special.eot_id
    assert chat.turns[0].answer_ids == [first.token_id, second.token_id, eot]
    _, done = run(chat.respond_text("Again?", decode=SHORT))
    assert oracle(chat)[0][: done.n_tokens] == list(done.token_ids)


@pytest.mark.parametrize("stop_token", ["<|eot_id|>", "<|end_of_text|>"])
def test_eos_ends_the_turn_and_is_closed_with_eot(tiny_omni_model, monkeypatch, stop_token: str) -> None:
    stop_id = tiny_omni_model.tokenizer.token_to_id(stop_token)
    real_logits = tiny_omni_model.logits
    calls = {"n": 0}

    def forced(hidden: torch.Tensor) -> torch.Tensor:
        calls["n"] += 1
        out = real_logits(hidden)
        if calls["n"] == 3:
            out = out.clone()
            out[..., stop_id] = out.max() + 10
        return out

    chat = tiny_omni_model.conversation()
    monkeypatch.setattr(tiny_omni_model, "logits", forced)
    steps, done = run(chat.respond_text("Hi", decode=SHORT))
    monkeypatch.undo()
    assert done.finish_reason == "eos" and done.n_tokens == 3 and done.token_ids[-1] == stop_id
    assert steps[-1].text_delta == "" and stop_token not in done.text
    assert chat.turns[0].answer_ids == [*done.token_ids[:2], tiny_omni_model.tokenizer.special.eot_id]
    assert done.units == tuple(u for s in steps for u in s.new_units)
    _, nxt = run(chat.respond_text("Why?", decode=SHORT))
    assert oracle(chat)[0][: nxt.n_tokens] == list(nxt.token_ids)


def test_failure_mid_turn_rebuilds_the_cache(tiny_omni_model, monkeypatch) -> None:
    chat = tiny_omni_model.conversation()
    run(chat.respond_text("Hello", decode=SHORT))
    real_step = tiny_omni_model.step
    calls = {"n": 0}

    def flaky(token, cache):
        calls["n"] += 1
        if calls["n"] == 2:  # one decode step, then the failure
            raise RuntimeError("CUDA error: simulated")
        return real_step(token, cache)

    monkeypatch.setattr(tiny_omni_model, "step", flaky)
    with pytest.raises(RuntimeError, match="simulated"):
        run(chat.respond_text("Tell me", decode=SHORT))
    monkeypatch.undo()
    assert chat.turns[-1].answer_ids[-1] == tiny_omni_model.tokenizer.special.eot_id  # partial answer recorded
    _, done = run(chat.respond_text("Once more", decode=SHORT))
    assert oracle(chat)[0][: done.n_tokens] == list(done.token_ids)


def test_reset_starts_a_new_conversation(tiny_omni_model) -> None:
    chat = tiny_omni_model.conversation()
    _, fresh = run(chat.respond_text("Hello", decode=SHORT))
    run(chat.respond_text("More", decode=SHORT))
    chat.reset()
    assert chat.turns == [] and chat.n_context_tokens == len(chat.system_ids)
    _, again = run(chat.respond_text("Hello", decode=SHORT))
    assert again.token_ids == fresh.token_ids and again.units == fresh.units


def test_any_rate_and_channels_are_resampled(tiny_omni_model, speech_16k) -> None:
    stereo_48k = np.stack([resample(speech_16k, 16_000, 48_000)] * 2, axis=1)
    _, a = run(tiny_omni_model.conversation().respond_speech(stereo_48k, 48_000, decode=SHORT))
    mono_16k = resample(stereo_48k.mean(axis=1), 48_000, 16_000)
    _, b = run(tiny_omni_model.conversation().respond_speech(mono_16k, decode=SHORT))
    assert a.token_ids == b.token_ids and a.units == b.units


def test_long_audio_is_cut_to_30_s(tiny_omni_model) -> None:
    audio = np.zeros(31 * 16_000, np.float32)
    audio[-16_000:] = 0.5  # only in the part beyond 30 s
    _, done = run(tiny_omni_model.conversation().respond_speech(audio, decode=DecodeOptions(max_new_tokens=2)))
    _, silent = run(
        tiny_omni_model.conversation().respond_speech(np.zeros(100, np.float32), decode=DecodeOptions(max_new_tokens=2))
    )
    assert done.audio_truncated and not silent.audio_truncated
    assert done.token_ids == silent.token_ids  # the encoder never heard the last second


def test_sampling_is_seeded(tiny_omni_model) -> None:
    opts = DecodeOptions(max_new_tokens=8, temperature=1.5, top_p=0.9, seed=7)
    _, a = run(tiny_omni_model.conversation().respond_text("Hi", decode=opts))
    _, b = run(tiny_omni_model.conversation().respond_text("Hi", decode=opts))
    _, greedy = run(tiny_omni_model.conversation().respond_text("Hi", decode=SHORT))
    assert a.token_ids == b.token_ids
    assert a.token_ids != greedy.token_ids


def test_empty_inputs_are_bad_input(tiny_omni_model) -> None:
    chat = tiny_omni_model.conversation()
    with pytest.raises(BadInput):
        chat.respond_speech(np.zeros(0, np.float32))
    with pytest.raises(BadInput):
        chat.respond_text("   ")


@pytest.mark.parametrize("keep", [0, 3, 7])
def test_truncate_last_answer_keeps_the_spoken_prefix(tiny_omni_model, keep: int) -> None:
    chat = tiny_omni_model.conversation()
    _, first = run(chat.respond_text("Tell me a story", decode=SHORT))
    eot = tiny_omni_model.tokenizer.special.eot_id
    chat.truncate_last_answer(keep)
    assert chat.turns[-1].answer_ids == [*first.token_ids[:keep], eot]
    chat.truncate_last_answer(keep + 1)  # longer than what is left: nothing changes
    assert chat.turns[-1].answer_ids == [*first.token_ids[:keep], eot]
    _, nxt = run(chat.respond_text("Go on.", decode=SHORT))
    assert oracle(chat)[0][: nxt.n_tokens] == list(nxt.token_ids)  # the cache was cut consistently


def test_speech_turn_timings_are_cumulative_stages(tiny_omni_model, speech_16k) -> None:
    _, done = run(tiny_omni_model.conversation().respond_speech(speech_16k, decode=SHORT))
    t = done.timings
    assert 0 < t.features_ms < t.encoder_ms < t.first_token_ms <= t.total_ms
    assert t.prefill_ms > 0 and t.decode_ms > 0 and t.units_ms > 0


def test_stage_marks_come_when_each_stage_ends(tiny_omni_model, speech_16k) -> None:
    """Marks are yielded live, in order, before the first token; a turn stopped after the encoder
    still reports the stages it finished."""
    started = time.perf_counter()
    events = list(tiny_omni_model.conversation().respond_speech(speech_16k, decode=SHORT))
    marks = [e for e in events if isinstance(e, StageDone)]
    assert [m.stage for m in marks] == [Stage.FEATURES, Stage.ENCODER, Stage.PREFILL]
    first_token = next(i for i, e in enumerate(events) if isinstance(e, TokenStep))
    assert all(events.index(m) < first_token for m in marks)
    assert started < marks[0].at < marks[1].at < marks[2].at
    done = events[-1]
    assert isinstance(done, TurnDone)
    assert abs((marks[1].at - started) * 1e3 - done.timings.encoder_ms) < 50  # same clock, same stage

    stopped: list[StageDone] = []
    for event in tiny_omni_model.conversation().respond_speech(speech_16k, decode=SHORT):
        if isinstance(event, StageDone):
            stopped.append(event)
            if event.stage is Stage.ENCODER:
                break  # e.g. the user pressed the key again
    assert [m.stage for m in stopped] == [Stage.FEATURES, Stage.ENCODER]
