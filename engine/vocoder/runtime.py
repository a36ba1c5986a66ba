"""Vocoder backends with one interface: predict durations, generate a waveform, synthesise.

A ``VocoderRuntime`` is created and owned by the engine thread (``load_vocoder_runtime`` in
``api.py``); the streaming layer only borrows it. Both backends (``runtime_torch``,
``runtime_onnx``) take and return numpy arrays, so the streaming code does not care which one runs.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections.abc import Sequence
from types import TracebackType

import numpy as np

from engine.errors import BadInput, NotEnoughMemory
from engine.gpu import error_summary
from engine.vocoder.config import VocoderConfig
from engine.vocoder.receptive import generator_context_frames

logger = logging.getLogger(__name__)

DEVICES = ("auto", "cpu", "cuda")
# Warm-up input: a typical streaming window (two contexts around a few units of frames).
_WARMUP_EXTRA_FRAMES = 24
_WARMUP_UNITS = 16


def onnxruntime_available() -> bool:
    """Whether onnxruntime imports here (it is optional: without it the vocoder and VAD use torch)."""
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return False
    return True


def validate_units(units: Sequence[int] | np.ndarray, num_embeddings: int) -> np.ndarray:
    """Any sequence of unit ids -> int64 (n_units,); BadInput if not integers in [0, num_embeddings)."""
    try:
        array = np.asarray(units)
    except (TypeError, ValueError) as exc:
        raise BadInput(f"Units must be a sequence of integers: {exc}") from exc
    if array.size == 0:
        return np.zeros(0, dtype=np.int64)
    if array.ndim != 1 or not np.issubdtype(array.dtype, np.integer):
        raise BadInput(
            f"Units must be a flat sequence of integers, got dtype {array.dtype} and shape {array.shape}.",
            fix="Pass unit ids such as [12, 7, 993].",
        )
    low, high = int(array.min()), int(array.max())
    if low < 0 or high >= num_embeddings:
        bad = low if low < 0 else high
        raise BadInput(
            f"Unit {bad} is out of range: this vocoder knows units 0..{num_embeddings - 1}.",
            fix="Check that the units come from the matching speech generator (the CTC blank is not a unit).",
        )
    return array.astype(np.int64, copy=False)


def out_of_memory(exc: BaseException, device: str) -> NotEnoughMemory:
    """The error for a vocoder run or session that could not allocate on ``device``."""
    where = "GPU memory" if device == "cuda" else "memory"
    return NotEnoughMemory(
        f"The vocoder ran out of {where} ({error_summary(exc)}).",
        fix="Close other programs that use the GPU, or choose a smaller precision (nf4) or the CPU.",
    )


def check_device(device: str) -> str:
    if device not in DEVICES:
        raise ValueError(f"device must be one of {DEVICES}, got {device!r}")
    return device


class VocoderRuntime(ABC):
    """One loaded vocoder, used from one thread at a time (the engine thread that owns it)."""

    backend: str = ""

    def __init__(self, config: VocoderConfig, device: str, providers: Sequence[str]) -> None:
        self.config = config
        self.device = device
        self.providers: tuple[str, ...] = tuple(providers)

    @property
    def sample_rate_hz(self) -> int:
        return self.config.sampling_rate

    @property
    def hop_samples(self) -> int:
        return self.config.hop_samples

    @abstractmethod
    def predict_durations(self, units: np.ndarray) -> np.ndarray:
        """units: int64 (T,), T >= 1, already validated -> frames per unit: int64 (T,), each >= 1."""

    @abstractmethod
    def generate(self, frame_units: np.ndarray) -> np.ndarray:
        """frame_units: int64 (F,), F >= 1 (units repeated by duration) -> wav float32 (F * hop,)."""

    def synthesize(self, units: Sequence[int] | np.ndarray) -> np.ndarray:
        """Whole-utterance synthesis: units (n_units,) -> wav float32 (sum(durations) * hop,) at 16 kHz."""
        array = validate_units(units, self.config.num_embeddings)
        if array.size == 0:
            return np.zeros(0, dtype=np.float32)
        durations = self.predict_durations(array)
        return self.generate(np.repeat(array, durations))

    def warm_up(self) -> None:
        """Run once at load so the first real chunk does not pay for lazy initialisation."""
        rng = np.random.default_rng(0)
        units = rng.integers(0, self.config.num_embeddings, _WARMUP_UNITS, dtype=np.int64)
        self.predict_durations(units)
        frames = 2 * generator_context_frames(self.config) + _WARMUP_EXTRA_FRAMES
        self.generate(rng.integers(0, self.config.num_embeddings, frames, dtype=np.int64))

    @abstractmethod
    def close(self) -> None:
        """Release sessions / device memory. The runtime is unusable afterwards."""

    def __enter__(self) -> VocoderRuntime:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}(device={self.device!r}, providers={list(self.providers)})"
