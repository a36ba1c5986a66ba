"""The engine's command line: ``python -m engine <command> ...``.

Each feature package contributes its commands through a ``register(subparsers)`` function in its
``cli`` module; this file only collects them, so adding a command never touches the others.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

from engine.errors import EngineError, Reason
from engine.version import __version__

# Modules with a `register(subparsers)` function. Missing ones are skipped so a partial checkout
# (or a platform without an optional backend) still has a working CLI.
COMMAND_MODULES = (
    "engine.model.cli",
    "engine.vocoder.cli",
    "engine.bench.cli",
    "engine.finetune.cli",
)

logger = logging.getLogger(__name__)

# The command line's own advice for the cases where it has an option to name (the GUI names its
# buttons in app/error_words.py; the engine's ``fix`` names neither: engine/errors.py).
CLI_FIXES: dict[Reason, str] = {
    Reason.ENCODER_NOT_FOUND: "Pass --speech-encoder PATH (Whisper large-v3.pt or a whisper-large-v3 folder).",
    Reason.CUDA_UNAVAILABLE: "Pass --device cpu (slow), or install the NVIDIA driver and a CUDA build of PyTorch.",
    Reason.BF16_UNSUPPORTED: "Pass --quant fp16 or --quant nf4.",
    Reason.MEMORY_SHORT: "Pass --quant nf4 (the smallest), or a smaller --max-new-tokens.",
    Reason.VOCODER_GPU_UNAVAILABLE: "Pass --device cpu.",
}


def cli_error_text(exc: EngineError) -> str:
    """``error (kind): message [file: path] Fix: ...`` with the CLI's own advice where it has one."""
    fix = CLI_FIXES.get(exc.reason) if exc.reason is not None else None
    fix = fix or exc.fix
    where = f" [file: {exc.path}]" if exc.path is not None else ""
    return f"error ({exc.kind}): {exc.message}{where}" + (f" Fix: {fix}" if fix else "")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m engine",
        description="OmniTalk engine: LLaMA-Omni speech-in/speech-out, usable without the GUI.",
    )
    parser.add_argument("--version", action="version", version=f"OmniTalk engine {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages to stderr")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name is not None and name.startswith(exc.name):
                continue  # that feature is not part of this build
            raise
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if not getattr(args, "command", None):
        parser.print_help()
        return 0
    try:
        return int(args.func(args) or 0)
    except EngineError as exc:
        print(cli_error_text(exc), file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("cancelled", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
