"""A stand-in engine for widget tests: records commands, and emits events from its own thread."""

from __future__ import annotations

import threading
from collections.abc import Callable

from engine.events import Command, Event


class FakeEngine:
    def __init__(self, on_event: Callable[[Event], None]) -> None:
        self.on_event = on_event
        self.commands: list[Command] = []
        self.started = False
        self.stopped = False

    def start(self) -> None:
        self.started = True

    def send(self, command: Command) -> None:
        self.commands.append(command)

    def shutdown(self, timeout_s: float = 10.0) -> None:
        self.stopped = True

    def emit(self, *events: Event) -> None:
        """Deliver events from a worker thread, as the real engine does."""
        thread = threading.Thread(target=lambda: [self.on_event(e) for e in events])
        thread.start()
        thread.join()

    def kinds(self) -> list[str]:
        return [type(c).__name__ for c in self.commands]
