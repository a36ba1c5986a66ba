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

from engine.cli_words import cli_error_text
from engine.errors import EngineError
from engine.gpu import use_pci_bus_order
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
    # Before any command starts CUDA: cuda:N must be the GPU the driver (and the app's settings) call N.
    use_pci_bus_order()
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
