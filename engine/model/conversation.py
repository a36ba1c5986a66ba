"""A multi-turn conversation over one ``OmniModel``, streamed token by token.

    chat = model.conversation()
    for event in chat.respond_speech(audio, sample_rate_hz=48000, should_stop=cancelled):
        if isinstance(event, TokenStep): show(event.text_delta); speak(event.new_units)
        elif isinstance(event, TurnDone): done = event       # always last
        # StageDone marks (features, encoder, prefill) come as each stage ends
    chat.respond_text("And in French?")                      # a typed turn continues the same context
    chat.reset()                                             # "new conversation"

Context. The reference is single-turn; here the LLM's KV cache is kept across turns, so earlier
speech embeddings and answers stay in context and a new turn only prefills its own tokens.
Context = system prefix (double BOS, as the reference) + per turn: user header, the speech span
(or typed text), the fixed instruction, ``<|eot_id|>``, assistant header, the answer closed by
``<|eot_id|>``. Before a turn, the oldest turns are dropped until context + the new turn +
``max_new_tokens`` fit ``max_context_tokens``; the cache is then cut back to the system prefix and
the kept turns are prefilled again (RoPE positions change, so dropped turns cannot be cut out).

Cancellation. ``should_stop()`` is checked before the speech is encoded and between tokens; a
cancelled turn ends with ``TurnDone(finish_reason="cancelled")`` and its partial answer stays in
context (the user heard it). Closing the generator early has the same effect without a
``TurnDone``. If a turn fails mid-way the cache is rebuilt from the turn records next time.

Units. Each token's hidden state (the one that produced it: inference convention
``[h(last prompt), h(y1..y_{N-1})]``) goes through the unit decoder incrementally
(``UnitStream``); ``TokenStep.new_units`` are the units it added.

One read-back per token. The token is chosen and the unit decoder launched on the device; the
token id and the unit decoder's frame labels then come back to the host together, in one copy
(the id must reach the host every token: the embedding table lives in host RAM). On a GPU that is
the step's only wait.

Out of memory (a long context on a small GPU, another program taking memory) ends the turn with
``NotEnoughMemory`` and advice; the context is rebuilt from the turn records on the next turn.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

import numpy as np
import torch

from engine.audio.features import N_SAMPLES
from engine.audio.resample import MODEL_SAMPLE_RATE_HZ, resample, to_mono
from engine.config import ConversationOptions, DecodeOptions
from engine.errors import BadInput, EngineError, NotEnoughMemory
from engine.gpu import error_summary, is_out_of_memory, release_cuda_cache
from engine.model.events import FinishReason, Stage, StageDone, TokenStep, TurnDone, TurnEvent, TurnTimings
from engine.model.kv_cache import KvCache
from engine.model.prompt import SPEECH_TOKEN_INDEX, PromptBuilder
from engine.model.sampling import choose_token, make_generator
from engine.model.tokens import IncrementalDetokenizer
from engine.model.unit_decoder import UnitStream

if TYPE_CHECKING:  # the model creates conversations (OmniModel.conversation); this only names its type
    from engine.model.omni import OmniModel

logger = logging.getLogger(__name__)

StopCheck = Callable[[], bool]


@dataclass(eq=False)
class TurnRecord:
    """One exchange as it sits in the context: ``prompt_ids`` holds a sentinel per speech span."""

    prompt_ids: list[int]
    speech: tuple[torch.Tensor, ...]  # (n_speech, llm_dim) per sentinel
    answer_ids: list[int] = field(default_factory=list)  # closed with <|eot_id|>


def _never() -> bool:
    return False


class Conversation:
    def __init__(self, model: OmniModel, options: ConversationOptions | None = None) -> None:
        self.model = model
        self.options = options or ConversationOptions()
        self.prompts = PromptBuilder(model.tokenizer, self.options)
        self.system_ids = self.prompts.system_ids()
        wanted = self.options.max_context_tokens or model.config.model_max_length
        self.max_context_tokens = min(wanted, model.max_context_tokens or wanted)
        self._n_speech = model.dims.n_speech_embeddings
        self.reset()

    # ------------------------------------------------------------------ state

    def reset(self) -> None:
        """Forget everything (a new conversation); the system prefix is prefilled on the next turn."""
        self.turns: list[TurnRecord] = []
        self._cache: KvCache | None = None
        self._cache_valid = True
        self._pending: list[int] = []  # in the context, not yet in the cache (the closing tokens)

    def positions(self, ids: list[int]) -> int:
        """Context positions of ``ids``: a sentinel stands for ``n_speech`` embeddings."""
        n_sentinels = sum(1 for t in ids if t == SPEECH_TOKEN_INDEX)
        return len(ids) + n_sentinels * (self._n_speech - 1)

    def _turn_positions(self, turn: TurnRecord) -> int:
        return self.positions(turn.prompt_ids) + len(turn.answer_ids)

    @property
    def n_context_tokens(self) -> int:
        return len(self.system_ids) + sum(self._turn_positions(t) for t in self.turns)

    def context_ids(self) -> list[int]:
        """The whole context as ids (one ``SPEECH_TOKEN_INDEX`` per speech span), system prefix first."""
        ids = list(self.system_ids)
        for turn in self.turns:
            ids += turn.prompt_ids + turn.answer_ids
        return ids

    def truncate_last_answer(self, n_tokens: int) -> None:
        """After an interruption: keep only the first ``n_tokens`` of the last answer (closed by eot).

        The cache is cut back to what is kept; the closing tokens become pending for the next turn.
        """
        if not self.turns or n_tokens < 0:
            return
        last = self.turns[-1]
        body = last.answer_ids[:-1]  # answer_ids always ends with the closing <|eot_id|>
        if n_tokens >= len(body):
            return
        base = self.n_context_tokens - len(last.answer_ids)  # positions before the answer
        last.answer_ids = body[:n_tokens] + [self.model.tokenizer.special.eot_id]
        if not self._cache_usable():
            return  # rebuilt from the records on the next turn
        assert self._cache is not None
        keep = min(n_tokens, self._cache.length - base)
        self._cache.crop_to(base + keep)
        self._pending = last.answer_ids[keep:]

    def _cache_usable(self) -> bool:
        return self._cache is not None and self._cache_valid and self._cache.valid

    # ------------------------------------------------------------------ turns

    def respond_speech(
        self,
        audio: np.ndarray,
        sample_rate_hz: int = MODEL_SAMPLE_RATE_HZ,
        *,
        decode: DecodeOptions | None = None,
        should_stop: StopCheck | None = None,
    ) -> Iterator[TurnEvent]:
        """audio: float32 (n_samples,) or (n_samples, channels) at any rate -> events of one turn."""
        wav = to_mono(np.asarray(audio, dtype=np.float32))
        wav = resample(wav, sample_rate_hz, MODEL_SAMPLE_RATE_HZ)
        if wav.size == 0:
            raise BadInput("The recording is empty.", fix="Speak while recording.")
        return self._run(self.prompts.user_turn_ids(None), wav, decode or DecodeOptions(), should_stop or _never)

    def respond_text(
        self, text: str, *, decode: DecodeOptions | None = None, should_stop: StopCheck | None = None
    ) -> Iterator[TurnEvent]:
        """A typed user turn (same context, no speech span)."""
        if not text.strip():
            raise BadInput("The message is empty.", fix="Type a question first.")
        return self._run(self.prompts.user_turn_ids(text), None, decode or DecodeOptions(), should_stop or _never)

    def _make_room(self, new_positions: int, max_new: int) -> tuple[int, int]:
        """Drop oldest turns until the new turn and its answer fit; -> (n_dropped, allowed new tokens).

        Nothing is dropped when even an empty history leaves no room (BadInput instead).
        """
        current = self.n_context_tokens
        needed = new_positions + max_new + 1  # + the <|eot_id|> that closes the answer
        n_drop = 0
        while n_drop < len(self.turns) and current + needed > self.max_context_tokens:
            current -= self._turn_positions(self.turns[n_drop])
            n_drop += 1
        room = self.max_context_tokens - current - new_positions - 1
        if room < 1:
            raise BadInput(
                f"This turn needs {new_positions} context positions; the limit is {self.max_context_tokens}.",
                fix="Ask a shorter question or raise the context limit.",
            )
        del self.turns[:n_drop]
        return n_drop, min(max_new, room)

    def _prefill_inputs(self, turn: TurnRecord, dropped: int) -> tuple[list[int], list[torch.Tensor]]:
        """What must go through the LLM now so that the cache covers context + the new prompt."""
        ids: list[int]
        speech: list[torch.Tensor] = []
        if not self._cache_usable():
            self._cache = self.model.new_cache()
            self._cache_valid = True
            ids = list(self.system_ids)
            kept = self.turns
        elif dropped:
            assert self._cache is not None
            self._cache.crop_to(len(self.system_ids))
            ids, kept = [], self.turns
        else:
            ids, kept = list(self._pending), []
        for old in kept:
            ids += old.prompt_ids + old.answer_ids
            speech += old.speech
        self._pending = []
        return ids + turn.prompt_ids, speech + list(turn.speech)

    def _close_answer(self, turn: TurnRecord, generated: list[int]) -> None:
        """Record the answer ending in <|eot_id|>; the tokens not yet fed become pending."""
        eos = self.model.tokenizer.special.eos_ids
        eot = self.model.tokenizer.special.eot_id
        body = generated[:-1] if generated and generated[-1] in eos else generated
        turn.answer_ids = body + [eot]
        n_fed = max(len(generated) - 1, 0)
        self._pending = turn.answer_ids[n_fed:]

    def _run(
        self, prompt_ids: list[int], wav: np.ndarray | None, decode: DecodeOptions, should_stop: StopCheck
    ) -> Iterator[TurnEvent]:
        """The turn (``_turn``), with an allocation failure turned into ``NotEnoughMemory``."""
        try:
            yield from self._turn(prompt_ids, wav, decode, should_stop)
            return
        except Exception as exc:
            if isinstance(exc, EngineError) or not is_out_of_memory(exc):
                raise
            detail = error_summary(exc)
        # Out of the except block, so the failed frames (and the tensors they held) are gone.
        self._cache = None  # invalid anyway; a dynamic cache's memory goes with it
        release_cuda_cache()
        raise NotEnoughMemory(
            f"The answer ran out of memory ({detail}).",
            fix="Start a new conversation or shorten the answer length; close other programs that use the GPU, "
            "or choose a smaller precision (nf4).",
        )

    def _turn(
        self, prompt_ids: list[int], wav: np.ndarray | None, decode: DecodeOptions, should_stop: StopCheck
    ) -> Iterator[TurnEvent]:
        t0 = time.perf_counter()

        def since_start_ms(at: float) -> float:
            return (at - t0) * 1e3

        timings = TurnTimings()
        truncated = wav is not None and wav.shape[0] > N_SAMPLES
        if should_stop():
            yield self._done("", [], [], timings, "cancelled", 0, truncated, t0)
            return
        speech: tuple[torch.Tensor, ...] = ()
        if wav is not None:
            mel = self.model.speech_features(wav)
            self.model.synchronize()
            at = time.perf_counter()
            timings = replace(timings, features_ms=since_start_ms(at))
            yield StageDone(Stage.FEATURES, at)
            speech = (self.model.encode_mel(mel),)
            self.model.synchronize()
            at = time.perf_counter()
            timings = replace(timings, encoder_ms=since_start_ms(at))
            yield StageDone(Stage.ENCODER, at)
        turn = TurnRecord(prompt_ids=prompt_ids, speech=speech)
        dropped, max_new = self._make_room(self.positions(prompt_ids), decode.max_new_tokens)
        if dropped:
            logger.info("context limit: dropped the %d oldest turn(s)", dropped)

        generated: list[int] = []
        units_s = decode_s = 0.0
        try:
            t_prefill = time.perf_counter()
            ids, spans = self._prefill_inputs(turn, dropped)
            hidden = self.model.forward(self.model.build_embeds(ids, spans), self._cache)[:, -1]
            self.model.synchronize()
            at = time.perf_counter()
            timings = replace(timings, prefill_ms=(at - t_prefill) * 1e3)
            self.turns.append(turn)
            yield StageDone(Stage.PREFILL, at)
            detok = IncrementalDetokenizer(self.model.tokenizer)
            units = UnitStream(self.model.unit_decoder, max_tokens=max_new)
            generator = make_generator(decode, self.model.device)
            eos = self.model.tokenizer.special.eos_ids
            finish: FinishReason = "context" if max_new < decode.max_new_tokens else "length"
            for step in range(max_new):
                chosen = choose_token(self.model.logits(hidden[0]), decode, generator)
                t_units = time.perf_counter()  # on a GPU this times the launch; the work overlaps the read-back
                labels = units.frame_labels(hidden)
                units_s += time.perf_counter() - t_units
                token, *frame_labels = torch.cat((chosen, labels)).tolist()  # the step's one read-back
                new_units = units.accept(frame_labels)
                generated.append(token)
                delta = detok.push(token)
                if step == 0:
                    timings = replace(timings, first_token_ms=since_start_ms(time.perf_counter()))
                yield TokenStep(text_delta=delta, token_id=token, new_units=tuple(new_units))
                if token in eos:
                    finish = "eos"
                    break
                if step == max_new - 1:
                    break
                if should_stop():
                    finish = "cancelled"
                    break
                t_step = time.perf_counter()
                assert self._cache is not None
                hidden = self.model.step(token, self._cache)
                decode_s += time.perf_counter() - t_step
        except GeneratorExit:
            self._close_answer(turn, generated)
            raise
        except BaseException:
            self._cache_valid = False  # a forward may have stopped half-way through the layers
            if turn in self.turns:
                self._close_answer(turn, generated)
            raise
        self._close_answer(turn, generated)
        detok.flush()  # a character cut off by max_new_tokens still reaches TurnDone.text
        timings = replace(timings, decode_ms=decode_s * 1e3, units_ms=units_s * 1e3)
        yield self._done(detok.text, generated, units.units, timings, finish, dropped, truncated, t0)

    def _done(
        self,
        text: str,
        generated: list[int],
        units: list[int],
        timings: TurnTimings,
        finish: FinishReason,
        dropped: int,
        truncated: bool,
        t0: float,
    ) -> TurnDone:
        return TurnDone(
            text=text,
            token_ids=tuple(generated),
            units=tuple(units),
            timings=replace(timings, total_ms=(time.perf_counter() - t0) * 1e3),
            n_tokens=len(generated),
            n_units=len(units),
            finish_reason=finish,
            n_context_tokens=self.n_context_tokens,
            n_dropped_turns=dropped,
            audio_truncated=truncated,
        )
