"""Running pip so that a first install is not minutes of silence, with its full output in a log file.

pip runs without ``-q``; its lines go, unchanged, to the install log (``.venv/omnitalk-install.log``)
and are read as they come for a progress line: the step (``[2/3]``), the time so far, what pip is
doing (resolving, downloading a file with its size, installing N packages) and the packages
counted so far. On a terminal that line is rewritten in place; elsewhere (CI logs) downloads,
the install phase and a heartbeat every ``HEARTBEAT_S`` are printed. With pip 24.1 or newer
(``--progress-bar raw``) downloads also show their percentage. When pip fails, its last lines and
the log's path are printed.

Standard library only (the launcher runs before anything is installed).
"""

from __future__ import annotations

import os
import queue
import re
import subprocess
import threading
import time
import urllib.parse
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from installer.console import StatusLine, format_bytes, format_duration, plural

LOG_NAME = "omnitalk-install.log"
TICK_S = 1.0  # how often the terminal line's clock is refreshed while pip is silent
HEARTBEAT_S = 30.0  # without a terminal: a line at least this often while pip works
FAILURE_TAIL_LINES = 15
# Without a terminal, files from this size on get a line of their own (smaller ones are counted).
LOGGED_DOWNLOAD_MIN_BYTES = 1_000_000
# pip 24.1 added machine-readable download progress ("Progress 123 of 456 [bytes]").
RAW_PROGRESS_PIP = (24, 1)

_SIZE_UNITS = {"B": 1, "kB": 1e3, "KB": 1e3, "MB": 1e6, "GB": 1e9, "KiB": 1024, "MiB": 1024**2, "GiB": 1024**3}
_SIZE = r"\((?P<size>[\d.]+) (?P<unit>[kKMG]i?B|B)\)"
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


@dataclass(frozen=True, slots=True)
class PipEvent:
    """One line of pip output that tells what it is doing."""

    kind: str  # collect, download, metadata, cached, local, progress, install, installed, uninstalled, build, satisfied
    name: str = ""  # a project name, or a file name for downloads
    size: int | None = None  # bytes, where pip said
    done: int | None = None  # progress: bytes so far
    names: tuple[str, ...] = ()  # install / installed
    location: str = ""  # local: the path or file: URL pip named


def _size(match: re.Match[str]) -> int | None:
    if match.group("size") is None:
        return None
    return int(float(match.group("size")) * _SIZE_UNITS[match.group("unit")])


def _file_name(location: str) -> str:
    return urllib.parse.unquote(location.rstrip("/").rsplit("/", 1)[-1])


def _project(spec: str) -> str:
    match = _NAME.match(spec)
    return match.group(0) if match else spec


def parse_pip_line(line: str) -> PipEvent | None:
    """The event a line of ``pip install`` output reports, or None for everything else."""
    text = line.strip()
    if match := re.search(r"Progress (\d+) of (\d+|\?)", text):
        total = match.group(2)
        return PipEvent("progress", done=int(match.group(1)), size=None if total == "?" else int(total))
    if match := re.match(r"Collecting (\S+)", text):
        return PipEvent("collect", _project(match.group(1)))
    if match := re.match(rf"Downloading (\S+)(?: {_SIZE})?", text):
        name = _file_name(match.group(1))
        return PipEvent("metadata" if name.endswith(".metadata") else "download", name, _size(match))
    if match := re.match(rf"Using cached (\S+)(?: {_SIZE})?", text):
        return PipEvent("cached", _file_name(match.group(1)), _size(match))
    if match := re.match(r"(?:Processing|Obtaining) (\S+)", text):
        return PipEvent("local", _file_name(match.group(1)), location=match.group(1))
    if match := re.match(r"Building (?:wheel|editable) for (\S+)", text):
        return PipEvent("build", _project(match.group(1)))
    if text.startswith("Installing collected packages:"):
        names = tuple(n.strip() for n in text.split(":", 1)[1].split(",") if n.strip())
        return PipEvent("install", names=names)
    if text.startswith("Successfully installed "):
        return PipEvent("installed", names=tuple(text.split()[2:]))
    if match := re.match(r"Successfully uninstalled (\S+)", text):
        return PipEvent("uninstalled", match.group(1))
    if match := re.match(r"Requirement already satisfied: (\S+)", text):
        return PipEvent("satisfied", _project(match.group(1)))
    return None


def _local_size(location: str) -> int | None:
    path = Path(urllib.parse.unquote(location.removeprefix("file://")))
    try:
        return path.stat().st_size if path.is_file() else None
    except OSError:
        return None


