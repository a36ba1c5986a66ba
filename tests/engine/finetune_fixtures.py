"""Speech and datasets for the fine-tuning tests (espeak-ng questions, typed pairs, manifests)."""

from __future__ import annotations

import json
import random
import subprocess
from pathlib import Path

import numpy as np
import soundfile as sf

SPOKEN = (
    ("capital", "What is the capital of France?", "Paris is the capital."),
    ("egg", "How do I boil an egg?", "Boil it for seven minutes."),
    ("joke", "Tell me a joke about computers.", "It had a virus!"),
    ("book", "Can you recommend a good book?", "Read Pride and Prejudice."),
    ("name", "What is your name?", "My name is Omni."),
    ("spider", "How many legs does a spider have?", "A spider has eight legs."),
)
TYPED = (
    ("What is 2 plus 2?", "Two plus two is four."),
    ("Thank you very much.", "You're welcome!"),
    ("Which river flows through Paris?", "The river Seine."),
    ("Name a classic novel.", "Pride and Prejudice."),
    ("What do computers get?", "Computers get a virus."),
    ("Count to three.", "One, two, three."),
)
UNITS_PER_ANSWER = 6
UNIT_VOCAB = 1000


def espeak(text: str, path: Path, *, speed_wpm: int = 160) -> Path:
    """``espeak-ng`` speech as a 22.05 kHz mono WAV (the tests' "unusual rate": resampled on load)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(["espeak-ng", "-v", "en-us", "-s", str(speed_wpm), "-w", str(path), text], check=True,
                   capture_output=True, timeout=60)  # fmt: skip
    return path


def random_units(seed: int, n: int = UNITS_PER_ANSWER) -> list[int]:
    rng = random.Random(seed)
    units: list[int] = []
    while len(units) < n:
        u = rng.randrange(UNIT_VOCAB)
        if not units or units[-1] != u:
            units.append(u)
    return units


def write_spoken_pairs(folder: Path) -> Path:
    """NAME.wav + NAME.txt per spoken question (the wizard's layout)."""
    for name, question, answer in SPOKEN:
        espeak(question, folder / f"{name}.wav")
        (folder / f"{name}.txt").write_text(answer + "\n", encoding="utf-8")
    return folder


def write_units_manifest(path: Path) -> Path:
    """The typed pairs as an InstructS2S-style manifest (no speech; target units given)."""
    rows = [
        {
            "id": f"typed{i}",
            "conversations": [{"from": "human", "value": q}, {"from": "gpt", "value": a}],
            "tgt_units": random_units(i),
        }  # fmt: skip
        for i, (q, a) in enumerate(TYPED)
    ]
    path.write_text(json.dumps(rows, indent=1), encoding="utf-8")
    return path


def write_mixed_dataset(folder: Path) -> Path:
    write_spoken_pairs(folder)
    write_units_manifest(folder / "manifest.json")
    return folder


def write_wav(path: Path, audio: np.ndarray, rate: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), audio, rate)
    return path
