"""Fine-tuning data: find the pairs, check every one, split off a held-out set. Never a crash.

Accepted, mixed freely (a folder is searched recursively; a single file works too):

- **pairs in a folder** (what the wizard records): question speech ``NAME.wav`` (any rate, mono or
  stereo; also .flac/.ogg) + answer text ``NAME.txt``, optionally answer speech ``NAME.answer.wav``;
- **typed pairs**: ``*.jsonl`` / ``*.json`` of ``{"question": ..., "answer": ...}`` or a ``*.csv``
  with ``question`` and ``answer`` columns;
- **InstructS2S-style manifests** (``*.json`` list or ``*.jsonl``): ``{"id", "speech": path,
  "conversations": [{"from": "human", "value": "<speech>\\n..."}, {"from": "gpt", "value": answer}],
  "tgt_units": [..] | "units": "12 7 .."}``, plus an optional answer-speech path
  (``tgt_speech`` / ``answer_speech``). Paths are relative to the manifest.

``load_dataset`` returns a ``DataReport``: the usable items, every problem found (unreadable,
empty, silent or over-30-s audio, missing/empty/over-long answers, duplicates and conflicting
answers, resampled rates, bad units), and a held-out split of about 10 % (at least one item when
there are two or more) chosen by a hash of each item's id, so it is the same on every run and an
added pair does not reshuffle the others.
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import math
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np
import soundfile as sf

from engine.audio.features import CHUNK_S
from engine.audio.resample import MODEL_SAMPLE_RATE_HZ, to_mono
from engine.audio.vad import MIN_SPEECH_S, SpeechDetector
from engine.model.prompt import SPEECH_TOKEN

logger = logging.getLogger(__name__)

AUDIO_SUFFIXES = (".wav", ".flac", ".ogg")
ANSWER_AUDIO_MARK = ".answer"  # NAME.answer.wav
ANSWER_SUFFIX = ".txt"
MAX_QUESTION_S = float(CHUNK_S)  # the encoder hears 30 s; longer questions would train on a cut-off
MAX_ANSWER_SPEECH_S = 60.0
HELDOUT_FRACTION = 0.1
DEFAULT_MAX_ANSWER_TOKENS = 512  # the app's default answer length (EngineOptions.max_new_tokens)
UNIT_FIELDS = ("tgt_units", "units", "unit")
ANSWER_SPEECH_FIELDS = ("tgt_speech", "answer_speech", "tgt_audio")
HUMAN_ROLES = ("human", "user")
ASSISTANT_ROLES = ("gpt", "assistant")
MANIFEST_SUFFIXES = (".json", ".jsonl", ".csv")
# Folders that never hold training data (our own output next to the data).
SKIPPED_DIRS = frozenset({"adapters", ".git", "__pycache__"})

Severity = Literal["error", "warning", "note"]


@dataclass(frozen=True, slots=True)
class DataItem:
    """One question/answer pair. Exactly one of ``question_text`` / ``question_audio`` is set."""

    id: str  # stable: relative path without extension, or FILE#row
    source: str  # "pairs" | "typed" | "manifest"
    answer: str
    question_text: str | None = None
    question_audio: Path | None = None
    answer_audio: Path | None = None
    units: tuple[int, ...] | None = None  # target units given by a manifest

    @property
    def spoken(self) -> bool:
        return self.question_audio is not None

    def key(self) -> str:
        """What makes two items the same question (text, or the audio file's bytes)."""
        if self.question_audio is not None:
            return "audio:" + _file_sha(self.question_audio)
        return "text:" + " ".join((self.question_text or "").lower().split())


@dataclass(frozen=True, slots=True)
class Problem:
    item: str  # item id or file
    severity: Severity  # error: the item is skipped; warning: kept, but look; note: informational
    code: str
    message: str


@dataclass(frozen=True, slots=True)
class AudioInfo:
    duration_s: float
    rate_hz: int
    channels: int
    speech_s: float  # seconds of windows above the speech energy floor


@dataclass(frozen=True, slots=True)
class DataReport:
    source: Path
    items: tuple[DataItem, ...]  # usable, in a stable order
    heldout_ids: frozenset[str]
    problems: tuple[Problem, ...]
    n_found: int
    token_limit_checked: bool
    max_answer_tokens: int

    @property
    def train_items(self) -> tuple[DataItem, ...]:
        return tuple(i for i in self.items if i.id not in self.heldout_ids)

    @property
    def heldout_items(self) -> tuple[DataItem, ...]:
        return tuple(i for i in self.items if i.id in self.heldout_ids)

    @property
    def errors(self) -> tuple[Problem, ...]:
        return tuple(p for p in self.problems if p.severity == "error")

    @property
    def n_spoken(self) -> int:
        return sum(1 for i in self.items if i.spoken)

    @property
    def n_answer_speech(self) -> int:
        return sum(1 for i in self.items if i.answer_audio is not None or i.units is not None)

    def fingerprint(self) -> str:
        """Changes when any usable item or the split changes (a resume refuses other data)."""
        digest = hashlib.sha256()
        for item in self.items:
            digest.update(
                json.dumps(
                    [
                        item.id,
                        item.key(),
                        item.answer,
                        item.units,
                        item.id in self.heldout_ids,
                        _file_sha(item.answer_audio) if item.answer_audio else None,
                    ]
                ).encode()
            )
        return digest.hexdigest()

    def summary(self) -> dict[str, Any]:
        """For omnitalk_adapter.json and the CLI's JSON: counts, not contents."""
        return {
            "source": str(self.source),
            "found": self.n_found,
            "usable": len(self.items),
            "spoken": self.n_spoken,
            "typed": len(self.items) - self.n_spoken,
            "with_answer_speech": self.n_answer_speech,
            "train": len(self.train_items),
            "heldout": len(self.heldout_items),
            "skipped": len({p.item for p in self.errors}),
            "fingerprint": self.fingerprint(),
        }

    def as_dict(self) -> dict[str, Any]:
        return {
            **self.summary(),
            "token_limit_checked": self.token_limit_checked,
            "max_answer_tokens": self.max_answer_tokens,
            "heldout_ids": sorted(self.heldout_ids),
            "problems": [asdict(p) for p in self.problems],
        }

    def text(self) -> str:
        s = self.summary()
        lines = [
            f"Data: {self.source}",
            f"  {s['found']} pairs found, {s['usable']} usable ({s['spoken']} spoken, {s['typed']} typed, "
            f"{s['with_answer_speech']} with answer speech or units); {s['skipped']} skipped.",
            f"  Split: {s['train']} for training, {s['heldout']} held out for evaluation.",
        ]
        if not self.token_limit_checked:
            lines.append("  Answer lengths in tokens were not checked (no --model given).")
        for severity, title in (("error", "Skipped"), ("warning", "Check these"), ("note", "Notes")):
            found = [p for p in self.problems if p.severity == severity]
            if found:
                lines.append(f"  {title}:")
                lines += [f"    - {p.item}: {p.message}" for p in found]
        return "\n".join(lines)


def _file_sha(path: Path) -> str:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return "unreadable:" + str(path)


# ------------------------------------------------------------------------------------------ audio


def read_audio(path: Path) -> tuple[np.ndarray, int, int]:
    """-> (float32 mono samples, rate, channels). Raises ValueError/RuntimeError/OSError if unreadable."""
    data, rate = sf.read(str(path), dtype="float32", always_2d=True)
    return to_mono(data), int(rate), int(data.shape[1])


def audio_info(path: Path) -> AudioInfo:
    audio, rate, channels = read_audio(path)
    # The energy gate works on 16 kHz windows; its seconds scale with the rate ratio.
    speech_s = SpeechDetector.energy_speech_s(audio) * MODEL_SAMPLE_RATE_HZ / rate if audio.size else 0.0
    return AudioInfo(audio.shape[0] / rate if rate else 0.0, rate, channels, speech_s)


def _check_audio(item_id: str, path: Path, role: str, max_s: float) -> tuple[list[Problem], bool]:
    """Problems with one recording; the bool says whether it is usable."""
    if not path.is_file():
        return [Problem(item_id, "error", "missing_audio", f"{role} audio {path.name} does not exist.")], False
    try:
        info = audio_info(path)
    except (sf.LibsndfileError, RuntimeError, ValueError, OSError) as exc:
        return [
            Problem(item_id, "error", "unreadable_audio", f"{role} audio {path.name} cannot be read ({exc}).")
        ], False
    if info.duration_s == 0:
        return [Problem(item_id, "error", "empty_audio", f"{role} audio {path.name} is empty.")], False
    if info.speech_s < MIN_SPEECH_S:
        return [
            Problem(item_id, "error", "silent_audio", f"{role} audio {path.name} is silent or nearly silent.")
        ], False
    if info.duration_s > max_s:
        message = f"{role} audio {path.name} is {info.duration_s:.1f} s long; the limit is {max_s:.0f} s."
        return [Problem(item_id, "error", "too_long", message)], False
    problems = []
    if info.rate_hz != MODEL_SAMPLE_RATE_HZ:
        problems.append(
            Problem(item_id, "note", "resampled", f"{role} audio at {info.rate_hz} Hz, resampled to 16 kHz.")
        )
    if info.channels > 1:
        problems.append(
            Problem(item_id, "note", "mixed_to_mono", f"{role} audio has {info.channels} channels, mixed to mono.")
        )
    return problems, True


# ---------------------------------------------------------------------------------------- finding


def _parse_units(value: Any) -> tuple[int, ...] | None:
    if value is None:
        return None
    if isinstance(value, str):
        parts = value.replace("<", " ").replace(">", " ").split()
        return tuple(int(p) for p in parts)
    if isinstance(value, list):
        return tuple(int(v) for v in value)
    raise ValueError(f"units must be a list or a string, not {type(value).__name__}")


def _manifest_item(entry: dict[str, Any], item_id: str, base: Path) -> DataItem:
    """One InstructS2S-style or typed record -> DataItem. Raises ValueError when malformed."""
    if "conversations" in entry:
        turns = entry["conversations"]
        if not isinstance(turns, list):
            raise ValueError("'conversations' is not a list")
        human = next((t for t in turns if isinstance(t, dict) and t.get("from") in HUMAN_ROLES), None)
        gpt = next((t for t in turns if isinstance(t, dict) and t.get("from") in ASSISTANT_ROLES), None)
        if human is None:
            raise ValueError("no human turn in 'conversations'")
        answer = str(gpt.get("value") or gpt.get("text") or "") if gpt else ""
        speech = entry.get("speech") or human.get("speech")
        question_text = None
        if not speech:
            question_text = str(human.get("value") or human.get("text") or "").replace(SPEECH_TOKEN, "").strip()
        answer_speech = next((entry[f] for f in ANSWER_SPEECH_FIELDS if entry.get(f)), None)
        if answer_speech is None and gpt is not None:
            answer_speech = gpt.get("speech")
        units = next((entry[f] for f in UNIT_FIELDS if entry.get(f) is not None), None)
        if units is None and gpt is not None:
            units = next((gpt[f] for f in UNIT_FIELDS if gpt.get(f) is not None), None)
        return DataItem(
            id=str(entry.get("id") or item_id),
            source="manifest",
            answer=answer.strip(),
            question_text=question_text,
            question_audio=(base / str(speech)) if speech else None,
            answer_audio=(base / str(answer_speech)) if answer_speech else None,
            units=_parse_units(units),
        )
    if "question" in entry or "answer" in entry:
        return DataItem(
            id=str(entry.get("id") or item_id),
            source="typed",
            answer=str(entry.get("answer") or "").strip(),
            question_text=str(entry.get("question") or "").strip(),
        )
    raise ValueError("neither 'conversations' nor 'question'/'answer'")


def _records(path: Path) -> Iterator[tuple[str, dict[str, Any] | None, str | None]]:
    """(row id, record or None, why it is unreadable) per record of a JSON/JSONL/CSV file."""
    text = path.read_text(encoding="utf-8-sig")
    if path.suffix == ".csv":
        reader = csv.DictReader(text.splitlines())
        fields = {f.strip().lower() for f in reader.fieldnames or ()}
        if not {"question", "answer"} <= fields:
            yield f"{path.name}", None, "a CSV needs 'question' and 'answer' columns"
            return
        for n, row in enumerate(reader, start=2):
            yield f"{path.name}#{n}", {(k or "").strip().lower(): v for k, v in row.items()}, None
        return
    if path.suffix == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            yield path.name, None, f"not valid JSON ({exc})"
            return
        rows = data if isinstance(data, list) else [data]
        for n, row in enumerate(rows):
            yield (
                (f"{path.name}#{n}", row, None)
                if isinstance(row, dict)
                else (f"{path.name}#{n}", None, "not an object")
            )
        return
    for n, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            yield f"{path.name}#{n}", None, f"not valid JSON ({exc.msg})"
            continue
        yield (f"{path.name}#{n}", row, None) if isinstance(row, dict) else (f"{path.name}#{n}", None, "not an object")


def _from_manifest(path: Path, root: Path) -> tuple[list[DataItem], list[Problem]]:
    items: list[DataItem] = []
    problems: list[Problem] = []
    try:
        records = list(_records(path))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        return [], [Problem(_rel(path, root), "error", "unreadable_file", f"cannot be read ({exc}).")]
    for row_id, record, why in records:
        if record is None:
            problems.append(Problem(_rel(path.parent / row_id, root), "error", "bad_row", f"skipped: {why}."))
            continue
        try:
            items.append(_manifest_item(record, _rel(path.parent / row_id, root), path.parent))
        except (ValueError, TypeError) as exc:
            problems.append(Problem(_rel(path.parent / row_id, root), "error", "bad_row", f"skipped: {exc}."))
    return items, problems


def _rel(path: Path, root: Path) -> str:
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return path.name


def _walk(folder: Path) -> Iterator[Path]:
    for path in sorted(folder.iterdir()):
        if path.is_dir():
            if path.name not in SKIPPED_DIRS and not path.name.startswith("."):
                yield from _walk(path)
        elif path.is_file():
            yield path


def find_items(source: Path) -> tuple[list[DataItem], list[Problem]]:
    """Every pair in ``source`` (folder or file), with the problems that stopped some from forming."""
    root = source if source.is_dir() else source.parent
    files = list(_walk(source)) if source.is_dir() else [source]
    items: list[DataItem] = []
    problems: list[Problem] = []
    audio = {p.with_suffix(""): p for p in files if p.suffix.lower() in AUDIO_SUFFIXES}
    texts = {p.with_suffix(""): p for p in files if p.suffix.lower() == ANSWER_SUFFIX}
    for stem, question in sorted(audio.items()):
        if stem.name.endswith(ANSWER_AUDIO_MARK):
            if stem.with_name(stem.name[: -len(ANSWER_AUDIO_MARK)]) not in audio:
                problems.append(
                    Problem(
                        _rel(question, root),
                        "error",
                        "orphan_answer_audio",
                        "answer speech without a question recording next to it.",
                    )
                )
            continue
        item_id = _rel(stem, root)
        answer_file = texts.get(stem)
        if answer_file is None:
            problems.append(Problem(item_id, "error", "missing_answer", f"{question.name} has no {stem.name}.txt."))
            continue
        try:
            answer = answer_file.read_text(encoding="utf-8-sig").strip()
        except (OSError, UnicodeDecodeError) as exc:
            problems.append(
                Problem(item_id, "error", "unreadable_answer", f"{answer_file.name} cannot be read ({exc}).")
            )
            continue
        answer_audio = next((audio[k] for k in (stem.with_name(stem.name + ANSWER_AUDIO_MARK),) if k in audio), None)
        items.append(DataItem(item_id, "pairs", answer, question_audio=question, answer_audio=answer_audio))
    for stem, text in sorted(texts.items()):
        if stem not in audio:
            problems.append(
                Problem(
                    _rel(text, root),
                    "error",
                    "missing_question",
                    f"{text.name} has no question recording ({stem.name}.wav).",
                )
            )
    for path in files:
        if path.suffix.lower() in MANIFEST_SUFFIXES:
            found, trouble = _from_manifest(path, root)
            items += found
            problems += trouble
    return items, problems


# ------------------------------------------------------------------------------------- validation


@dataclass
class _Checker:
    count_tokens: Any  # Callable[[str], int] | None
    max_answer_tokens: int
    unit_vocab_size: int | None
    problems: list[Problem] = field(default_factory=list)

    def usable(self, item: DataItem) -> DataItem | None:
        """The item (answer speech/units dropped if those alone are bad), or None to skip it."""
        if not item.answer:
            self.problems.append(Problem(item.id, "error", "empty_answer", "the answer is missing or empty."))
            return None
        if not item.spoken and not (item.question_text or "").strip():
            self.problems.append(Problem(item.id, "error", "empty_question", "the question is empty."))
            return None
        if self.count_tokens is not None:
            n = self.count_tokens(item.answer)
            if n > self.max_answer_tokens:
                self.problems.append(
                    Problem(
                        item.id,
                        "error",
                        "answer_too_long",
                        f"the answer is {n} tokens; the limit is {self.max_answer_tokens}.",
                    )
                )
                return None
        if item.question_audio is not None:
            found, ok = _check_audio(item.id, item.question_audio, "question", MAX_QUESTION_S)
            self.problems += found
            if not ok:
                return None
        if item.answer_audio is not None:
            found, ok = _check_audio(item.id, item.answer_audio, "answer", MAX_ANSWER_SPEECH_S)
            if not ok:
                found = [replace(p, severity="warning", message=p.message + " Stage 2 skips it.") for p in found]
                item = replace(item, answer_audio=None)
            self.problems += found
        if item.units is not None:
            bad = not item.units or (self.unit_vocab_size is not None and max(item.units) >= self.unit_vocab_size)
            if bad or min(item.units, default=0) < 0:
                message = (
                    f"its units are empty or outside 0..{(self.unit_vocab_size or 1) - 1} (not mHuBERT km1000 units?);"
                    " stage 2 skips it."
                )
                self.problems.append(Problem(item.id, "warning", "bad_units", message))
                item = replace(item, units=None)
        return item


def _dedupe(items: Iterable[DataItem], problems: list[Problem]) -> list[DataItem]:
    seen: dict[str, DataItem] = {}
    kept: list[DataItem] = []
    for item in items:
        key = item.key()
        first = seen.get(key)
        if first is None:
            seen[key] = item
            kept.append(item)
        elif first.answer.strip() == item.answer.strip():
            problems.append(
                Problem(item.id, "warning", "duplicate", f"same question and answer as {first.id}; skipped.")
            )
        else:
            problems.append(
                Problem(
                    item.id,
                    "warning",
                    "conflicting_answer",
                    f"same question as {first.id} with a different answer; both kept.",
                )
            )
            kept.append(item)
    return kept


def _split_rank(item_id: str) -> str:
    return hashlib.sha256(item_id.encode("utf-8")).hexdigest()


def heldout_split(items: list[DataItem], fraction: float = HELDOUT_FRACTION) -> frozenset[str]:
    """About ``fraction`` of the items (at least one when there are two or more), by id hash."""
    if len(items) < 2:
        return frozenset()
    n = min(len(items) - 1, max(1, math.floor(len(items) * fraction + 0.5)))
    ranked = sorted(items, key=lambda i: _split_rank(i.id))
    return frozenset(i.id for i in ranked[:n])


def load_dataset(
    source: str | Path,
    *,
    count_tokens: Any = None,
    max_answer_tokens: int = DEFAULT_MAX_ANSWER_TOKENS,
    unit_vocab_size: int | None = None,
) -> DataReport:
    """Find, check and split. ``count_tokens(text) -> int`` enables the answer-length check."""
    source = Path(source).expanduser()
    if not source.exists():
        problem = Problem(str(source), "error", "not_found", "the dataset folder or file does not exist.")
        return DataReport(source, (), frozenset(), (problem,), 0, count_tokens is not None, max_answer_tokens)
    found, problems = find_items(source)
    checker = _Checker(count_tokens, max_answer_tokens, unit_vocab_size, problems)
    usable = [u for u in (checker.usable(i) for i in found) if u is not None]
    ids: dict[str, int] = {}
    unique: list[DataItem] = []
    for item in usable:  # ids must be unique for the split and the reports
        n = ids.get(item.id, 0)
        ids[item.id] = n + 1
        unique.append(item if n == 0 else replace(item, id=f"{item.id}~{n + 1}"))
    kept = _dedupe(unique, problems)
    n_found = len(found) + len(
        {p.item for p in problems if p.code in ("missing_answer", "missing_question", "bad_row")}
    )
    if len(kept) == 1:
        problems.append(Problem(kept[0].id, "warning", "no_heldout", "only one usable pair: nothing is held out."))
    return DataReport(
        source=source,
        items=tuple(kept),
        heldout_ids=heldout_split(kept),
        problems=tuple(problems),
        n_found=n_found,
        token_limit_checked=count_tokens is not None,
        max_answer_tokens=max_answer_tokens,
    )


def load_question_audio(item: DataItem) -> tuple[np.ndarray, int]:
    """float32 mono samples and rate of a usable spoken item (already checked readable)."""
    assert item.question_audio is not None
    audio, rate, _channels = read_audio(item.question_audio)
    return audio, rate
