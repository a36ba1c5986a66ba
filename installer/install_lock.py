"""One launcher at a time sets up the environment of a folder.

Started from the menu there is no terminal, so a user who sees nothing for a while (the first
start, or the first after an update, installs for minutes) clicks again; two launchers would then
run pip into the same ``.venv`` at once and can leave it broken. ``ensure_environment`` holds this
lock: a second launcher says that it waits, waits, and then finds everything installed. The lock
is an OS file lock (``flock`` / ``msvcrt.locking``), so a crashed launcher never leaves it held.

Standard library only (the launcher runs before anything is installed).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

POLL_S = 0.5
WAITING = "another OmniTalk launcher is installing in this folder; waiting for it to finish"


def _try_lock(handle: BinaryIO) -> bool:
    if os.name == "nt":
        import msvcrt

        try:
            msvcrt.locking(handle.fileno(), msvcrt.LK_NBLCK, 1)  # type: ignore[attr-defined]
        except OSError:
            return False
        return True
    import fcntl

    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return False
    return True


def _unlock(handle: BinaryIO) -> None:
    if os.name == "nt":
        import msvcrt

        handle.seek(0)
        msvcrt.locking(handle.fileno(), msvcrt.LK_UNLCK, 1)  # type: ignore[attr-defined]
    else:
        import fcntl

        fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


@contextmanager
def install_lock(path: Path, say: Callable[[str], None], poll_s: float = POLL_S) -> Iterator[None]:
    """Hold the lock at ``path`` for the block; if another process holds it, ``say`` so once and wait."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+b") as handle:
        if not _try_lock(handle):
            say(WAITING)
            while not _try_lock(handle):
                time.sleep(poll_s)
        try:
            yield
        finally:
            _unlock(handle)
