"""The installed adapters: list them with what their description says, rename, delete.

Plain files only: no torch, so the settings window can call it directly (Settings → Fine-tuning)
without a multi-second import.

An adapter is a folder holding ``omnitalk_adapter.json`` (engine/model/adapter_files.py); a run that
stopped early left a ``NAME.training`` folder holding ``checkpoint.pt`` (engine/finetune/checkpoint.py).
"""

from __future__ import annotations

import json
import logging
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine.errors import BadInput

logger = logging.getLogger(__name__)

# The same names as engine/model/adapter_files.py and engine/finetune/checkpoint.py (which import
# torch); tests/engine/test_finetune_library.py checks they agree.
META_FILE = "omnitalk_adapter.json"
PARTIAL_SUFFIX = ".partial"
TRAINING_DIR_SUFFIX = ".training"
CHECKPOINT_NAME = "checkpoint.pt"
MAX_NAME_CHARS = 80
FORBIDDEN_NAME_CHARS = '/\\:*?"<>|'


@dataclass(frozen=True, slots=True)
class AdapterEntry:
    """One installed adapter as its description tells it (missing fields are None)."""

    path: Path
    created: str | None  # ISO 8601, UTC
    base_name: str | None
    stages: tuple[int, ...]
    usable_pairs: int | None
    train_pairs: int | None
    heldout_pairs: int | None
    exact_before: float | None  # held-out exact match, 0..1
    exact_after: float | None
    wer_before: float | None  # held-out word error rate
    wer_after: float | None
    loss_first: float | None  # stage 1's first and last training loss
    loss_last: float | None
    problem: str | None = None  # the description could not be read: why
    metrics: dict[str, Any] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.path.name


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _answers(metrics: dict[str, Any], when: str) -> dict[str, Any]:
    return _dict(_dict(metrics.get(when)).get("answers"))


def read_entry(folder: Path) -> AdapterEntry:
    """What ``folder``'s description says; a damaged description gives an entry with ``problem``."""
    try:
        data = json.loads((folder / META_FILE).read_text(encoding="utf-8"))
        if not isinstance(data, dict):
            raise ValueError("not a JSON object")
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        logger.warning("Adapter description %s unreadable: %s", folder / META_FILE, exc)
        return AdapterEntry(folder, None, None, (), None, None, None, None, None, None, None, None, None,
                            problem=f"its description ({META_FILE}) cannot be read: {exc}")  # fmt: skip
    summary, metrics, base = _dict(data.get("data")), _dict(data.get("metrics")), _dict(data.get("base_model"))
    loss = _dict(_dict(metrics.get("loss")).get("1"))
    before, after = _answers(metrics, "before"), _answers(metrics, "after")
    stages = data.get("stages")
    stages = stages if isinstance(stages, list) else []

    def count(key: str) -> int | None:
        value = summary.get(key)
        return value if isinstance(value, int) and not isinstance(value, bool) else None

    return AdapterEntry(
        path=folder,
        created=str(data["created"]) if data.get("created") else None,
        base_name=str(base["name"]) if base.get("name") else None,
        stages=tuple(s for s in stages if isinstance(s, int)),
        usable_pairs=count("usable"),
        train_pairs=count("train"),
        heldout_pairs=count("heldout"),
        exact_before=_number(before.get("exact_match")),
        exact_after=_number(after.get("exact_match")),
        wer_before=_number(before.get("wer")),
        wer_after=_number(after.get("wer")),
        loss_first=_number(loss.get("first")),
        loss_last=_number(loss.get("last")),
        metrics=metrics,
    )


def list_adapters(root: Path) -> list[AdapterEntry]:
    """Every adapter folder directly in ``root``, newest first (half-written ``.partial`` ones skipped)."""
    if not root.is_dir():
        return []
    folders = [
        p for p in root.iterdir()
        if p.is_dir() and not p.name.endswith(PARTIAL_SUFFIX) and (p / META_FILE).exists()
    ]  # fmt: skip
    entries = [read_entry(p) for p in folders]
    return sorted(entries, key=lambda e: (e.created or "", e.name), reverse=True)


def check_name(name: str) -> str:
    """A usable folder name for an adapter, stripped; BadInput (in words) otherwise."""
    name = name.strip()
    if not name:
        raise BadInput("The name is empty.", fix="Type a name.")
    bad = sorted({c for c in name if c in FORBIDDEN_NAME_CHARS or ord(c) < 32})
    if bad or name in (".", "..") or name.endswith((PARTIAL_SUFFIX, TRAINING_DIR_SUFFIX)) or len(name) > MAX_NAME_CHARS:
        raise BadInput(
            f"“{name}” cannot be a folder name.",
            fix=f"Use letters, digits, spaces, dashes; at most {MAX_NAME_CHARS} characters.",
            facts={"name": name},
        )
    return name


def rename_adapter(folder: Path, new_name: str) -> Path:
    """Rename the adapter folder in place; the new path. BadInput if the name is bad or taken."""
    name = check_name(new_name)
    target = folder.with_name(name)
    if target == folder:
        return folder
    if target.exists():
        raise BadInput(
            f"An adapter called “{name}” exists already.",
            path=target,
            fix="Choose another name.",
            facts={"name": name},
        )
    folder.rename(target)
    return target


def delete_adapter(folder: Path) -> None:
    """Remove the adapter folder (and a leftover checkpoint of its run)."""
    shutil.rmtree(folder)
    shutil.rmtree(folder.with_name(folder.name + TRAINING_DIR_SUFFIX), ignore_errors=True)
