"""The wizard's data, saved as the user makes it, so closing the wizard loses nothing.

One draft at a time, in ``<data dir>/finetune-draft/``. Its ``data/`` folder is what ``--data``
points at: the typed pairs in ``typed.jsonl`` (the training reads it as is), the questions the
user recorded under ``recorded/`` (NAME.wav, 16 kHz 16-bit mono, + NAME.txt with the answer: the
"pairs in a folder" layout) and copies of the files or folders the user added under ``added/``.
The wizard's own notes (the run to resume) sit beside ``data/``, where the training does not look.
Qt-free.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import wave
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from engine.paths import data_dir

DRAFT_DIR_NAME = "finetune-draft"
DATA_DIR = "data"
TYPED_FILE = "typed.jsonl"
ADDED_DIR = "added"
RECORDED_DIR = "recorded"
RECORDING_RATE_HZ = 16_000
INT16_MAX = 32767
NAME_HASH_CHARS = 10
IGNORED_COPY = shutil.ignore_patterns("adapters", "*.training", "*.partial", ".git", "__pycache__")


@dataclass(frozen=True, slots=True)
class Pair:
    question: str
    answer: str


@dataclass(frozen=True, slots=True)
class Recording:
    wav: Path  # the spoken question
    answer: str  # NAME.txt
    question: str  # the typed question it was recorded for (NAME.question, for the list)


def recording_name(question: str) -> str:
    """The file name of a question's recording: the same question is re-recorded in place."""
    return "q-" + hashlib.sha1(question.strip().encode("utf-8")).hexdigest()[:NAME_HASH_CHARS]


class Draft:
    def __init__(self, folder: Path | None = None) -> None:
        self.folder = folder or data_dir() / DRAFT_DIR_NAME

    @property
    def data(self) -> Path:
        return self.folder / DATA_DIR

    @property
    def typed_file(self) -> Path:
        return self.data / TYPED_FILE

    @property
    def added_dir(self) -> Path:
        return self.data / ADDED_DIR

    def pairs(self) -> list[Pair]:
        if not self.typed_file.exists():
            return []
        pairs = []
        for line in self.typed_file.read_text(encoding="utf-8").splitlines():
            try:
                row = json.loads(line)
            except ValueError:
                continue
            if isinstance(row, dict):
                pairs.append(Pair(str(row.get("question", "")), str(row.get("answer", ""))))
        return pairs

    def save_pairs(self, pairs: list[Pair]) -> None:
        """Rows with both sides empty are left out; half-filled ones stay (the check reports them)."""
        self.data.mkdir(parents=True, exist_ok=True)
        rows = [json.dumps({"question": p.question, "answer": p.answer}) for p in pairs if p.question or p.answer]
        tmp = self.typed_file.with_name(TYPED_FILE + ".tmp")
        tmp.write_text("".join(r + "\n" for r in rows), encoding="utf-8")
        tmp.replace(self.typed_file)

    @property
    def recorded_dir(self) -> Path:
        return self.data / RECORDED_DIR

    def save_recording(self, question: str, answer: str, pcm: np.ndarray) -> Recording:
        """``pcm``: float32 (n_samples,) at 16 kHz. Written at once (a later re-recording replaces it)."""
        self.recorded_dir.mkdir(parents=True, exist_ok=True)
        name = recording_name(question)
        wav = self.recorded_dir / f"{name}.wav"
        samples = (np.clip(pcm, -1.0, 1.0) * INT16_MAX).astype("<i2")
        tmp = wav.with_name(wav.name + ".tmp")
        with wave.open(str(tmp), "wb") as out:
            out.setnchannels(1)
            out.setsampwidth(2)
            out.setframerate(RECORDING_RATE_HZ)
            out.writeframes(samples.tobytes())
        tmp.replace(wav)
        (self.recorded_dir / f"{name}.txt").write_text(answer + "\n", encoding="utf-8")
        # Not a training file (not .txt/.wav/.json/.csv): the question's words, for the list.
        (self.recorded_dir / f"{name}.question").write_text(question, encoding="utf-8")
        return Recording(wav, answer, question)

    def recordings(self) -> list[Recording]:
        if not self.recorded_dir.is_dir():
            return []
        found = []
        for wav in sorted(self.recorded_dir.glob("*.wav")):
            answer = wav.with_suffix(".txt")
            question = wav.with_suffix(".question")
            found.append(
                Recording(
                    wav,
                    answer.read_text(encoding="utf-8").strip() if answer.exists() else "",
                    question.read_text(encoding="utf-8") if question.exists() else wav.stem,
                )
            )
        return found

    def remove_recording(self, recording: Recording) -> None:
        for suffix in (".wav", ".txt", ".question"):
            recording.wav.with_suffix(suffix).unlink(missing_ok=True)

    def added(self) -> list[Path]:
        return sorted(self.added_dir.iterdir()) if self.added_dir.is_dir() else []

    def add_source(self, source: Path) -> Path:
        """Copy a JSONL/CSV/JSON file or a folder of pairs into the draft; the copy's path."""
        self.added_dir.mkdir(parents=True, exist_ok=True)
        target = self.added_dir / source.name
        n = 1
        while target.exists():
            n += 1
            target = self.added_dir / f"{source.stem}-{n}{source.suffix}"
        if source.is_dir():
            shutil.copytree(source, target, ignore=IGNORED_COPY)
        else:
            shutil.copy2(source, target)
        return target

    def remove_source(self, copy: Path) -> None:
        if copy.is_dir():
            shutil.rmtree(copy)
        else:
            copy.unlink(missing_ok=True)

    def is_empty(self) -> bool:
        return not self.pairs() and not self.added() and not self.recordings()

    def clear(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)


def read_recording(wav: Path) -> np.ndarray:
    """A recording written by :meth:`Draft.save_recording`: float32 (n_samples,) at 16 kHz."""
    with wave.open(str(wav), "rb") as source:
        frames = source.readframes(source.getnframes())
    return np.frombuffer(frames, dtype="<i2").astype(np.float32) / INT16_MAX
