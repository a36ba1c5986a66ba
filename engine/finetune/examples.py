"""Training examples and the two losses, computed on the loaded ``OmniModel``'s own modules.

One example = ``PromptBuilder.first_turn_ids`` (exactly what a new conversation holds when the app
starts answering: the system prefix, the user turn with its speech sentinel or typed text, the
assistant header) + the answer's tokens + ``<|eot_id|>``. Stage 1's loss is the cross-entropy of
the answer tokens and the closing ``<|eot_id|>`` only (the reference's ``preprocess_llama_3``
labels). Logits are computed at those positions only, which for Llama-3's 128k vocabulary is
most of the memory a full-sequence head would take.

Stage 2 follows the inference convention of the unit decoder (reference notes §1.4): the states
``[h(last prompt position), h(y_1) .. h(y_{N-1})]`` that produced the N answer tokens are exactly
the stage-1 loss positions. The decoder sees them (LLM frozen), and the loss is CTC over the
deduplicated target units, blank = ``unit_vocab_size``, summed and divided by the number of target
units (the reference's ``ctc_loss``).

Shapes: ``speech``: the frozen Whisper encoder's output (n_audio_ctx, encoder_dim), computed once
per example; embeds (B, T, H); states (N, H).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from engine.audio.resample import MODEL_SAMPLE_RATE_HZ, resample
from engine.finetune.data import DataItem, load_question_audio
from engine.model.omni import OmniModel
from engine.model.prompt import SPEECH_TOKEN_INDEX, PromptBuilder

IGNORE_INDEX = -100


@dataclass(frozen=True, slots=True)
class Example:
    item_id: str
    ids: tuple[int, ...]  # prompt + answer + eot; one SPEECH_TOKEN_INDEX for a spoken question
    n_prompt: int  # ids[:n_prompt] is the prompt
    speech: torch.Tensor | None  # (n_audio_ctx, encoder_dim), CPU
    units: tuple[int, ...] | None = None  # stage-2 targets

    @property
    def n_answer(self) -> int:
        """Answer tokens including the closing <|eot_id|>."""
        return len(self.ids) - self.n_prompt

    def n_positions(self, n_speech: int) -> int:
        return len(self.ids) + (n_speech - 1 if self.speech is not None else 0)


def answer_ids(model: OmniModel, answer: str) -> list[int]:
    """The answer's tokens as the model would generate them, closed by <|eot_id|>."""
    return model.tokenizer.encode(answer.strip(), add_special_tokens=False) + [model.tokenizer.special.eot_id]


def example_ids(prompts: PromptBuilder, model: OmniModel, item: DataItem) -> tuple[list[int], int]:
    prompt = prompts.first_turn_ids(None if item.spoken else item.question_text)
    return prompt + answer_ids(model, item.answer), len(prompt)


@torch.no_grad()  # not inference_mode: the result feeds autograd (through the trainable adapter)
def encode_question(model: OmniModel, item: DataItem) -> torch.Tensor:
    """The frozen encoder's output for a spoken question, resampled and padded as at inference."""
    audio, rate = load_question_audio(item)
    wav = resample(audio, rate, MODEL_SAMPLE_RATE_HZ)
    mel = model.speech_features(wav)
    enc = model.encoder(mel.unsqueeze(0).to(model.plan.encoder_dtype))
    return enc[0].to("cpu", torch.float32)


def build_examples(model: OmniModel, prompts: PromptBuilder, items: Sequence[DataItem]) -> list[Example]:
    examples = []
    for item in items:
        ids, n_prompt = example_ids(prompts, model, item)
        speech = encode_question(model, item) if item.spoken else None
        examples.append(Example(item.id, tuple(ids), n_prompt, speech, item.units))
    return examples


def _speech_embeds(model: OmniModel, speech: torch.Tensor) -> torch.Tensor:
    """encoder output (n_ctx, enc_dim) -> (n_speech, H) through the (trainable) speech adapter."""
    adapter = model.adapter
    dtype = adapter.linear1.weight.dtype
    emb = adapter(speech.to(model.device, dtype).unsqueeze(0))[0]
    return emb.to(model.plan.compute_dtype)


