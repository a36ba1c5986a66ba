"""A busy PC on demand: CPU-bound processes competing with the engine for the cores.

Users' PCs are never idle (a browser tab, a compile). The benchmark's busy mode runs one
``while True: pass`` process per core but one (at least one): the engine then shares every core
but one with a program that never sleeps. Each process is stopped by its PID.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Iterator

SPIN = "while True:\n    pass\n"
STOP_TIMEOUT_S = 5.0


def default_competitors() -> int:
    """One per core minus one, and one on a 2-core machine."""
    return max(1, (os.cpu_count() or 1) - 1)


@contextlib.contextmanager
def competing_processes(count: int) -> Iterator[list[int]]:
    """Run ``count`` CPU-bound processes for the duration of the block; yields their PIDs."""
    processes = [
        subprocess.Popen([sys.executable, "-c", SPIN], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
        for _ in range(count)
    ]
    try:
        yield [p.pid for p in processes]
    finally:
        for process in processes:
            process.kill()
        for process in processes:
            process.wait(STOP_TIMEOUT_S)
