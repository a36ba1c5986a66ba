"""Band-limited resampling (soxr) and channel mixing used everywhere audio changes rate."""

from __future__ import annotations

import numpy as np
import soxr

MODEL_SAMPLE_RATE_HZ = 16_000


def to_mono(audio: np.ndarray) -> np.ndarray:
    """audio: (n_samples,) or (n_samples, n_channels) -> float32 (n_samples,), channels averaged."""
    audio = np.asarray(audio)
    if audio.ndim == 2:
        audio = audio.mean(axis=1)
    elif audio.ndim != 1:
        raise ValueError(f"audio must be 1-D or (samples, channels), got shape {audio.shape}")
    return audio.astype(np.float32, copy=False)


def resample(audio: np.ndarray, from_hz: int, to_hz: int, quality: str = "HQ") -> np.ndarray:
    """Resample float32 mono audio (n_samples,) from ``from_hz`` to ``to_hz`` with soxr."""
    audio = np.asarray(audio, dtype=np.float32)
    if from_hz == to_hz or audio.size == 0:
        return audio
    out = soxr.resample(audio, from_hz, to_hz, quality=quality)
    return np.asarray(out, dtype=np.float32)
