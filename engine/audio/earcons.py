"""Earcons: short, soft tones that confirm "listening" and "got it" without looking at the screen."""

from __future__ import annotations

import numpy as np

from engine.audio.resample import MODEL_SAMPLE_RATE_HZ

EARCON_S = 0.09
EARCON_GAIN = 0.18  # about -15 dBFS: audible, never startling
LISTEN_HZ = (660.0, 880.0)  # rising: "I'm listening"
DONE_HZ = (880.0, 660.0)  # falling: "got it"


def _glide(start_hz: float, end_hz: float, seconds: float = EARCON_S) -> np.ndarray:
    """A sine gliding from start_hz to end_hz under a Hann envelope: float32 (n,) at 16 kHz, no clicks."""
    n = round(seconds * MODEL_SAMPLE_RATE_HZ)
    freq = np.linspace(start_hz, end_hz, n)
    phase = 2 * np.pi * np.cumsum(freq) / MODEL_SAMPLE_RATE_HZ
    return (EARCON_GAIN * np.hanning(n) * np.sin(phase)).astype(np.float32)


def listening_earcon() -> np.ndarray:
    return _glide(*LISTEN_HZ)


def done_earcon() -> np.ndarray:
    return _glide(*DONE_HZ)
