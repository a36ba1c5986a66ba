"""What the wizard's pages share: the model, the draft, what the check and the run reported.

Owner: the FinetuneWizard (UI thread); pages read and fill it. The run's command-line flags and its
output folder are also written to the draft (``run.json``), so a run that a crash or a reboot cut
short can be resumed from a fresh wizard.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from app.finetune_wizard.draft import Draft
from engine.finetune.library import CHECKPOINT_NAME, TRAINING_DIR_SUFFIX, check_name
from engine.paths import adapters_dir

RUN_FILE = "run.json"


def resumable_run(draft: Draft) -> tuple[Path, list[str]] | None:
    """The draft's run (adapter folder, flags) if it stopped at a checkpoint and can continue."""
    try:
        data = json.loads((draft.folder / RUN_FILE).read_text(encoding="utf-8"))
        out = Path(data["out"])
        flags = [str(f) for f in data.get("train_flags", [])]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if out.exists() or not (out.with_name(out.name + TRAINING_DIR_SUFFIX) / CHECKPOINT_NAME).is_file():
        return None  # finished, or nothing to continue
    return out, flags


@dataclass
class WizardState:
    model_dir: Path
    draft: Draft
    speech_encoder: Path | None = None
    device: str | None = None  # None: the trainer's default (CUDA if there is one)
    report: dict[str, Any] | None = None  # the check's "report" event
    plan: dict[str, Any] | None = None  # the check's "plan" event
    train_flags: list[str] = field(default_factory=list)  # from the Options page
    out: Path | None = None  # the adapter folder the run writes
    resume: bool = False  # the Train page continues ``out``'s checkpoint
    eval_before: dict[str, Any] | None = None
    eval_after: dict[str, Any] | None = None
    adapter: Path | None = None  # written (the "done" event)

    def run_args(self) -> list[str]:
        assert self.out is not None
        args = ["finetune", "run", "--model", str(self.model_dir), "--data", str(self.draft.data)]
        args += ["--out", str(self.out)]
        if self.speech_encoder is not None:
            args += ["--speech-encoder", str(self.speech_encoder)]
        if self.device is not None:
            args += ["--device", self.device]
        args += self.train_flags
        return args + (["--resume"] if self.resume else [])

    def check_args(self) -> list[str]:
        args = ["finetune", "check", "--model", str(self.model_dir), "--data", str(self.draft.data)]
        if self.speech_encoder is not None:
            args += ["--speech-encoder", str(self.speech_encoder)]
        return args + (["--device", self.device] if self.device is not None else [])

    def new_out(self, root: Path | None = None) -> Path:
        """A fresh adapter folder name (renamed on the Finish page)."""
        root = root or adapters_dir()
        stem = check_name(datetime.now().strftime("Fine-tune %Y-%m-%d %H%M"))
        path, n = root / stem, 1
        while path.exists() or path.with_name(path.name + TRAINING_DIR_SUFFIX).exists():
            n += 1
            path = root / f"{stem} ({n})"
        return path

    # ------------------------------------------------------------------ the run on disk

    def save_run(self) -> None:
        self.draft.folder.mkdir(parents=True, exist_ok=True)
        data = {"out": str(self.out), "train_flags": self.train_flags}
        (self.draft.folder / RUN_FILE).write_text(json.dumps(data), encoding="utf-8")

    def load_run(self) -> bool:
        """Read a cut-short run from the draft; True if it can be resumed (its checkpoint exists)."""
        run = resumable_run(self.draft)
        if run is None:
            return False
        self.out, self.train_flags = run
        return True

    def forget_run(self) -> None:
        (self.draft.folder / RUN_FILE).unlink(missing_ok=True)
