"""Reading and writing audio files for the CLI, tests and the transcript."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile as sf

from engine.audio.resample import MODEL_SAMPLE_RATE_HZ, resample, to_mono
from engine.errors import BadInput


def load_audio(path: str | Path, target_hz: int = MODEL_SAMPLE_RATE_HZ) -> np.ndarray:
    """Read any soundfile-supported file -> float32 mono (n_samples,) at ``target_hz`` in [-1, 1]."""
    path = Path(path)
    if not path.is_file():
        raise BadInput("Audio file not found.", path=path, fix="Check the path and try again.")
    try:
        data, rate = sf.read(str(path), dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, ValueError) as exc:
        raise BadInput(
            f"Cannot read audio file: {exc}", path=path, fix="Use a WAV, FLAC or OGG file."
        ) from exc
    if data.shape[0] == 0:
        raise BadInput("The audio file is empty.", path=path, fix="Record some speech first.")
    return resample(to_mono(data), int(rate), target_hz)


def save_audio(path: str | Path, audio: np.ndarray, rate_hz: int = MODEL_SAMPLE_RATE_HZ) -> Path:
    """Write float32 mono audio as 16-bit PCM WAV (parent folders are created)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), np.clip(np.asarray(audio, dtype=np.float32), -1.0, 1.0), rate_hz, subtype="PCM_16")
    return path
