"""The wizard's data, saved as the user makes it, so closing the wizard loses nothing.

One draft at a time, in ``<data dir>/finetune-draft/``. Its ``data/`` folder is what ``--data``
points at: the typed pairs in ``typed.jsonl`` (the training reads it as is) and copies of the files
or folders the user added under ``added/``. The wizard's own notes (the run to resume) sit beside
``data/``, where the training does not look. Qt-free.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

from engine.paths import data_dir

DRAFT_DIR_NAME = "finetune-draft"
DATA_DIR = "data"
TYPED_FILE = "typed.jsonl"
ADDED_DIR = "added"
IGNORED_COPY = shutil.ignore_patterns("adapters", "*.training", "*.partial", ".git", "__pycache__")


@dataclass(frozen=True, slots=True)
class Pair:
    question: str
    answer: str


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
        return not self.pairs() and not self.added()

    def clear(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)
