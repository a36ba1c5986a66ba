"""Measuring streaming quality: streamed vs one-pass synthesis (used by tests and the benchmark)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from engine.vocoder.runtime import VocoderRuntime, validate_units
from engine.vocoder.streaming import StreamingVocoder

# Reported when the two signals are identical (no error energy at all).
EXACT_SNR_DB = math.inf


@dataclass(frozen=True, slots=True)
class StreamComparison:
    """Streamed vs whole synthesis of one unit sequence."""

    snr_db: float
    max_abs_diff: float
    length_samples: int
    reference_length_samples: int
    n_chunks: int

    @property
    def same_length(self) -> bool:
        return self.length_samples == self.reference_length_samples


def snr_db(reference: np.ndarray, test: np.ndarray) -> float:
    """10 log10(|ref|^2 / |ref - test|^2) over the common length (a length change counts as error)."""
    n = min(reference.size, test.size)
    ref = reference.astype(np.float64)
    err = np.zeros(max(reference.size, test.size), dtype=np.float64)
    err[:n] = ref[:n] - test[:n].astype(np.float64)
    err[n : reference.size] = ref[n:]
    err[n : test.size] = test[n:]
    noise = float(np.sum(err**2))
    signal = float(np.sum(ref**2))
    if noise == 0.0:
        return EXACT_SNR_DB
    return 10.0 * math.log10(max(signal, 1e-30) / noise)


def reference_chunked_synthesis(runtime: VocoderRuntime, units: Sequence[int], chunk_units: int) -> np.ndarray:
    """LLaMA-Omni's Gradio behaviour: vocode every ``chunk_units`` units alone and concatenate."""
    array = validate_units(units, runtime.config.num_embeddings)
    pieces = [runtime.synthesize(array[i : i + chunk_units]) for i in range(0, array.size, chunk_units)]
    return np.concatenate(pieces) if pieces else np.zeros(0, dtype=np.float32)


def streamed_synthesis(
    stream: StreamingVocoder, units: Sequence[int], push_sizes: Sequence[int] = (1,)
) -> tuple[np.ndarray, int]:
    """Feed ``units`` in pushes of ``push_sizes`` (cycled), flush; return (wav, number of chunks)."""
    stream.reset()
    chunks: list[np.ndarray] = []
    position, step = 0, 0
    while position < len(units):
        size = max(1, push_sizes[step % len(push_sizes)])
        chunks += stream.push(units[position : position + size])
        position += size
        step += 1
    chunks += stream.flush()
    wav = np.concatenate(chunks) if chunks else np.zeros(0, dtype=np.float32)
    return wav, len(chunks)


def compare_stream(
    runtime: VocoderRuntime,
    units: Sequence[int],
    *,
    chunk_units: int,
    lookahead_units: int,
    whole: np.ndarray | None = None,
    push_sizes: Sequence[int] = (1,),
) -> StreamComparison:
    """Stream ``units`` with the given settings and compare with one-pass synthesis."""
    reference = runtime.synthesize(units) if whole is None else whole
    stream = StreamingVocoder(runtime, chunk_units=chunk_units, lookahead_units=lookahead_units)
    wav, n_chunks = streamed_synthesis(stream, units, push_sizes)
    n = min(wav.size, reference.size)
    max_diff = float(np.max(np.abs(wav[:n] - reference[:n]))) if n else 0.0
    return StreamComparison(snr_db(reference, wav), max_diff, wav.size, reference.size, n_chunks)
