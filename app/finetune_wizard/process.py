"""The fine-tuning subprocess (``python -m engine finetune check|run``) as Qt signals.

Owner: the wizard page that starts it. QProcess reads the child's stdout in the UI thread's event
loop, a few lines at a time, so the window never waits on it; each JSON line becomes ``event``.
stderr carries the same events in words: it goes to the log, never to the user (no tracebacks on a
page). ``finished(code, error)`` comes once, with the child's exit code and its last ``error``
event (None if it sent none).

Stopping: :meth:`stop` sends SIGTERM, which the child turns into "checkpoint, then exit 4"
(engine/finetune/cli.py); if it has not exited after ``grace_ms`` it is killed. On Windows
QProcess.terminate() cannot reach a console child, so there the kill after the grace time is what
stops it (the last checkpoint on disk still allows Resume).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from typing import Any

from PySide6.QtCore import QObject, QProcess, QProcessEnvironment, QTimer, Signal

from engine.subprocess_entry import child_command, child_env

logger = logging.getLogger(__name__)

STOP_GRACE_MS = 30_000  # a checkpoint of a large adapter takes seconds; then kill
CRASH_EXIT_CODE = -1  # finished() code when the child crashed or could not start
KILL_WAIT_MS = 2_000


class FinetuneProcess(QObject):
    received = Signal(dict)  # one JSON line (an event) from the child
    finished = Signal(int, object)  # exit code, the last "error" event or None

    def __init__(self, parent: QObject | None = None, *, python: str | None = None) -> None:
        super().__init__(parent)
        self._python = python
        self._process: QProcess | None = None
        self._buffer = b""
        self._last_error: dict[str, Any] | None = None
        self._kill_timer = QTimer(self)
        self._kill_timer.setSingleShot(True)
        self._kill_timer.timeout.connect(self._kill)
        self.stopping = False

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.state() != QProcess.ProcessState.NotRunning

    def start(self, args: Sequence[str]) -> None:
        """``args`` after ``python -m engine``, e.g. ``["finetune", "run", "--model", ...]``. A run
        still going (a check left with Back, say) is killed first: its results are not wanted."""
        if self._process is not None:
            old, self._process = self._process, None
            for signal in (old.readyReadStandardOutput, old.readyReadStandardError, old.finished, old.errorOccurred):
                signal.disconnect()
            old.kill()
            old.waitForFinished(KILL_WAIT_MS)
            old.deleteLater()
        self._kill_timer.stop()
        self._buffer = b""
        self._last_error = None
        self.stopping = False
        process = QProcess(self)
        environment = QProcessEnvironment()
        for key, value in child_env().items():
            environment.insert(key, value)
        process.setProcessEnvironment(environment)
        command = child_command("engine", list(args), python=self._python)
        process.readyReadStandardOutput.connect(self._read_stdout)
        process.readyReadStandardError.connect(self._read_stderr)
        process.finished.connect(self._on_finished)
        process.errorOccurred.connect(self._on_error)
        self._process = process
        logger.info("Starting %s", " ".join(command))
        process.start(command[0], command[1:])

    def stop(self, grace_ms: int = STOP_GRACE_MS) -> None:
        """Ask the child to checkpoint and stop; kill it if it has not after ``grace_ms``."""
        if not self.running or self._process is None:
            return
        self.stopping = True
        self._process.terminate()
        self._kill_timer.start(grace_ms)

    def wait_stopped(self, timeout_ms: int) -> bool:
        """Block until the child has exited (app shutdown only; the UI is going away anyway)."""
        if self._process is None:
            return True
        return self._process.state() == QProcess.ProcessState.NotRunning or self._process.waitForFinished(timeout_ms)

    def _kill(self) -> None:
        if self.running and self._process is not None:
            logger.warning("The fine-tuning process did not stop in time: killing it")
            self._process.kill()

    def _read_stdout(self) -> None:
        assert self._process is not None
        self._buffer += bytes(self._process.readAllStandardOutput().data())
        *lines, self._buffer = self._buffer.split(b"\n")
        for line in lines:
            self._handle_line(line)

    def _handle_line(self, line: bytes) -> None:
        text = line.decode("utf-8", errors="replace").strip()
        if not text:
            return
        try:
            event = json.loads(text)
        except ValueError:
            logger.info("finetune stdout: %s", text)
            return
        if not isinstance(event, dict):
            return
        if event.get("event") == "error":
            self._last_error = event
        self.received.emit(event)

    def _read_stderr(self) -> None:
        assert self._process is not None
        text = bytes(self._process.readAllStandardError().data()).decode("utf-8", errors="replace")
        for line in text.splitlines():
            if line.strip():
                logger.info("finetune: %s", line)

    def _on_error(self, error: QProcess.ProcessError) -> None:
        if error == QProcess.ProcessError.FailedToStart:
            logger.error("The fine-tuning process could not start: %s", self._process and self._process.errorString())
            self._last_error = {
                "event": "error",
                "kind": "internal",
                "message": "The training program could not be started.",
                "fix": "Check the installation (Help → Copy diagnostic report), then try again.",
            }
            self._finish(CRASH_EXIT_CODE)

    def _on_finished(self, code: int, status: QProcess.ExitStatus) -> None:
        if self._process is not None:
            self._read_stdout()
            if self._buffer:
                self._handle_line(self._buffer)
                self._buffer = b""
        crashed = status == QProcess.ExitStatus.CrashExit
        self._finish(CRASH_EXIT_CODE if crashed else code)

    def _finish(self, code: int) -> None:
        self._kill_timer.stop()
        process, self._process = self._process, None
        if process is not None:
            process.deleteLater()
        logger.info("The fine-tuning process ended with code %s", code)
        self.finished.emit(code, self._last_error)
