"""A thread-safe record of engine events with waiting helpers: the engine's ``on_event`` callback
for the benchmark (``latency.BenchEventLog``) and the tests (``tests/engine/engine_fixtures``)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import TypeVar

from engine.events import Event

E = TypeVar("E")


class EventLog:
    """Records every event; ``wait_for`` blocks until a matching one arrives (or raises on timeout)."""

    def __init__(self) -> None:
        self.events: list[Event] = []
        self._cond = threading.Condition()

    def __call__(self, event: Event) -> None:
        with self._cond:
            self.events.append(event)
            self._cond.notify_all()

    def of(self, kind: type[E]) -> list[E]:
        with self._cond:
            return [e for e in self.events if isinstance(e, kind)]

    def mark(self) -> int:
        """A position in the log: pass it as ``since`` to wait only for later events."""
        with self._cond:
            return len(self.events)

    def wait_for(
        self,
        kind: type[E],
        predicate: Callable[[E], bool] = lambda e: True,
        timeout_s: float = 30.0,
        since: int = 0,
    ) -> E:
        deadline = time.monotonic() + timeout_s
        with self._cond:
            while True:
                for event in self.events[since:]:
                    self._check(event, kind)
                    if isinstance(event, kind) and predicate(event):
                        return event
                left = deadline - time.monotonic()
                if left <= 0:
                    raise self._timed_out(kind, timeout_s)
                self._cond.wait(left)

    def _check(self, event: Event, waiting_for: type) -> None:
        """Called for each event a wait looks at; raise to end the wait early."""

    def _timed_out(self, kind: type, timeout_s: float) -> Exception:
        names = [type(e).__name__ for e in self.events]
        return AssertionError(f"no {kind.__name__} within {timeout_s} s; got {names}")
