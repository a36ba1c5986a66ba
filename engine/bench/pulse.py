"""Real sound devices without a sound card: a private PulseAudio server with null sinks.

Devices (what PortAudio's ALSA ``default``/``pulse`` devices see while ``PULSE_SERVER`` points here):

- ``spk``: the default sink (the "speaker"); what was played is heard on ``spk.monitor``;
- ``micfeed``: a sink to play speech into (:meth:`PulseServer.speak`, ``paplay -d micfeed``);
- ``mic``: the default source, a remap of ``micfeed.monitor`` (the "microphone").

:class:`SpeakerMonitor` records ``spk.monitor`` with ``parec`` and timestamps it: the null sink
plays in real time, so the recording's samples map to ``time.perf_counter()`` through the earliest
arrival of each block (arrivals are only ever late). That is when the user would have heard each
sample, to within the monitor's own 5 ms fragment.

Used by the benchmark's real-device mode (``python -m engine bench-audio``) and by the tests
(``tests/pulse.py`` wraps :func:`start_pulse_server` in a fixture). Every process started here is
stopped by its PID.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

from engine.audio.resample import MODEL_SAMPLE_RATE_HZ
from engine.errors import AudioDeviceError

PULSE_TOOLS = ("pulseaudio", "pactl", "paplay", "parec")
APT_HINT = "apt-get install pulseaudio pulseaudio-utils libportaudio2 espeak-ng sox"
SERVER_START_TIMEOUT_S = 15.0
SERVER_STOP_TIMEOUT_S = 5.0
SPEAK_TIMEOUT_S = 120.0
MONITOR_FRAGMENT_MS = 5  # parec's requested latency: the monitor's timestamps are this fine
MONITOR_READ_BYTES = 4096
MONITOR_AUDIO = "monitor.f32"
MONITOR_TIMES = "monitor.times"
_POLL_S = 0.05
_FLOAT_BYTES = 4

_CONFIG = """\
load-module module-native-protocol-unix auth-anonymous=1 socket={socket}
load-module module-null-sink sink_name=spk sink_properties=device.description=FakeSpeaker
load-module module-null-sink sink_name=micfeed sink_properties=device.description=MicFeed
load-module module-remap-source source_name=mic master=micfeed.monitor source_properties=device.description=FakeMic
set-default-sink spk
set-default-source mic
"""


def stop_process(process: subprocess.Popen[bytes]) -> None:
    """Terminate ``process`` (by its PID), kill it if it does not end in time, and wait for it."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=SERVER_STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=SERVER_STOP_TIMEOUT_S)


def missing_tools(names: tuple[str, ...] = PULSE_TOOLS) -> list[str]:
    return [name for name in names if shutil.which(name) is None]


@dataclass(frozen=True, slots=True)
class PulseServer:
    process: subprocess.Popen[bytes]
    root: Path
    address: str  # value for PULSE_SERVER, e.g. "unix:/tmp/omnitalk-pa-x/native"

    @property
    def pid(self) -> int:
        return self.process.pid

    def env(self) -> dict[str, str]:
        """Environment for pactl/paplay/parec subprocesses talking to this server."""
        return {**os.environ, "PULSE_SERVER": self.address}

    def log_tail(self, n_chars: int = 2000) -> str:
        try:
            return (self.root / "pulseaudio.log").read_text(errors="replace")[-n_chars:]
        except OSError:
            return ""

    def speak(self, wav: Path) -> None:
        """Play ``wav`` into the virtual microphone; returns once it has been played (real time)."""
        subprocess.run(["paplay", "-d", "micfeed", str(wav)], env=self.env(), check=True, timeout=SPEAK_TIMEOUT_S)

    def stop(self) -> None:
        """Terminate this server's process (by its PID) and wait for it."""
        stop_process(self.process)


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


def use_pulse_server(server: PulseServer) -> None:
    """Point this process's PortAudio at ``server`` (no stream may be open)."""
    from engine.audio.devices import refresh_devices

    os.environ["PULSE_SERVER"] = server.address
    refresh_devices()


def best_correlation(reference: np.ndarray, recorded: np.ndarray) -> tuple[float, int]:
    """Max normalised cross-correlation of ``reference`` inside ``recorded`` and its lag (samples):
    where a known sound (an answer's first half second) starts in a recording of the speaker."""
    n = reference.shape[0] + recorded.shape[0] - 1
    size = 1 << (n - 1).bit_length()
    xc = np.fft.irfft(np.fft.rfft(recorded, size) * np.conj(np.fft.rfft(reference, size)), size)
    xc = xc[: recorded.shape[0]]  # lags 0 .. len(recorded)-1: reference starting inside recorded
    lag = int(np.argmax(xc))
    segment = recorded[lag : lag + reference.shape[0]]
    ref = reference[: segment.shape[0]]
    denom = float(np.linalg.norm(ref) * np.linalg.norm(segment))
    return (float(np.dot(ref, segment)) / denom if denom else 0.0), lag


