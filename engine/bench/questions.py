"""Spoken questions for the latency runs: espeak-ng speech at 16 kHz, or a vowel if espeak-ng is missing."""

from __future__ import annotations

import logging
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

from engine.audio.resample import MODEL_SAMPLE_RATE_HZ, resample, to_mono

logger = logging.getLogger(__name__)

QUESTIONS = (  # the shortest first: --quick uses the first two
    "What is the capital of France?",
    "Why is the sky blue?",
    "How do I make a good cup of green tea?",
    "Tell me a fun fact about the moon.",
    "Can you recommend a book for a long flight?",
)
ESPEAK = "espeak-ng"
ESPEAK_VOICE = "en-us"
ESPEAK_WORDS_PER_MIN = 160
ESPEAK_TIMEOUT_S = 60
VOWEL_S = 1.6
VOWEL_F0_HZ = (120.0, 140.0, 160.0, 180.0, 200.0)
VOWEL_HARMONICS = 8
VOWEL_GAIN = 0.2


@dataclass(frozen=True, slots=True)
class Question:
    text: str
    audio: np.ndarray  # float32 (n_samples,) at 16 kHz
    source: str  # "espeak-ng" | "synthetic vowel"

    @property
    def seconds(self) -> float:
        return self.audio.size / MODEL_SAMPLE_RATE_HZ


def espeak_available() -> bool:
    return shutil.which(ESPEAK) is not None


def espeak_question(text: str, folder: Path, index: int) -> Question:
    """``espeak-ng -v en-us -s 160 -w`` (22.05 kHz WAV) resampled to 16 kHz with engine.audio.resample."""
    wav = Path(folder) / f"question-{index}.wav"
    wav.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [ESPEAK, "-v", ESPEAK_VOICE, "-s", str(ESPEAK_WORDS_PER_MIN), "-w", str(wav), text],
        check=True,
        capture_output=True,
        timeout=ESPEAK_TIMEOUT_S,
    )
    data, rate = sf.read(str(wav), dtype="float32", always_2d=True)
    audio = resample(to_mono(data), int(rate), MODEL_SAMPLE_RATE_HZ)
    return Question(text, audio, ESPEAK)


def vowel_question(text: str, index: int) -> Question:
    """A vowel-like signal (harmonics of f0 under a raised-cosine envelope) standing in for speech."""
    t = np.arange(round(VOWEL_S * MODEL_SAMPLE_RATE_HZ)) / MODEL_SAMPLE_RATE_HZ
    f0 = VOWEL_F0_HZ[index % len(VOWEL_F0_HZ)]
    wave = sum(np.sin(2 * np.pi * f0 * k * t) / k for k in range(1, VOWEL_HARMONICS))
    envelope = 0.5 * (1 - np.cos(2 * np.pi * t / t[-1]))
    return Question(text, (VOWEL_GAIN * envelope * wave).astype(np.float32), "synthetic vowel")


def make_questions(folder: Path, count: int) -> tuple[list[Question], str]:
    """The first ``count`` questions and a note saying how they were made."""
    texts = [QUESTIONS[i % len(QUESTIONS)] for i in range(count)]
    if espeak_available():
        questions = [espeak_question(text, folder, i) for i, text in enumerate(texts)]
        seconds = ", ".join(f"{q.seconds:.1f}" for q in questions)
        note = (
            f"{count} espeak-ng questions (`{ESPEAK} -v {ESPEAK_VOICE} -s {ESPEAK_WORDS_PER_MIN} -w`, resampled to "
            f"16 kHz; {seconds} s): " + "; ".join(f'"{t}"' for t in texts)
        )
        return questions, note
    logger.warning("espeak-ng is not installed: the questions are a synthetic vowel signal")
    questions = [vowel_question(text, i) for i, text in enumerate(texts)]
    note = (
        f"espeak-ng is not installed: {count} synthetic vowel signals of {VOWEL_S} s stand in for speech "
        "(speech detection on energy alone)"
    )
    return questions, note