def _answer_positions(model: OmniModel, example: Example) -> list[int]:
    """Embedding positions whose next-token prediction is an answer token (incl. <|eot_id|>)."""
    start = example.n_positions(model.dims.n_speech_embeddings) - example.n_answer
    return list(range(start - 1, start - 1 + example.n_answer))


def batch_embeds(model: OmniModel, batch: Sequence[Example]) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded (B, T, H) embeddings and the (B, T) attention mask."""
    rows = []
    for ex in batch:
        speech = [_speech_embeds(model, ex.speech)] if ex.speech is not None else []
        if SPEECH_TOKEN_INDEX in ex.ids and not speech:
            raise ValueError(f"{ex.item_id}: a speech sentinel without speech")
        rows.append(model.build_embeds(ex.ids, speech)[0])
    width = max(r.shape[0] for r in rows)
    embeds = rows[0].new_zeros((len(rows), width, rows[0].shape[1]))
    mask = torch.zeros((len(rows), width), dtype=torch.long, device=model.device)
    for i, row in enumerate(rows):
        embeds[i, : row.shape[0]] = row
        mask[i, : row.shape[0]] = 1
    return embeds, mask


def llm_hidden(model: OmniModel, batch: Sequence[Example]) -> torch.Tensor:
    """Final post-norm hidden states (B, T, H) of the batch (autograd-enabled)."""
    embeds, mask = batch_embeds(model, batch)
    return model.llm.model(inputs_embeds=embeds, attention_mask=mask, use_cache=False).last_hidden_state


def stage1_loss_sum(model: OmniModel, batch: Sequence[Example]) -> tuple[torch.Tensor, int]:
    """Summed answer-token cross-entropy of the batch and the number of tokens it covers."""
    hidden = llm_hidden(model, batch)
    picked: list[torch.Tensor] = []
    targets: list[int] = []
    for i, ex in enumerate(batch):
        picked.append(hidden[i, _answer_positions(model, ex)])
        targets.extend(ex.ids[ex.n_prompt :])
    head = model.llm.lm_head
    logits = head(torch.cat(picked).to(head.weight.dtype)).float()
    target = torch.tensor(targets, dtype=torch.long, device=logits.device)
    return F.cross_entropy(logits, target, reduction="sum"), len(targets)


@torch.no_grad()
def answer_states(model: OmniModel, example: Example) -> torch.Tensor:
    """The decoder's input for this answer, inference convention: (N answer tokens, H) on CPU."""
    hidden = llm_hidden(model, [example])[0]
    return hidden[_answer_positions(model, example)].detach().to("cpu")


def stage2_loss_sum(model: OmniModel, states: torch.Tensor, units: Sequence[int], checkpoint: bool) -> torch.Tensor:
    """Summed CTC loss of one answer: states (N, H) -> decoder logits (N·λ, units + 1) vs ``units``."""
    decoder = model.unit_decoder
    logits = decoder.forward_full(states.to(model.device), checkpoint_layers=checkpoint)
    lprobs = torch.log_softmax(logits.float(), dim=-1).unsqueeze(1)  # (T, 1, C)
    target = torch.tensor([list(units)], dtype=torch.long, device=lprobs.device)
    return F.ctc_loss(
        lprobs,
        target,
        input_lengths=torch.tensor([lprobs.shape[0]]),
        target_lengths=torch.tensor([len(units)]),
        blank=decoder.dims.blank_id,
        reduction="sum",
        zero_infinity=True,
    )


def edit_distance(ref: Sequence[object], hyp: Sequence[object]) -> int:
    """Levenshtein distance (substitutions, insertions, deletions all cost 1)."""
    prev = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, start=1):
        cur = [i] + [0] * len(hyp)
        for j, h in enumerate(hyp, start=1):
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (r != h))
        prev = cur
    return prev[-1]


def units_fit(n_tokens: int, n_units: int, upsample: int) -> bool:
    """CTC needs at least one frame per target unit (plus blanks between repeats, none after dedup)."""
    return 0 < n_units <= n_tokens * upsample
