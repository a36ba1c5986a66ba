"""The installed adapters as Settings → Fine-tuning lists them: read, rename, delete, unfinished runs."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from engine.errors import BadInput
from engine.finetune import checkpoint, library
from engine.model import adapter_files


def _adapter(root: Path, name: str, created: str, metrics: dict | None = None) -> Path:
    folder = root / name
    folder.mkdir(parents=True)
    meta = {
        "format": "omnitalk-adapter", "format_version": 1, "created": created, "stages": [1],
        "base_model": {"fingerprint": "sha256:x", "name": "omni"},
        "data": {"usable": 4, "train": 3, "heldout": 1},
        "metrics": metrics or {
            "before": {"answers": {"exact_match": 0.0, "wer": 2.0}},
            "after": {"answers": {"exact_match": 1.0, "wer": 0.0}},
            "loss": {"1": {"first": 7.5, "last": 0.25, "steps": 30}},
        },
    }  # fmt: skip
    (folder / library.META_FILE).write_text(json.dumps(meta))
    return folder


def test_the_names_agree_with_the_modules_that_write_them() -> None:
    assert library.META_FILE == adapter_files.META_FILE
    assert library.PARTIAL_SUFFIX == adapter_files.PARTIAL_SUFFIX
    assert library.TRAINING_DIR_SUFFIX == checkpoint.TRAINING_DIR_SUFFIX
    assert library.CHECKPOINT_NAME == checkpoint.CHECKPOINT_NAME


def test_importing_it_does_not_import_torch() -> None:
    code = "import sys, engine.finetune.library; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_lists_adapters_newest_first_with_their_metrics(tmp_path: Path) -> None:
    _adapter(tmp_path, "old", "2026-11-01T10:00:00+00:00")
    _adapter(tmp_path, "new", "2026-12-01T10:00:00+00:00", metrics={"before": None, "after": None})
    _adapter(tmp_path, "half.partial", "2026-12-02T10:00:00+00:00")
    (tmp_path / "not-an-adapter").mkdir()
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / library.META_FILE).write_text("{not json")
    entries = library.list_adapters(tmp_path)
    assert [e.name for e in entries] == ["new", "old", "broken"]
    old = entries[1]
    assert (old.usable_pairs, old.train_pairs, old.heldout_pairs) == (4, 3, 1)
    assert (old.exact_before, old.exact_after, old.wer_before, old.wer_after) == (0.0, 1.0, 2.0, 0.0)
    assert (old.loss_first, old.loss_last, old.stages) == (7.5, 0.25, (1,))
    assert entries[0].exact_after is None and entries[0].problem is None
    assert entries[2].problem is not None and "cannot be read" in entries[2].problem


def test_rename_refuses_taken_and_bad_names(tmp_path: Path) -> None:
    a = _adapter(tmp_path, "a", "2026-12-01")
    _adapter(tmp_path, "b", "2026-12-01")
    with pytest.raises(BadInput, match="exists already"):
        library.rename_adapter(a, "b")
    for bad in ("", "  ", "x/y", "..", "run.training", "a" * 81):
        with pytest.raises(BadInput):
            library.rename_adapter(a, bad)
    renamed = library.rename_adapter(a, "  My FAQ ")
    assert renamed == tmp_path / "My FAQ" and (renamed / library.META_FILE).exists() and not a.exists()


def test_delete_removes_the_adapter_and_its_leftover_checkpoint(tmp_path: Path) -> None:
    a = _adapter(tmp_path, "a", "2026-12-01")
    run = tmp_path / ("a" + library.TRAINING_DIR_SUFFIX)
    run.mkdir()
    (run / library.CHECKPOINT_NAME).write_bytes(b"x")
    keep = _adapter(tmp_path, "b", "2026-12-01")
    library.delete_adapter(a)
    assert not a.exists() and not run.exists() and [e.path for e in library.list_adapters(tmp_path)] == [keep]
