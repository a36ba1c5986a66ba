"""A private PulseAudio server with null sinks: real sounddevice streams without a sound card.

Devices (what a test sees through PortAudio's ALSA ``default``/``pulse`` devices):

- ``spk``: the default sink (our "speaker"); record what was played from ``spk.monitor``;
- ``micfeed``: a sink to play test speech into (``paplay -d micfeed q.wav``);
- ``mic``: the default source, a remap of ``micfeed.monitor`` (our "microphone").

``pulse_server`` (module scope) starts one, points this process at it (``PULSE_SERVER``),
re-scans PortAudio, and stops it by PID afterwards. Without the ``pulseaudio`` binaries the tests
are skipped with the reason, except under ``CI=true``, where that is a failure.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from engine.errors import AudioDeviceError

PULSE_TOOLS = ("pulseaudio", "pactl", "paplay", "parecord")
APT_HINT = "apt-get install pulseaudio pulseaudio-utils libportaudio2 espeak-ng sox"
SERVER_START_TIMEOUT_S = 15.0
SERVER_STOP_TIMEOUT_S = 5.0
_POLL_S = 0.05

_CONFIG = """\
load-module module-native-protocol-unix auth-anonymous=1 socket={socket}
load-module module-null-sink sink_name=spk sink_properties=device.description=FakeSpeaker
load-module module-null-sink sink_name=micfeed sink_properties=device.description=MicFeed
load-module module-remap-source source_name=mic master=micfeed.monitor source_properties=device.description=FakeMic
set-default-sink spk
set-default-source mic
"""


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


@dataclass(frozen=True, slots=True)
class PulseServer:
    process: subprocess.Popen[bytes]
    root: Path
    address: str  # value for PULSE_SERVER, e.g. "unix:/tmp/omnitalk-pa-x/native"

    @property
    def pid(self) -> int:
        return self.process.pid

    def env(self) -> dict[str, str]:
        """Environment for pactl/paplay/parecord subprocesses talking to this server."""
        return {**os.environ, "PULSE_SERVER": self.address}

    def log_tail(self, n_chars: int = 2000) -> str:
        try:
            return (self.root / "pulseaudio.log").read_text(errors="replace")[-n_chars:]
        except OSError:
            return ""

    def stop(self) -> None:
        """Terminate this server's process (by its PID) and wait for it."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=SERVER_STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=SERVER_STOP_TIMEOUT_S)


def start_pulse_server(root: Path) -> PulseServer:
    """Start a private server in ``root`` (a short path: unix sockets allow ~100 characters)."""
    (root / "run").mkdir(parents=True, exist_ok=True)
    (root / "home").mkdir(parents=True, exist_ok=True)
    socket = root / "native"
    config = root / "server.pa"
    config.write_text(_CONFIG.format(socket=socket))
    env = {k: v for k, v in os.environ.items() if k != "PULSE_SERVER"}
    env.update(PULSE_RUNTIME_PATH=str(root / "run"), HOME=str(root / "home"))
    with open(root / "pulseaudio.log", "wb") as log:
        process = subprocess.Popen(
            [
                "pulseaudio",
                "-n",
                "-F",
                str(config),
                "--daemonize=no",
                "--exit-idle-time=-1",
                "--use-pid-file=no",
                "--disallow-exit",
            ],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
    server = PulseServer(process=process, root=root, address=f"unix:{socket}")
    deadline = time.monotonic() + SERVER_START_TIMEOUT_S
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"pulseaudio exited with {process.returncode}:\n{server.log_tail()}")
        ready = subprocess.run(["pactl", "info"], env=server.env(), capture_output=True, timeout=SERVER_START_TIMEOUT_S)
        if ready.returncode == 0 and b"Default Source: mic" in ready.stdout:
            return server
        if time.monotonic() > deadline:
            server.stop()
            raise RuntimeError(f"pulseaudio did not come up in {SERVER_START_TIMEOUT_S} s:\n{server.log_tail()}")
        time.sleep(_POLL_S)


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

