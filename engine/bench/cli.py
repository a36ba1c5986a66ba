"""``python -m engine bench``: arguments and the settings they resolve to (``run.py`` does the work)."""

from __future__ import annotations

import argparse
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path

from engine.bench.report import DEFAULT_RESULTS
from engine.config import QUANT_MODES

SIZES = ("tiny", "mid", "full")
DEFAULT_RUNS = 5
QUICK_RUNS = 2
DEFAULT_MAX_NEW_TOKENS = 64
N_QUESTIONS = 5  # espeak-ng questions, cycled over the runs (--quick: the first two)
QUICK_QUESTIONS = 2
DECODE_TOKENS = 64  # answer length of the decode timing, as in bench/bench_decode.py
QUICK_DECODE_TOKENS = 16
VOCODER_UNITS = 100  # about 4 s of speech, as in bench/bench_vocoder.py
QUICK_VOCODER_UNITS = 60  # still more than one chunk at the largest Ω
# Best of N: the machine may be shared. Fewer repeats where one run is slow (a 142M+ model or the
# official-size vocoder on a CPU) or under --quick.
REPEATS = 3
SLOW_REPEATS = 2
STREAM_REPEATS = 2
QUICK_REPEATS = 2


@dataclass(frozen=True, slots=True)
class BenchSettings:
    """Everything one benchmark run needs, resolved from the command line."""

    device: str  # "cpu" | "cuda"
    size: str  # tiny | mid | full
    out: Path
    append: bool
    quick: bool
    runs: int  # latency runs per chunking
    n_questions: int
    play_out: bool  # listen to whole answers (underruns) or stop each once it is generated and heard
    max_new_tokens: int
    quant: str | None  # the engine's model; None: the engine's default for the device
    threads: int | None  # torch intra-op threads; None: torch's default
    seed: int
    workdir: Path | None
    decode_tokens: int
    decode_repeats: int
    vocoder_units: int
    one_pass_repeats: int
    stream_repeats: int
    command: str

    @classmethod
    def from_args(cls, args: argparse.Namespace, command: str) -> BenchSettings:
        quick = bool(args.quick)
        device = args.device or _default_device()
        runs = args.runs if args.runs is not None else (QUICK_RUNS if quick else DEFAULT_RUNS)
        if runs < 1:
            raise SystemExit("--runs must be at least 1")
        slow = device == "cpu" and args.size != "tiny"
        return cls(
            device=device,
            size=args.size,
            out=args.out,
            append=not args.no_append,
            quick=quick,
            runs=runs,
            n_questions=min(runs, QUICK_QUESTIONS) if quick else N_QUESTIONS,
            play_out=not quick,
            max_new_tokens=args.max_new_tokens,
            quant=args.quant,
            threads=args.threads,
            seed=args.seed,
            workdir=args.workdir,
            decode_tokens=QUICK_DECODE_TOKENS if quick else DECODE_TOKENS,
            decode_repeats=QUICK_REPEATS if quick else (SLOW_REPEATS if slow else REPEATS),
            vocoder_units=QUICK_VOCODER_UNITS if quick else VOCODER_UNITS,
            one_pass_repeats=QUICK_REPEATS if quick else REPEATS,
            stream_repeats=1 if quick or slow else STREAM_REPEATS,
            command=command,
        )


def _default_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def _command(args: argparse.Namespace) -> str:
    """The command as typed (``python -m engine bench ...``), or rebuilt from the parsed arguments."""
    argv = sys.argv[1:]
    if "bench" in argv:
        return "python -m engine " + shlex.join(argv)
    rebuilt = ["bench", "--size", args.size, "--out", str(args.out)]
    rebuilt += ["--device", args.device] if args.device else []
    rebuilt += ["--quick"] if args.quick else []
    rebuilt += ["--runs", str(args.runs)] if args.runs is not None else []
    return "python -m engine " + shlex.join(rebuilt)


def _run(args: argparse.Namespace) -> int:
    from engine.bench.run import run_bench

    return run_bench(BenchSettings.from_args(args, _command(args)))


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "bench",
        help="measure first-audio latency, decode cost, throughput, memory and streaming quality",
        description=(
            "Drives the real engine (loader, vocoder worker, recorder, player) with spoken questions on a "
            "real-time fake sound device, times the model and the vocoder, measures load memory, and appends "
            "a dated section to the results file. Model sets are random-weight and written on the fly."
        ),
    )
    p.add_argument("--device", choices=("cpu", "cuda"), default=None, help="default: cuda when available")
    p.add_argument(
        "--size", choices=SIZES, default="tiny", help="tiny | mid (8B proportions, scaled down) | full (GPU only)"
    )
    p.add_argument("--out", type=Path, default=DEFAULT_RESULTS, help="results file to append to (%(default)s)")
    p.add_argument("--no-append", action="store_true", help="print the section only")
    p.add_argument(
        "--runs", type=int, default=None, help=f"latency runs per chunking ({DEFAULT_RUNS}; --quick: {QUICK_RUNS})"
    )
    p.add_argument("--quick", action="store_true", help="fewer and shorter runs (about a minute on a CPU for tiny)")
    p.add_argument(
        "--quant", choices=QUANT_MODES, default=None, help="the engine's precision (default: nf4 on CUDA, fp32 on CPU)"
    )
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    p.add_argument("--max-new-tokens", type=int, default=DEFAULT_MAX_NEW_TOKENS, help="answer length (%(default)s)")
    p.add_argument("--seed", type=int, default=0, help="random weights and units (%(default)s)")
    p.add_argument("--workdir", type=Path, default=None, help="where the model set is written (default: a temp dir)")
    p.set_defaults(func=_run)
