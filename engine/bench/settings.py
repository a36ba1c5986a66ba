"""What one benchmark run is asked to do: sizes, repeat counts, and ``BenchSettings`` resolved from
the command line. Shared by ``cli`` (which parses), ``run`` (which measures) and ``sizes``."""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

from engine.config import QuantMode

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
    quant: QuantMode | None  # the engine's model; None: the engine's default for the device
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
