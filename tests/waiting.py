"""Waiting on conditions in tests (never sleep-then-assert)."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

POLL_S = 0.01


def wait_until(condition: Callable[[], object], timeout_s: float, what: str) -> None:
    """Poll ``condition()`` until true; fail the test with ``what`` after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(POLL_S)