def write_wav16k(path: Path, audio: np.ndarray) -> Path:
    """float32 16 kHz mono -> a 16-bit WAV that ``paplay`` plays."""
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), np.clip(audio, -1.0, 1.0), MODEL_SAMPLE_RATE_HZ, subtype="PCM_16")
    return path


class SpeakerMonitor:
    """``parec`` on ``spk.monitor`` at 16 kHz mono, every sample timestamped (see the module docstring).

    The recording runs in a child process (``python -m engine.bench.pulse --monitor FOLDER``) that
    appends the samples and, per block, ``perf_counter() samples-so-far`` to two files: a reader
    thread in the measured process would wait for its GIL, and its timestamps would be late by
    whatever the engine was doing. ``perf_counter`` is the system-wide monotonic clock, the same in
    both processes.
    """

    def __init__(self, server: PulseServer, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self._audio_path = folder / MONITOR_AUDIO
        self._times_path = folder / MONITOR_TIMES
        for path in (self._audio_path, self._times_path):
            path.unlink(missing_ok=True)
        self._process = subprocess.Popen(
            [sys.executable, "-m", "engine.bench.pulse", "--monitor", str(folder)],
            stdin=subprocess.DEVNULL,
            env=server.env(),
        )

    def wait_started(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while self.samples == 0:
            if self._process.poll() is not None or time.monotonic() > deadline:
                raise AudioDeviceError("The speaker monitor (parec) delivered nothing.")
            time.sleep(_POLL_S)

    @property
    def samples(self) -> int:
        try:
            return self._audio_path.stat().st_size // _FLOAT_BYTES
        except FileNotFoundError:
            return 0

    def _offset_s(self) -> float:
        """perf_counter of sample 0: the earliest arrival of any block minus its samples' duration."""
        rows = np.loadtxt(self._times_path, ndmin=2) if self._times_path.exists() else np.zeros((0, 2))
        if rows.shape[0] == 0:
            raise AudioDeviceError("The speaker monitor has recorded nothing yet.")
        return float(np.min(rows[:, 0] - rows[:, 1] / MODEL_SAMPLE_RATE_HZ))

    def index_at(self, t: float) -> int:
        """The sample the speaker played at ``perf_counter`` time ``t`` (clamped to what was recorded)."""
        return int(min(max(0.0, (t - self._offset_s()) * MODEL_SAMPLE_RATE_HZ), self.samples))

    def time_of(self, index: int) -> float:
        return self._offset_s() + index / MODEL_SAMPLE_RATE_HZ

    def audio(self, start: int, end: int) -> np.ndarray:
        """Recorded samples ``start:end``: float32 (n,) at 16 kHz."""
        count = max(0, min(end, self.samples) - start)
        return np.fromfile(self._audio_path, dtype=np.float32, count=count, offset=start * _FLOAT_BYTES)

    def stop(self) -> None:
        stop_process(self._process)


def _record_monitor(folder: Path) -> int:
    """The monitor child: run parec, append its samples and their arrival times until terminated."""
    parec = subprocess.Popen(
        [
            "parec",
            "-d",
            "spk.monitor",
            f"--rate={MODEL_SAMPLE_RATE_HZ}",
            "--channels=1",
            "--format=float32le",
            f"--latency-msec={MONITOR_FRAGMENT_MS}",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )

    def stop(signum: int, frame: object) -> None:
        parec.terminate()
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, stop)
    stream = parec.stdout
    assert stream is not None
    received = 0
    with open(folder / MONITOR_AUDIO, "ab", buffering=0) as audio, open(folder / MONITOR_TIMES, "a") as times:
        while chunk := stream.read1(MONITOR_READ_BYTES):  # type: ignore[attr-defined]
            arrived = time.perf_counter()
            audio.write(chunk)
            received += len(chunk)
            times.write(f"{arrived:.6f} {received // _FLOAT_BYTES}\n")
            times.flush()
    return parec.wait()


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--monitor":
        sys.exit(_record_monitor(Path(sys.argv[2])))
    sys.exit("usage: python -m engine.bench.pulse --monitor FOLDER")
