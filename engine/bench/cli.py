"""``python -m engine bench``: arguments and the settings they resolve to (``run.py`` does the work)."""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from engine.bench.busy import default_competitors
from engine.bench.report import DEFAULT_RESULTS
from engine.bench.settings import (
    DEFAULT_MAX_NEW_TOKENS,
    DEFAULT_RUNS,
    QUICK_RUNS,
    SIZES,
    BenchSettings,
    _default_device,
)
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


def _library_torch_threads() -> int:
    import torch  # nothing has changed its thread count yet

    return torch.get_num_threads()


def _run_audio(args: argparse.Namespace) -> int:
    from engine.bench.hear import DEFAULT_RUNS as AUDIO_RUNS
    from engine.bench.hear import QUICK_RUNS as AUDIO_QUICK_RUNS
    from engine.bench.hear import HearSettings, run_hear

    runs = args.runs if args.runs is not None else (AUDIO_QUICK_RUNS if args.quick else AUDIO_RUNS)
    if runs < 1:
        raise SystemExit("--runs must be at least 1")
    argv = sys.argv[1:]
    command = "python -m engine " + shlex.join(argv if "bench-audio" in argv else ["bench-audio"])
    settings = HearSettings(
        device=args.device or _default_device(),
        size=args.size,
        runs=runs,
        quick=bool(args.quick),
        busy=args.busy if args.busy is not None else default_competitors(),
        library_torch_threads=_library_torch_threads(),
        pulse=not args.no_pulse,
        max_new_tokens=args.max_new_tokens,
        seed=args.seed,
        out=args.out,
        append=not args.no_append,
        workdir=args.workdir,
        command=command,
    )
    return run_hear(settings)


def _run(args: argparse.Namespace) -> int:
    from engine.bench.run import run_bench  # torch and the model code: not for `python -m engine --help`

    return run_bench(BenchSettings.from_args(args, _command(args)))


def _run_fidelity(args: argparse.Namespace) -> int:
    from engine.bench.fidelity import run_fidelity

    return run_fidelity(args)


def _run_gpu_check(args: argparse.Namespace) -> int:
    from engine.bench.gpu_check import run_gpu_check

    return run_gpu_check(args)


FIDELITY_SIZES = ("tiny", "mid")
GPU_CHECK_BUDGET_S = 420.0
GPU_CHECK_LAYERS = 32
FIDELITY_TOKENS = 16
FIDELITY_QUESTIONS = 5


def register(subparsers: argparse._SubParsersAction) -> None:
    f = subparsers.add_parser(
        "bench-fidelity",
        help="greedy tokens and embeddings of each per-part precision variant vs a full-precision reference",
        description="Loads a random-weight set once per precision variant (lm_head, Whisper, adapter in 4/8/16 bit) "
        "and compares each one's answers to the bench's spoken questions with an fp32 (CPU) or fp16 (CUDA) "
        "reference; appends a dated section to the results file.",
    )
    f.add_argument("--device", choices=("cpu", "cuda"), default=None, help="default: cuda when available")
    f.add_argument("--size", choices=FIDELITY_SIZES, default="mid")
    f.add_argument("--tokens", type=int, default=FIDELITY_TOKENS, help="greedy answer length (%(default)s)")
    f.add_argument("--questions", type=int, default=FIDELITY_QUESTIONS, help="spoken questions (%(default)s)")
    f.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    f.add_argument("--seed", type=int, default=0, help="random weights (%(default)s)")
    f.add_argument("--out", type=Path, default=DEFAULT_RESULTS, help="results file to append to (%(default)s)")
    f.add_argument("--no-append", action="store_true", help="print the section only")
    f.set_defaults(func=_run_fidelity)

    g = subparsers.add_parser(
        "gpu-check",
        help="everything that needs a GPU in one run of a few minutes (bench/gpu_check.sh wraps it)",
        description="Environment, bitsandbytes layers at the 8B's shapes, the tiny model in every precision, a "
        "full-width nf4 set in a fresh process (load, encoder, decode speed, prefill, VRAM vs estimate), out of "
        "memory under a cap, the vocoder's providers, precision fidelity and the engine's first audio; appends a "
        "dated section to the results file. --device cpu is a quick dry run.",
    )
    g.add_argument("--device", choices=("cpu", "cuda"), default=None, help="default: cuda when available")
    g.add_argument("--layers", type=int, default=GPU_CHECK_LAYERS, help="Llama layers of the full-width set")
    g.add_argument("--budget-s", type=float, default=GPU_CHECK_BUDGET_S, help="time for all checks (%(default)s)")
    g.add_argument("--json", type=Path, default=None, help="also write every detail here")
    g.add_argument("--workdir", type=Path, default=None, help="where the sets are written (default: a temp dir)")
    g.add_argument("--out", type=Path, default=DEFAULT_RESULTS, help="results file to append to (%(default)s)")
    g.add_argument("--no-append", action="store_true", help="print the section only")
    g.set_defaults(func=_run_gpu_check)

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
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: the engine's, cpu_threads.py)")
    p.add_argument("--max-new-tokens", type=int, default=DEFAULT_MAX_NEW_TOKENS, help="answer length (%(default)s)")
    p.add_argument("--seed", type=int, default=0, help="random weights and units (%(default)s)")
    p.add_argument("--workdir", type=Path, default=None, help="where the model set is written (default: a temp dir)")
    p.set_defaults(func=_run)

    a = subparsers.add_parser(
        "bench-audio",
        help="what the user hears: first audio through real (PulseAudio) devices, gaps on a busy PC",
        description=(
            "Runs spoken turns through the real engine on the fake sound device and on PulseAudio null sinks "
            "(the question played into a virtual microphone, the speaker's monitor recorded with timestamps), "
            "idle and with CPU-bound processes competing; reports first audio as heard, where it goes stage by "
            "stage, the decode rate in the app vs the model alone, underruns and gaps. Appends a dated section."
        ),
    )
    a.add_argument("--device", choices=("cpu", "cuda"), default=None, help="default: cuda when available")
    a.add_argument("--size", choices=("tiny", "mid"), default="tiny", help="model set (%(default)s)")
    a.add_argument("--runs", type=int, default=None, help="runs per mode (5; --quick: 1)")
    a.add_argument("--quick", action="store_true", help="one question per mode, three modes (the test suite's form)")
    a.add_argument("--busy", type=int, default=None, help="competing processes (default: cores - 1, at least 1)")
    a.add_argument("--no-pulse", action="store_true", help="skip the PulseAudio modes")
    a.add_argument("--out", type=Path, default=DEFAULT_RESULTS, help="results file to append to (%(default)s)")
    a.add_argument("--no-append", action="store_true", help="print the section only")
    a.add_argument("--max-new-tokens", type=int, default=DEFAULT_MAX_NEW_TOKENS, help="answer length (%(default)s)")
    a.add_argument("--seed", type=int, default=0, help="random weights (%(default)s)")
    a.add_argument("--workdir", type=Path, default=None, help="where the model set is written (default: a temp dir)")
    a.set_defaults(func=_run_audio)
