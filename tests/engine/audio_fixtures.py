"""Helpers for audio tests: signals, espeak-ng speech, WAV files, correlation.

The fake sound device itself is :mod:`engine.audio.fake_device` (the benchmark uses it too).
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import soundfile as sf

from tests.pulse import require_tools

QUESTION_TEXT = "What is the capital of France?"


def sine(freq_hz: float, seconds: float, rate_hz: int, amplitude: float = 1.0, channels: int = 0) -> np.ndarray:
    """float32 (n,) or, with ``channels``, the same sine on every channel (n, channels)."""
    t = np.arange(round(seconds * rate_hz)) / rate_hz
    wave = (amplitude * np.sin(2 * np.pi * freq_hz * t)).astype(np.float32)
    return np.repeat(wave[:, None], channels, axis=1) if channels else wave


def dominant_frequency_hz(audio: np.ndarray, rate_hz: int) -> float:
    spectrum = np.abs(np.fft.rfft(audio * np.hanning(audio.shape[0])))
    return float(np.fft.rfftfreq(audio.shape[0], 1.0 / rate_hz)[np.argmax(spectrum)])


def max_step(audio: np.ndarray) -> float:
    """Largest jump between consecutive samples: a click shows up as a big one."""
    return float(np.max(np.abs(np.diff(audio)))) if audio.shape[0] > 1 else 0.0


def espeak_wav(text: str, folder: Path, name: str = "q") -> Path:
    """espeak-ng speech converted with sox to 16 kHz mono 16-bit WAV (the recipe's format)."""
    require_tools("espeak-ng", "sox")
    raw = folder / f"{name}-raw.wav"
    out = folder / f"{name}.wav"
    subprocess.run(["espeak-ng", "-v", "en-us", "-s", "160", "-w", str(raw), text], check=True, timeout=60)
    subprocess.run(["sox", str(raw), "-r", "16000", "-c", "1", "-b", "16", str(out)], check=True, timeout=60)
    return out


def read_wav(path: Path) -> tuple[np.ndarray, int]:
    data, rate = sf.read(str(path), dtype="float32", always_2d=True)
    return data.mean(axis=1), int(rate)
