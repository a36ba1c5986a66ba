"""What the launcher prints: ``[omnitalk]`` messages and one live status line on a terminal.

Standard library only (the launcher runs before anything is installed).
"""

from __future__ import annotations

import shutil
import sys
from typing import TextIO

PREFIX = "[omnitalk]"


def say(message: str, stream: TextIO | None = None) -> None:
    """One launcher message; every line of a multi-line message is indented under the prefix."""
    out = stream or sys.stdout
    first, *rest = message.splitlines() or [""]
    text = "\n".join([f"{PREFIX} {first}", *(f"{' ' * len(PREFIX)} {line}" for line in rest)])
    print(text, file=out, flush=True)


def format_duration(seconds: float) -> str:
    """``75.2`` -> ``"1m15s"``; under a minute ``"42s"``."""
    whole = int(seconds)
    if whole < 60:
        return f"{whole}s"
    return f"{whole // 60}m{whole % 60:02d}s"


def plural(count: int, noun: str) -> str:
    """``plural(1, "package")`` -> ``"1 package"``; ``plural(3, "package")`` -> ``"3 packages"``."""
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


def format_bytes(count: float) -> str:
    """``1536000`` -> ``"1.5 MB"`` (decimal units, as pip prints them)."""
    for unit in ("B", "kB", "MB"):
        if count < 1000:
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1000
    return f"{count:.2f} GB"


class StatusLine:
    """A line that is rewritten in place on a terminal; elsewhere (CI logs, pipes) lines are printed.

    ``show`` replaces the live line (terminal only); ``log`` prints a permanent line above it.
    """

    def __init__(self, stream: TextIO | None = None, interactive: bool | None = None) -> None:
        self._stream = stream or sys.stdout
        self.interactive = self._stream.isatty() if interactive is None else interactive
        self._width = 0

    def show(self, text: str) -> None:
        if not self.interactive:
            return
        columns = max(20, shutil.get_terminal_size((100, 20)).columns - 1)
        text = text if len(text) <= columns else text[: columns - 3] + "..."
        # Spaces rather than an ANSI erase so that old Windows consoles render it too.
        self._stream.write("\r" + text.ljust(max(self._width, len(text))))
        self._stream.flush()
        self._width = len(text)

    def clear(self) -> None:
        if self.interactive and self._width:
            self._stream.write("\r" + " " * self._width + "\r")
            self._stream.flush()
            self._width = 0

    def log(self, text: str) -> None:
        self.clear()
        print(text, file=self._stream, flush=True)
