"""Decode cost of speech units: time per answer token, text only vs text + units (paper: 1.28x).

Three ways to decode a ``n_tokens`` greedy answer after a speech-sized prompt:

    text       LLM step + head (what a text-only model pays)
    units      text + our incremental unit decoder (KV cache, λ new frames per token, O(N))
    recompute  text + the reference streamer's full unit-decoder recompute per token (O(N²))

Runs are interleaved (text, units, recompute, text, ...) and the best of ``repeats`` is kept, so a
shared machine's slow drifts hit every mode alike.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch

from engine.bench.report import Table, fmt, millions
from engine.model.omni import OmniModel
from engine.model.unit_decoder import UnitStream, units_offline

PROMPT_POSITIONS = 340  # ~ system + speech span (300) + instruction
MODES = ("text", "units", "recompute")
MODE_NAMES = {
    "text": "text only (LLM step + head)",
    "units": "text + units, incremental unit decoder (ours, O(N))",
    "recompute": "text + units, full recompute per token (reference streamer, O(N²))",
}
PAPER_RATIO = 1.28  # LLaMA-Omni Table 3: S2SIF / S2TIF decoding time
TARGET_RATIO = 1.05
WARMUP_TOKENS = 4


def prompt_ids(vocab_size: int, n: int = PROMPT_POSITIONS) -> list[int]:
    """``n`` ordinary token ids (1, 2, ..., wrapping inside the vocabulary)."""
    return [1 + i % (vocab_size - 1) for i in range(n)]


@torch.inference_mode()
def time_decode(model: OmniModel, n_tokens: int, mode: str) -> tuple[float, float]:
    """(seconds per token, of which unit decoding) for ``n_tokens`` greedy steps after a prompt.

    mode: "text" (no units), "units" (our incremental decoder), "recompute" (reference streamer).
    The loop is the conversation's: ``OmniModel.step`` (a CUDA graph on GPUs) and one read-back of
    the token and the unit labels per step. On CUDA the unit decoder's share is its GPU time
    (events, no extra wait); on the CPU its wall time.
    """
    ids = prompt_ids(model.dims.llm.vocab_size)
    cache = model.new_cache()
    hidden = model.forward(model.build_embeds(ids), cache)[:, -1]
    stream = UnitStream(model.unit_decoder, max_tokens=n_tokens)
    states: list[torch.Tensor] = []
    cuda = model.device.type == "cuda"
    unit_s = 0.0
    unit_events: list[tuple[torch.cuda.Event, torch.cuda.Event]] = []
    model.synchronize()
    start = time.perf_counter()
    for _ in range(n_tokens):
        chosen = model.logits(hidden[0]).argmax().view(1)
        t_units = time.perf_counter()
        events = (torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)) if cuda else None
        if events is not None:
            events[0].record()
        labels = stream.frame_labels(hidden) if mode == "units" else None
        if mode == "recompute":
            states.append(hidden)
            units_offline(model.unit_decoder, torch.cat(states))  # the reference re-runs everything
        if events is not None:
            events[1].record()
            unit_events.append(events)
        else:
            unit_s += time.perf_counter() - t_units
        token, *frame_labels = (chosen if labels is None else torch.cat((chosen, labels))).tolist()
        if labels is not None:
            stream.accept(frame_labels)
        hidden = model.step(token, cache)
    model.synchronize()
    elapsed = time.perf_counter() - start
    if unit_events:
        unit_s = sum(begin.elapsed_time(end) for begin, end in unit_events) / 1e3
    return elapsed / n_tokens, unit_s / n_tokens


@dataclass(frozen=True, slots=True)
class DecodeResult:
    n_tokens: int
    repeats: int
    per_token_s: dict[str, float]  # best per mode
    unit_s: dict[str, float]  # of which unit decoding, best run per mode

    def ratio(self, mode: str) -> float:
        return self.per_token_s[mode] / self.per_token_s["text"]

    def tokens_per_s(self, mode: str) -> float:
        return 1.0 / self.per_token_s[mode]


def run_decode(model: OmniModel, n_tokens: int, repeats: int, modes: tuple[str, ...] = MODES) -> DecodeResult:
    time_decode(model, WARMUP_TOKENS, "units")
    runs: dict[str, list[tuple[float, float]]] = {mode: [] for mode in modes}
    for _ in range(repeats):  # interleaved, so slow drifts of a shared machine hit all modes
        for mode in modes:
            runs[mode].append(time_decode(model, n_tokens, mode))
    return DecodeResult(
        n_tokens=n_tokens,
        repeats=repeats,
        per_token_s={mode: min(r[0] for r in results) for mode, results in runs.items()},
        unit_s={mode: min(r[1] for r in results) for mode, results in runs.items()},
    )


def decode_table(result: DecodeResult) -> Table:
    table = Table(["decode path", "ms / token", "of which unit decoder", "tokens / s", "vs text only"])
    for mode, seconds in result.per_token_s.items():
        table.add(
            MODE_NAMES[mode],
            fmt(seconds * 1e3, 1),
            fmt(result.unit_s[mode] * 1e3, 1),
            fmt(1.0 / seconds, 1),
            f"{result.ratio(mode):.2f}x",
        )
    return table


def model_description(model: OmniModel, threads: int) -> str:
    dims = model.dims
    return (
        f"Llama {dims.llm.n_layers}x{dims.llm.hidden_size} (GQA {dims.llm.n_heads}/{dims.llm.n_kv_heads}, "
        f"vocab {dims.llm.vocab_size}, {millions(dims.llm.n_params)} params), unit decoder "
        f"({dims.unit_decoder.n_layers},{dims.unit_decoder.dim},{dims.unit_decoder.n_heads},"
        f"{dims.unit_decoder.ffn_dim}) λ={dims.unit_decoder.upsample_factor} "
        f"({millions(dims.unit_decoder.n_params)} params); {model.plan.quant} on {model.device}, "
        f"{threads} CPU thread(s)"
    )
