"""``python -m engine bench``: arguments and the settings they resolve to (``run.py`` does the work)."""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from engine.bench.report import DEFAULT_RESULTS
from engine.bench.settings import DEFAULT_MAX_NEW_TOKENS, DEFAULT_RUNS, QUICK_RUNS, SIZES, BenchSettings
from engine.config import QUANT_MODES


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
    from engine.bench.run import run_bench  # torch and the model code: not for `python -m engine --help`

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
