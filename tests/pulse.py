"""A private PulseAudio server with null sinks for tests (the server itself: engine/bench/pulse.py).

``pulse_server`` (module scope) starts one, points this process at it (``PULSE_SERVER``),
re-scans PortAudio, and stops it by PID afterwards. Without the ``pulseaudio`` binaries the tests
are skipped with the reason, except under ``CI=true``, where that is a failure.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest

from engine.bench.pulse import APT_HINT, PulseServer, start_pulse_server
from engine.bench.pulse import PULSE_TOOLS as BENCH_PULSE_TOOLS
from engine.errors import AudioDeviceError

PULSE_TOOLS = (*BENCH_PULSE_TOOLS, "parecord")


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() == "true"


def require_tools(*names: str) -> None:
    """Skip (or fail under CI=true) unless every command in ``names`` is on PATH."""
    missing = [name for name in names if shutil.which(name) is None]
    if missing:
        reason = f"needs {', '.join(missing)} ({APT_HINT})"
        if in_ci():
            pytest.fail(reason)
        pytest.skip(reason)


def require_portaudio() -> None:
    try:
        import sounddevice  # noqa: F401
    except OSError as exc:
        reason = f"PortAudio cannot be loaded: {exc} ({APT_HINT})"
        if in_ci():
            pytest.fail(reason)
        pytest.skip(reason)


def refresh_portaudio() -> None:
    """Re-scan PortAudio so it sees the current PULSE_SERVER (no stream may be open)."""
    from engine.audio.devices import refresh_devices

    try:
        refresh_devices()
    except AudioDeviceError as exc:  # a test leaked an open stream; say so instead of hiding it
        warnings.warn(f"PortAudio not refreshed: {exc}", stacklevel=2)


@pytest.fixture(scope="module")
def pulse_server() -> Iterator[PulseServer]:
    """A running private PulseAudio server that this process (and PortAudio) uses."""
    require_tools(*PULSE_TOOLS)
    require_portaudio()
    root = Path(tempfile.mkdtemp(prefix="omnitalk-pa-"))
    server = start_pulse_server(root)
    try:
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("PULSE_SERVER", server.address)
            refresh_portaudio()
            yield server
    finally:
        server.stop()
        refresh_portaudio()
        shutil.rmtree(root, ignore_errors=True)

