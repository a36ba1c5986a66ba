"""``python -m engine finetune check|run|fetch-units``: the subprocess the app starts to fine-tune.

stdout carries one JSON object per line (``{"event": "step", "step", "loss", "lr", "samples_per_s",
"eta_s", ...}``, ``report``, ``plan``, ``eval``, ``checkpoint``, ``done``, ``error`` with ``kind`` and
``fix``); stderr carries the same in words. Exit codes:

    0  done                      3  out of memory (GPU or RAM), with advice
    2  bad input (data, model)   4  cancelled (SIGTERM/SIGINT: checkpoint first, then exit)
    1  an unexpected internal error (logged with its traceback on stderr)

To stop a run gracefully, send SIGTERM (or SIGINT); on Windows, where SIGTERM cannot be caught,
start the child in a new process group and send CTRL_BREAK_EVENT (SIGBREAK is handled the same).

No traceback ever reaches stdout, and none is printed for the expected failures above.
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TextIO

from engine.cli_words import cli_fix
from engine.errors import Cancelled, EngineError, NotEnoughMemory

logger = logging.getLogger(__name__)

EXIT_OK = 0
EXIT_INTERNAL = 1
EXIT_BAD_INPUT = 2
EXIT_OUT_OF_MEMORY = 3
EXIT_CANCELLED = 4
OOM_FIX = (
    "Close other programs using the GPU, then try --batch 1 --grad-accum 8, a smaller --rank (8), "
    "gradient checkpointing (--grad-checkpointing), or shorter answers."
)
OOM_MARKERS = ("out of memory", "cuda error: out of memory", "cublas_status_alloc_failed")
STOP_SIGNALS = tuple(getattr(signal, name) for name in ("SIGTERM", "SIGINT", "SIGBREAK") if hasattr(signal, name))


def is_out_of_memory(exc: BaseException) -> bool:
    """CUDA or host allocation failures, however the library spells them."""
    import torch

    if isinstance(exc, (MemoryError, NotEnoughMemory, torch.cuda.OutOfMemoryError)):
        return True
    return isinstance(exc, RuntimeError) and any(m in str(exc).lower() for m in OOM_MARKERS)


def exit_code_for(exc: BaseException) -> int:
    if isinstance(exc, (Cancelled, KeyboardInterrupt)):
        return EXIT_CANCELLED
    if is_out_of_memory(exc):
        return EXIT_OUT_OF_MEMORY
    if isinstance(exc, EngineError):
        return EXIT_BAD_INPUT
    return EXIT_INTERNAL


class JsonLines:
    """Events as JSON lines on ``out`` and one line of words each on ``err``."""

    def __init__(self, out: TextIO | None = None, err: TextIO | None = None) -> None:
        self.out = out or sys.stdout
        self.err = err or sys.stderr

    def __call__(self, event: dict[str, Any]) -> None:
        self.out.write(json.dumps(event, default=str) + "\n")
        self.out.flush()
        words = describe(event)
        if words:
            self.err.write(words + "\n")
            self.err.flush()


def _minutes(seconds: float) -> str:
    return f"{seconds / 60:.1f} min" if seconds >= 90 else f"{seconds:.0f} s"


def describe(event: dict[str, Any]) -> str:
    kind = event.get("event")
    if kind == "step":
        return (
            f"stage {event['stage']} step {event['step']}/{event['total_steps']}: loss {event['loss']:.4f}, "
            f"lr {event['lr']:.2e}, {event['samples_per_s']:.2f} pairs/s, about {_minutes(event['eta_s'])} left"
        )
    if kind == "checkpoint":
        return f"checkpoint saved (stage {event['stage']}, step {event['step']})"
    if kind == "stage":
        return f"stage {event['stage']}: {event['examples']} pairs, {event['total_steps']} steps"
    if kind == "eval":
        parts = []
        if event.get("answers"):
            a = event["answers"]
            parts.append(f"held-out exact match {a['exact_match']:.0%}, word error rate {a['wer']:.2f}")
        if event.get("units") and event["units"].get("n"):
            parts.append(f"unit error rate {event['units']['unit_error_rate']:.2f}")
        if "changed" in event.get("forget", {}):
            parts.append(f"{event['forget']['changed']} of {len(event['forget']['questions'])} general answers changed")
        return f"evaluation {event['when']} training: " + ("; ".join(parts) or "nothing held out")
    if kind == "done":
        return f"done: adapter written to {event['adapter']}"
    if kind == "error":
        fix = cli_fix(event.get("reason"), event.get("fix"))
        return f"error ({event['kind']}): {event['message']}" + (f"\nFix: {fix}" if fix else "")
    if kind == "targets":
        return f"speech units {event['done']}/{event['total']}"
    if kind == "download":
        return f"downloading {event['file']}: {event['done'] / 1e6:.0f} MB"
    return ""


def error_event(exc: BaseException) -> dict[str, Any]:
    """The JSON ``error`` event: kind, reason and facts for an interface to word; ``message`` and an
    interface-neutral ``fix`` as a fallback; the exit code this run ends with."""
    code = exit_code_for(exc)
    details: dict[str, Any] = {}
    if isinstance(exc, EngineError):
        kind, message, fix = exc.kind, exc.message, exc.fix
        details = {
            "reason": exc.reason.value if exc.reason is not None else None,
            "facts": dict(exc.facts),
            "path": str(exc.path) if exc.path is not None else None,
        }
    elif code == EXIT_OUT_OF_MEMORY:
        kind, message, fix = "out_of_memory", f"Out of memory: {str(exc).splitlines()[0] if str(exc) else exc!r}", None
    elif code == EXIT_CANCELLED:
        kind, message, fix = "cancelled", "Cancelled.", None
    else:
        kind, message, fix = "internal", f"{type(exc).__name__}: {exc}", "See the log for details."
    if code == EXIT_OUT_OF_MEMORY:
        kind, fix = "out_of_memory", fix or OOM_FIX
    return {"event": "error", "kind": kind, "message": message, "fix": fix, **details, "exit_code": code}


@contextmanager
def stop_on_signals() -> Iterator[threading.Event]:
    """SIGTERM/SIGINT set the returned event (the trainer checkpoints and stops) instead of killing us."""
    stop = threading.Event()
    previous: dict[int, Any] = {}

    def handler(signum: int, _frame: object) -> None:
        logger.info("signal %d: stopping after a checkpoint", signum)
        stop.set()

    if threading.current_thread() is threading.main_thread():
        for sig in STOP_SIGNALS:
            previous[sig] = signal.signal(sig, handler)
    try:
        yield stop
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def run_reported(work: Callable[[], Any], emit: Callable[[dict[str, Any]], None]) -> int:
    """Run ``work``; any failure becomes an ``error`` event and its exit code."""
    try:
        work()
    except BaseException as exc:  # the process boundary: every failure becomes an exit code
        code = exit_code_for(exc)
        if code == EXIT_INTERNAL:
            logger.exception("fine-tuning failed unexpectedly")
        emit(error_event(exc))
        if isinstance(exc, (SystemExit, GeneratorExit)):
            raise
        return code
    return EXIT_OK


# ------------------------------------------------------------------------------------ commands


def _options(args: argparse.Namespace) -> Any:
    from engine.finetune.plan import TrainOptions

    return TrainOptions(
        model_dir=Path(args.model) if args.model else None,
        data=Path(args.data),
        out=_out(args),
        speech_encoder=Path(args.speech_encoder) if args.speech_encoder else None,
        device=args.device,
        quant=args.quant,
        stage=args.stage,
        epochs=args.epochs,
        steps=args.steps,
        lr=args.lr,
        rank=args.rank,
        micro_batch=args.batch,
        grad_accum=args.grad_accum,
        grad_checkpointing=args.grad_checkpointing,
        seed=args.seed,
        resume=getattr(args, "resume", False),
        checkpoint_every=getattr(args, "checkpoint_every", None),
        hubert=Path(args.hubert) if args.hubert else None,
        kmeans=Path(args.kmeans) if args.kmeans else None,
        system_prompt=args.system_prompt,
        evaluate=not getattr(args, "no_eval", False),
        unit_mode=args.unit_decoder,
    )


def _out(args: argparse.Namespace) -> Path | None:
    if args.finetune_command != "run":
        return None
    return Path(args.out) if args.out else default_out(Path(args.data), args.resume)


def default_out(data: Path, resume: bool) -> Path:
    """``<data dir>/adapters/<dataset name>[-N]``: never a finished adapter or another unfinished run,
    except that ``resume`` continues the newest unfinished run of that name."""
    from engine.finetune.checkpoint import training_dir
    from engine.paths import adapters_dir

    stem = (data.stem if data.suffix else data.name) or "adapter"
    taken: list[Path] = []
    while True:
        path = adapters_dir() / (stem if not taken else f"{stem}-{len(taken) + 1}")
        if not path.exists() and not training_dir(path).exists():
            break
        taken.append(path)
    unfinished = [p for p in taken if training_dir(p).exists()]
    return unfinished[-1] if resume and unfinished else path


def _check(args: argparse.Namespace) -> int:
    emit = JsonLines()

    def work() -> None:
        from engine.finetune.inputs import check_plan, inspect_data

        options = _options(args)
        inspection = inspect_data(options, require_model=False)
        report = inspection.report
        emit({"event": "report", **report.as_dict()})
        sys.stderr.write(report.text() + "\n")
        plan = check_plan(options, inspection)
        emit({"event": "plan", **plan.as_dict()})
        sys.stderr.write(plan.text() + "\n")
        if not report.train_items:
            from engine.errors import BadInput

            raise BadInput(
                "The dataset has no usable question/answer pairs.",
                path=options.data,
                fix="Fix or remove the items listed in the report.",
            )

    return run_reported(work, emit)


def _run(args: argparse.Namespace) -> int:
    emit = JsonLines()
    with stop_on_signals() as stop:

        def work() -> None:
            from engine.finetune.trainer import Trainer

            Trainer(_options(args), emit, stop.is_set).run()

        return run_reported(work, emit)


def _fetch_units(args: argparse.Namespace) -> int:
    emit = JsonLines()
    with stop_on_signals() as stop:

        def work() -> None:
            from engine.store import Downloader, default_unit_model_paths, unit_model_files, unit_model_paths

            paths = unit_model_paths(Path(args.dir)) if args.dir else default_unit_model_paths()
            files = unit_model_files(args.base_url) if args.base_url else unit_model_files()

            def progress(p: Any) -> None:
                emit({"event": "download", "file": p.file, "done": p.done, "total": p.total})

            Downloader().download(files, paths.hubert.parent, progress, stop.is_set)
            emit({"event": "done", "hubert": str(paths.hubert), "kmeans": str(paths.kmeans)})

        return run_reported(work, emit)


def _add_training_flags(p: argparse.ArgumentParser) -> None:
    from engine.finetune.plan import STAGE_CHOICES, TRAIN_QUANTS, UNIT_MODES

    p.add_argument("--data", required=True, help="dataset folder or file (pairs, JSONL/CSV, InstructS2S manifest)")
    p.add_argument("--speech-encoder", help="Whisper large-v3 .pt or HF folder, if not found with the model")
    p.add_argument("--device", default=None, help="cpu | cuda | cuda:N (default: cuda if available)")
    p.add_argument(
        "--quant", choices=TRAIN_QUANTS, default=None, help="base precision (default: nf4 on CUDA, fp32 on CPU)"
    )
    p.add_argument("--stage", choices=STAGE_CHOICES, default="both", help="1: text answers, 2: speech units, both")
    p.add_argument("--epochs", type=int, default=None)
    p.add_argument("--steps", type=int, default=None, help="optimizer steps per stage (overrides --epochs)")
    p.add_argument("--lr", type=float, default=None, help="peak learning rate (default 2e-4)")
    p.add_argument("--rank", type=int, default=16, help="LoRA rank")
    p.add_argument(
        "--unit-decoder", choices=UNIT_MODES, default=None, help="stage 2: train the decoder in full or with LoRA"
    )
    p.add_argument("--batch", type=int, default=None, help="pairs per forward pass (default from free memory)")
    p.add_argument("--grad-accum", type=int, default=None, help="gradient accumulation steps")
    p.add_argument("--grad-checkpointing", action=argparse.BooleanOptionalAction, default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--hubert", help="mHuBERT checkpoint for answer-speech units (default: the downloaded one)")
    p.add_argument("--kmeans", help="its km1000 k-means .bin (default: the downloaded one)")
    p.add_argument("--system-prompt", default=None, help="train with this system prompt (default: the app's)")


def register(subparsers: argparse._SubParsersAction) -> None:
    ft = subparsers.add_parser("finetune", help="fine-tune on your own questions and answers (adapter)")
    sub = ft.add_subparsers(dest="finetune_command", metavar="ACTION", required=True)

    check = sub.add_parser("check", help="validate a dataset and show the training defaults")
    check.add_argument("--model", help="Omni folder (exact token counts and memory)")
    _add_training_flags(check)
    check.set_defaults(func=_check)

    run = sub.add_parser("run", help="train an adapter (JSON-lines progress on stdout)")
    run.add_argument("--model", required=True, help="Omni folder")
    run.add_argument("--out", help="adapter folder (default: <data dir>/adapters/<dataset name>)")
    run.add_argument("--resume", action="store_true", help="continue the interrupted run from its checkpoint")
    run.add_argument("--checkpoint-every", type=int, default=None, help="optimizer steps between checkpoints")
    run.add_argument("--no-eval", action="store_true", help="skip the before/after evaluation")
    _add_training_flags(run)
    run.set_defaults(func=_run)

    fetch = sub.add_parser("fetch-units", help="download mHuBERT + k-means for answer-speech units (checksummed)")
    fetch.add_argument("--dir", help="target folder (default: <data dir>/models/mhubert, where training looks)")
    fetch.add_argument("--base-url", help=argparse.SUPPRESS)
    fetch.set_defaults(func=_fetch_units)