@dataclass
class PipProgress:
    """What one pip run has done so far, built from its events."""

    packages: set[str] = field(default_factory=set)  # collected, found locally or already satisfied
    downloaded_bytes: int = 0
    downloads: int = 0
    installed: tuple[str, ...] = ()  # "name-version" as pip reports them
    removed: list[str] = field(default_factory=list)  # "name-version" that pip uninstalled
    activity: str = "starting pip"
    _file: str = ""
    file_size: int | None = None  # of the file being fetched, where known

    def update(self, event: PipEvent) -> None:
        if event.kind in ("collect", "satisfied"):
            self.packages.add(event.name.lower())
            self.activity = f"resolving {event.name}" if event.kind == "collect" else "checking installed packages"
        elif event.kind in ("download", "cached", "local"):
            if event.kind == "local":
                self.packages.add(event.name.split("-")[0].lower())
                event = PipEvent("local", event.name, _local_size(event.location))
            self._file, self.file_size = event.name, event.size
            size = f" ({format_bytes(event.size)})" if event.size else ""
            verb = {"download": "downloading", "cached": "using cached", "local": "using"}[event.kind]
            self.activity = f"{verb} {event.name}{size}"
            if event.kind == "download":
                self.downloads += 1
                self.downloaded_bytes += event.size or 0
        elif event.kind == "progress" and event.done is not None:
            total = event.size or self.file_size
            if total:
                self.activity = f"downloading {self._file} {100 * event.done // total}% of {format_bytes(total)}"
        elif event.kind == "build":
            self.activity = f"building {event.name}"
        elif event.kind == "install":
            shown = ", ".join(event.names[-3:])
            more = "... " if len(event.names) > 3 else ""
            self.activity = f"installing {plural(len(event.names), 'package')} ({more}{shown})"
        elif event.kind == "installed":
            self.installed = event.names
            self.activity = "done"
        elif event.kind == "uninstalled":
            self.removed.append(event.name)

    def summary(self) -> str:
        if not self.installed:
            return f"removed {', '.join(self.removed)}" if self.removed else "already up to date"
        downloaded = f", {format_bytes(self.downloaded_bytes)} downloaded" if self.downloaded_bytes else ""
        return f"installed {plural(len(self.installed), 'package')}{downloaded}"


class InstallLog:
    """The full output of every command of one install; the previous install's log is kept as ``.1``."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.exists():
            path.replace(path.with_name(path.name + ".1"))
        self._file = path.open("w", encoding="utf-8")
        self.note(f"OmniTalk install log, {time.strftime('%Y-%m-%d %H:%M:%S')}")

    def note(self, text: str) -> None:
        self._file.write(text.rstrip("\n") + "\n")
        self._file.flush()

    def write(self, line: str) -> None:
        self._file.write(line if line.endswith("\n") else line + "\n")

    def close(self) -> None:
        self._file.close()


class PipFailed(Exception):
    """pip exited with an error; the message names the step, pip's last lines and the log file."""


def pip_version(site_packages: Sequence[Path]) -> tuple[int, int] | None:
    """The installed pip's (major, minor), read from its dist-info folder name (no subprocess)."""
    for folder in site_packages:
        for info in folder.glob("pip-*.dist-info"):
            match = re.match(r"pip-(\d+)\.(\d+)", info.name)
            if match:
                return int(match.group(1)), int(match.group(2))
    return None


Popen = Callable[..., subprocess.Popen]


def run_pip(
    cmd: Sequence[str],
    *,
    step: str,
    log: InstallLog,
    status: StatusLine,
    popen: Popen = subprocess.Popen,
    clock: Callable[[], float] = time.monotonic,
) -> PipProgress:
    """Run one pip command, showing its progress as ``step`` (e.g. "[2/3] torch"); raise PipFailed."""
    log.note(f"\n$ {' '.join(cmd)}")
    env = dict(os.environ, PYTHONUNBUFFERED="1", PYTHONIOENCODING="utf-8")
    proc = popen(
        list(cmd),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        encoding="utf-8",
        errors="replace",
        env=env,
    )
    lines: queue.Queue[str | None] = queue.Queue()

    def pump(stream: TextIO) -> None:
        for line in stream:
            lines.put(line)
        lines.put(None)

    assert proc.stdout is not None
    threading.Thread(target=pump, args=(proc.stdout,), daemon=True).start()
    progress = PipProgress()
    tail: deque[str] = deque(maxlen=FAILURE_TAIL_LINES)
    start = last_printed = clock()

    def line_now() -> str:
        counted = f", {plural(len(progress.packages), 'package')} seen" if progress.packages else ""
        return f"  {step} {format_duration(clock() - start)}  {progress.activity}{counted}"

    try:
        while True:
            try:
                line = lines.get(timeout=TICK_S)
            except queue.Empty:
                line = ""
                if not status.interactive and clock() - last_printed >= HEARTBEAT_S:
                    status.log(line_now())
                    last_printed = clock()
            if line is None:
                break
            if line:
                log.write(line)
                if line.strip():
                    tail.append(line.rstrip())
                event = parse_pip_line(line)
                if event is not None:
                    before = progress.activity
                    progress.update(event)
                    files = ("download", "cached", "local")
                    big = event.kind in files and (progress.file_size or 0) >= LOGGED_DOWNLOAD_MIN_BYTES
                    printable = (big or event.kind in ("install", "build")) and progress.activity != before
                    if not status.interactive and printable:
                        status.log(line_now())
                        last_printed = clock()
            status.show(line_now())
        returncode = proc.wait()
    except KeyboardInterrupt:
        proc.terminate()
        status.clear()
        raise
    status.clear()
    log.note(f"(exit code {returncode} after {format_duration(clock() - start)})")
    if returncode != 0:
        shown = "\n".join(f"  | {text}" for text in tail)
        raise PipFailed(
            f"{step}: pip failed (exit code {returncode}). Its last lines:\n{shown}\nThe full output is in {log.path}"
        )
    status.log(f"  {step} done in {format_duration(clock() - start)}: {progress.summary()}")
    return progress
