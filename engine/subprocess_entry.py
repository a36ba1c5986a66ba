"""How OmniTalk starts a child Python that runs engine code, frozen or not: the one place that decides.

Child processes keep heavy or risky work away from the app (the vocoder's ONNX export, fine-tuning:
``python -m engine finetune ...``). Started from a checkout or an installed package, the child is
``sys.executable -m MODULE ARGS`` with the folder holding ``engine`` on ``PYTHONPATH`` (so it also
works when the app was started as ``python main.py`` from elsewhere). In a PyInstaller build
``sys.executable`` is OmniTalk's own program, which has no ``-m``: the child is ``OmniTalk
--engine-child MODULE ARGS`` and ``main.py`` hands such a command line to ``run_child`` before it
parses anything else, which runs MODULE as ``__main__`` (as ``-m`` would). Both ways the module
sees ``sys.argv[1:] == ARGS``.

Use ``child_command`` + ``child_env`` for every engine child; ``main.py`` calls ``run_child``.
"""

from __future__ import annotations

import os
import runpy
import sys
from collections.abc import Sequence
from pathlib import Path

CHILD_FLAG = "--engine-child"
PACKAGE_ROOT = Path(__file__).resolve().parent.parent  # the folder holding the `engine` package


def is_frozen() -> bool:
    """True in a PyInstaller build (``sys.frozen`` is set by its bootloader)."""
    return bool(getattr(sys, "frozen", False))


def child_command(module: str, args: Sequence[str] = (), *, python: str | None = None) -> list[str]:
    """The command line that runs ``module`` (e.g. ``"engine"``, ``"engine.vocoder.export_process"``)
    with ``args`` in a child process; ``python`` replaces the interpreter (tests use a fake one)."""
    if python is None and is_frozen():
        return [sys.executable, CHILD_FLAG, module, *args]
    return [python or sys.executable, "-m", module, *args]


def child_env(base: dict[str, str] | None = None) -> dict[str, str]:
    """The child's environment: ours, with the engine importable and unbuffered output (progress
    lines must arrive as they are written)."""
    env = dict(os.environ if base is None else base)
    if not is_frozen():
        paths = [str(PACKAGE_ROOT)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else [])
        env["PYTHONPATH"] = os.pathsep.join(paths)
    env["PYTHONUNBUFFERED"] = "1"
    return env


def run_child(argv: Sequence[str]) -> int | None:
    """If ``argv`` (without the program name) is a child command line, run it and return its exit
    code; otherwise None (an ordinary start of the app)."""
    if not argv or argv[0] != CHILD_FLAG:
        return None
    if len(argv) < 2:
        print(f"usage: {CHILD_FLAG} MODULE [ARGS...]", file=sys.stderr)
        return 2
    module, args = argv[1], list(argv[2:])
    sys.argv = [module, *args]
    try:
        runpy.run_module(module, run_name="__main__", alter_sys=True)
    except SystemExit as exc:  # the module's sys.exit(main())
        code = exc.code
        if code is None or isinstance(code, int):
            return code or 0
        print(code, file=sys.stderr)
        return 1
    return 0
