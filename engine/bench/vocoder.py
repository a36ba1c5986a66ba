"""Vocoder speed (real-time factor, PyTorch vs onnxruntime) and streaming quality (SNR vs one pass).

RTF = compute seconds / audio seconds (below 1 is faster than real time), best of a few runs.
Streaming runs push one unit at a time through ``StreamingVocoder``, so they include the context
every chunk recomputes; "first chunk" is the compute time of the push that returned the first
audio (the vocoder's share of the response latency). Used by ``python -m engine bench`` and by
``bench/bench_vocoder.py``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial

import numpy as np

from engine.bench.report import Table, fmt
from engine.events import ChunkingOptions
from engine.vocoder.quality import reference_chunked_synthesis, snr_db
from engine.vocoder.runtime import VocoderRuntime
from engine.vocoder.streaming import StreamingVocoder


@dataclass(frozen=True, slots=True)
class StreamRun:
    wav: np.ndarray  # float32 (n_samples,)
    compute_s: float  # all pushes and the flush
    first_chunk_s: float  # the push that returned the first audio


def timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def random_units(runtime: VocoderRuntime, n_units: int, seed: int) -> list[int]:
    return np.random.default_rng(seed).integers(0, runtime.config.num_embeddings, n_units).tolist()


def stream_run(runtime: VocoderRuntime, units: Sequence[int], chunking: ChunkingOptions) -> StreamRun:
    """Stream ``units`` one at a time with the engine's chunking (first chunk, then later chunks)."""
    stream = StreamingVocoder(runtime, chunk_units=chunking.first_chunk_units, lookahead_units=chunking.lookahead_units)
    chunks: list[np.ndarray] = []
    total, first = 0.0, float("nan")
    for unit in [*units, None]:
        start = time.perf_counter()
        got = stream.flush() if unit is None else stream.push([unit])
        elapsed = time.perf_counter() - start
        total += elapsed
        if got and not chunks:
            first = elapsed
            stream.chunk_units = chunking.chunk_units
        chunks += got
    wav = np.concatenate(chunks) if chunks else np.zeros(0, dtype=np.float32)
    return StreamRun(wav, total, first)


def best_stream(runtime: VocoderRuntime, units: Sequence[int], chunking: ChunkingOptions, repeats: int) -> StreamRun:
    runs = [stream_run(runtime, units, chunking) for _ in range(max(1, repeats))]
    return StreamRun(runs[0].wav, min(r.compute_s for r in runs), min(r.first_chunk_s for r in runs))


def snr_cell(value: float, same_length: bool) -> str:
    """dB with one decimal, "inf" for identical signals, * when the lengths differ."""
    text = "inf" if value == float("inf") else f"{value:.1f}"
    return text if same_length else f"{text}*"


@dataclass(slots=True)
class VocoderSpeed:
    audio_s: float
    one_pass_s: dict[str, float] = field(default_factory=dict)  # runtime name -> best seconds
    streams: dict[tuple[str, str], StreamRun] = field(default_factory=dict)  # (runtime, row label) -> run


def measure_speed(
    runtimes: dict[str, VocoderRuntime],
    units: Sequence[int],
    rows: Sequence[tuple[str, ChunkingOptions]],
    *,
    one_pass_repeats: int,
    stream_repeats: int,
) -> VocoderSpeed:
    """One-pass and streaming compute of ``units`` on every runtime; rows are (label, chunking)."""
    first = next(iter(runtimes.values()))
    audio_s = first.synthesize(units).size / first.config.sampling_rate
    speed = VocoderSpeed(audio_s)
    for name, runtime in runtimes.items():
        speed.one_pass_s[name] = min(timed(partial(runtime.synthesize, units)) for _ in range(one_pass_repeats))
    for label, chunking in rows:
        for name, runtime in runtimes.items():
            speed.streams[(name, label)] = best_stream(runtime, units, chunking, stream_repeats)
    return speed


def rtf_table(speed: VocoderSpeed, names: Sequence[str], one_pass_label: str, rows: Sequence[str]) -> Table:
    table = Table(["mode", *(f"{n} RTF" for n in names), *(f"{n} first chunk ms" for n in names)])
    table.add(one_pass_label, *(f"{speed.one_pass_s[n] / speed.audio_s:.3f}" for n in names), *("-" for _ in names))
    for label in rows:
        runs = [speed.streams[(n, label)] for n in names]
        table.add(
            label,
            *(f"{r.compute_s / speed.audio_s:.3f}" for r in runs),
            *(fmt(r.first_chunk_s * 1000.0) for r in runs),
        )
    return table


def snr_table(
    runtime: VocoderRuntime,
    units: Sequence[int],
    whole: np.ndarray,
    rows: Sequence[tuple[str, ChunkingOptions]],
    lookaheads: Sequence[int],
    *,
    row_header: str = "Ω (units)",
    done: Callable[[str, int], StreamRun | None] = lambda label, lookahead: None,
) -> Table:
    """SNR of streamed vs one-pass synthesis per chunking and look-ahead.

    The "independent chunks" column is the reference's Gradio behaviour (fixed Ω only; "-" for an
    adaptive row). ``done(label, lookahead)`` may return a stream already run, to avoid re-running it.
    """
    table = Table([row_header, "reference: independent chunks", *(f"look-ahead {la}" for la in lookaheads)])
    for label, chunking in rows:
        if chunking.first_chunk_units == chunking.chunk_units:
            naive = reference_chunked_synthesis(runtime, units, chunking.chunk_units)
            reference = snr_cell(snr_db(whole, naive), naive.size == whole.size)
        else:
            reference = "-"
        cells = [label, reference]
        for lookahead in lookaheads:
            run = done(label, lookahead)
            if run is None:
                options = ChunkingOptions(chunking.first_chunk_units, chunking.chunk_units, lookahead)
                run = stream_run(runtime, units, options)
            cells.append(snr_cell(snr_db(whole, run.wav), run.wav.size == whole.size))
        table.add(*cells)
    return table
