"""OmniTalk entry point: command line, logging, then the Qt application.

``--version`` and ``--help`` answer without loading Qt or torch, so they are instant.
``--self-check`` checks the installation and prints a report (``app/self_check.py``).
The same file is the frozen build's entry (``installer/build.py``): there it also starts the
engine's child processes (``engine/subprocess_entry.py``) and multiprocessing's workers, so both
are dispatched before anything else runs.
"""

from __future__ import annotations

import argparse
import logging
import logging.handlers
import multiprocessing
import sys
from collections.abc import Sequence
from pathlib import Path

from engine.gpu import use_pci_bus_order
from engine.subprocess_entry import run_child
from engine.version import __version__

LOG_FILE_NAME = "omnitalk.log"
LOG_MAX_BYTES = 2 * 1024 * 1024
LOG_BACKUPS = 5

_logging_configured = False


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="omnitalk",
        description="OmniTalk: a local push-to-talk voice assistant. Hold the talk key, speak, let go.",
    )
    parser.add_argument("--version", action="version", version=f"OmniTalk {__version__}")
    parser.add_argument("--model", type=Path, metavar="DIR", help="LLaMA-Omni model folder to load at start")
    parser.add_argument(
        "--speech-encoder", type=Path, metavar="PATH", help="Whisper large-v3 encoder (.pt or folder)"
    )
    parser.add_argument("--vocoder", type=Path, metavar="DIR", help="unit HiFi-GAN vocoder folder")
    parser.add_argument(
        "--adapter", type=Path, metavar="DIR", help="fine-tuned adapter folder to use on top of the model"
    )
    parser.add_argument("--settings", type=Path, metavar="FILE", help="use this settings file")
    parser.add_argument(
        "--save-answers", type=Path, metavar="DIR", help="also save each spoken answer there as a WAV file"
    )
    parser.add_argument("--debug", action="store_true", help="log debug messages")
    parser.add_argument(
        "--self-check",
        action="store_true",
        help="check the installation (libraries, window, one turn on a tiny built-in model), print a report, exit",
    )
    return parser


def setup_logging(debug: bool = False) -> Path:
    """Configure logging once: a rotating file in the user log folder, warnings also to stderr."""
    global _logging_configured
    from engine.paths import log_dir

    path = log_dir() / LOG_FILE_NAME
    if _logging_configured:
        return path
    root = logging.getLogger()
    root.setLevel(logging.DEBUG if debug else logging.INFO)
    file_handler = logging.handlers.RotatingFileHandler(
        path, maxBytes=LOG_MAX_BYTES, backupCount=LOG_BACKUPS, encoding="utf-8"
    )
    file_handler.setFormatter(
        logging.Formatter("%(asctime)s %(levelname)s [%(threadName)s] %(name)s: %(message)s")
    )
    root.addHandler(file_handler)
    if sys.stderr is not None:  # a windowed build (pythonw, the frozen app on Windows) has no console
        console = logging.StreamHandler()
        console.setLevel(logging.DEBUG if debug else logging.WARNING)
        console.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
        root.addHandler(console)
    _logging_configured = True
    return path


def main(argv: Sequence[str] | None = None) -> int:
    # A frozen build is started again as multiprocessing's workers and as the engine's children
    # (vocoder export, fine-tuning): those command lines are not ours to parse.
    multiprocessing.freeze_support()
    argv = list(sys.argv[1:] if argv is None else argv)
    child_code = run_child(argv)
    if child_code is not None:
        return child_code
    # GPU numbers from the driver (settings) must match torch's on PCs with several GPUs.
    use_pci_bus_order()
    args = build_parser().parse_args(argv)
    log_path = setup_logging(args.debug)
    logging.getLogger(__name__).info("OmniTalk %s starting (log: %s)", __version__, log_path)
    # Worker processes must not inherit Qt state.
    multiprocessing.set_start_method("spawn", force=True)
    if args.self_check:
        from app.self_check import main as self_check

        return self_check()
    # Qt aborts the process when its platform plugin cannot load, with a hint that is often wrong and
    # nothing in our log: name the real missing library (or display) first.
    from installer.qt_platform import platform_problem

    problem = platform_problem()
    if problem is not None:
        logging.getLogger(__name__).error("OmniTalk cannot open its window. %s", problem)
        return 1

    from app.application import run

    return run(args)


if __name__ == "__main__":
    sys.exit(main())
