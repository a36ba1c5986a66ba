"""OmniTalk entry point: command line, logging, then the Qt application.

``--version`` and ``--help`` answer without loading Qt or torch, so they are instant.
"""

from __future__ import annotations

import argparse
import logging
import logging.handlers
import multiprocessing
import os
import sys
from collections.abc import Sequence
from pathlib import Path

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
    parser.add_argument("--settings", type=Path, metavar="FILE", help="use this settings file")
    parser.add_argument(
        "--save-answers", type=Path, metavar="DIR", help="also save each spoken answer there as a WAV file"
    )
    parser.add_argument("--debug", action="store_true", help="log debug messages")
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
    console = logging.StreamHandler()
    console.setLevel(logging.DEBUG if debug else logging.WARNING)
    console.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    root.addHandler(console)
    _logging_configured = True
    return path


def main(argv: Sequence[str] | None = None) -> int:
    # GPU numbers from the driver (settings) must match torch's on PCs with several GPUs.
    os.environ.setdefault("CUDA_DEVICE_ORDER", "PCI_BUS_ID")
    args = build_parser().parse_args(argv)
    log_path = setup_logging(args.debug)
    logging.getLogger(__name__).info("OmniTalk %s starting (log: %s)", __version__, log_path)
    # Worker processes (fine-tuning) must not inherit Qt state; frozen builds need freeze_support.
    multiprocessing.freeze_support()
    multiprocessing.set_start_method("spawn", force=True)

    from app.application import run

    return run(args)


if __name__ == "__main__":
    sys.exit(main())
