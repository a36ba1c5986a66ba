"""Training checkpoints: everything needed to continue bit for bit, written atomically.

A checkpoint is taken at an optimizer-step boundary and holds: every tensor the adapter is made
of so far (earlier stages' results included), the current stage's optimizer state, the step, the
RNG states (LoRA dropout draws from them), the loss history, the evaluation done before training,
and what the run was (data and base fingerprints, the plan). The data order is a pure function of
(seed, stage, step) and the LR of the step, so nothing else is needed.

It is written to ``checkpoint.pt.tmp``, flushed to disk, and renamed over ``checkpoint.pt``: a crash
or a full disk while writing leaves the previous checkpoint intact. The file is our own and is
read back with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import errno
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from engine.errors import BadInput, DiskFull, ModelCorrupt, Reason

CHECKPOINT_NAME = "checkpoint.pt"
CHECKPOINT_VERSION = 1
TRAINING_DIR_SUFFIX = ".training"
START_AGAIN_FIX = "Start the training again from the beginning (the checkpoint cannot be continued)."


def training_dir(out: Path) -> Path:
    """Where a run's checkpoints live: next to the adapter folder (``NAME.training``)."""
    return out.with_name(out.name + TRAINING_DIR_SUFFIX)


@dataclass
class TrainState:
    run: dict[str, Any]  # data/base fingerprints and the plan: a resume must match
    stage_index: int  # index into plan.stages
    step: int  # optimizer steps completed in that stage
    tensors: dict[str, torch.Tensor]  # the adapter so far (fp32, CPU)
    optimizer: dict[str, Any] | None
    rng: dict[str, Any]
    losses: dict[str, list[float]] = field(default_factory=dict)  # per stage
    eval_before: dict[str, Any] | None = None


def rng_state() -> dict[str, Any]:
    state: dict[str, Any] = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(folder: Path, state: TrainState) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / CHECKPOINT_NAME
    tmp = folder / (CHECKPOINT_NAME + ".tmp")
    payload = {
        "version": CHECKPOINT_VERSION,
        "run": state.run,
        "stage_index": state.stage_index,
        "step": state.step,
        "tensors": state.tensors,
        "optimizer": state.optimizer,
        "rng": state.rng,
        "losses": state.losses,
        "eval_before": state.eval_before,
    }
    try:
        with open(tmp, "wb") as handle:
            torch.save(payload, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        if exc.errno == errno.ENOSPC:
            raise DiskFull(
                "The disk filled up while saving a training checkpoint.",
                path=folder,
                fix="Free some disk space, then continue the training from its checkpoint.",
                reason=Reason.TRAINING_DISK_FULL,
            ) from exc
        raise
    return path


def load_checkpoint(folder: Path) -> TrainState:
    path = folder / CHECKPOINT_NAME
    if not path.is_file():
        raise BadInput(
            "There is no checkpoint to resume from.", path=path, fix=START_AGAIN_FIX, reason=Reason.RESUME_IMPOSSIBLE
        )
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for a damaged file
        raise ModelCorrupt(
            f"The training checkpoint cannot be read: {exc}",
            path=path,
            fix=START_AGAIN_FIX,
            reason=Reason.RESUME_IMPOSSIBLE,
        ) from exc
    if not isinstance(data, dict) or data.get("version") != CHECKPOINT_VERSION:
        raise ModelCorrupt(
            "The training checkpoint has an unknown format.",
            path=path,
            fix=START_AGAIN_FIX,
            reason=Reason.RESUME_IMPOSSIBLE,
        )
    return TrainState(
        run=data["run"],
        stage_index=int(data["stage_index"]),
        step=int(data["step"]),
        tensors=data["tensors"],
        optimizer=data["optimizer"],
        rng=data["rng"],
        losses=data.get("losses") or {},
        eval_before=data.get("eval_before"),
    )


def check_same_run(saved: dict[str, Any], current: dict[str, Any], path: Path) -> None:
    """A resume must continue the same run: same data, base model and plan."""
    for key, what in (("data", "dataset"), ("base", "base model"), ("plan", "training settings")):
        if saved.get(key) != current.get(key):
            raise BadInput(
                f"The checkpoint was made with a different {what}; it cannot be continued.",
                path=path,
                fix="Use the same data, model and options as before, or start the training from the beginning.",
                reason=Reason.RESUME_IMPOSSIBLE,
            )
