"""The sound-device seam: what capture and playback need from PortAudio, and its real implementation.

``Recorder`` and ``Player`` talk to a :class:`SoundBackend`, never to ``sounddevice`` directly, so
tests can inject a fake device whose callbacks they drive deterministically. The real backend
wraps ``sounddevice`` (imported lazily: importing it loads PortAudio and enumerates devices) and
turns every ``PortAudioError``, and a missing PortAudio library, into an
:class:`~engine.errors.AudioDeviceError` with its reason and facts.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import numpy as np

from engine.errors import AudioDeviceError, Reason

logger = logging.getLogger(__name__)

Direction = Literal["input", "output"]

# PortAudio's PaErrorCode values that mean something specific to the user.
_PA_NOT_INITIALIZED = -10000
_PA_INVALID_CHANNEL_COUNT = -9998
_PA_INVALID_SAMPLE_RATE = -9997
_PA_INVALID_DEVICE = -9996
_PA_DEVICE_UNAVAILABLE = -9985

# Advice that holds in every interface (the app and the CLI add their own controls: engine/errors.py).
FIX_NO_INPUT = "Connect a microphone and make sure it is enabled in the system's sound settings."
FIX_NO_OUTPUT = "Connect speakers or headphones and make sure they are enabled in the system's sound settings."
FIX_BUSY = "Close other programs that use the device exclusively (calls, recorders, DAWs), then try again."
FIX_LOST = "Check that the device is still connected, then look for devices again and retry."
FIX_FORMAT = "Choose another device."
# The shared library sounddevice loads, by distribution (apt / dnf package names).
PORTAUDIO_PACKAGES = {"debian": "libportaudio2", "fedora": "portaudio"}
FIX_PORTAUDIO = (
    f"Install the PortAudio library ({PORTAUDIO_PACKAGES['debian']} on Debian/Ubuntu, "
    f"{PORTAUDIO_PACKAGES['fedora']} on Fedora), then restart OmniTalk."
)


def no_device_fix(direction: Direction) -> str:
    return FIX_NO_INPUT if direction == "input" else FIX_NO_OUTPUT


@dataclass(frozen=True, slots=True)
class AudioDevice:
    """One PortAudio device as the user sees it.

    ``index`` is only valid until the next :func:`engine.audio.devices.refresh_devices` (or
    restart); remember ``key`` instead, which is built from the name and host API.
    """

    index: int
    name: str
    host_api: str
    max_input_channels: int
    max_output_channels: int
    default_rate_hz: int
    is_default_input: bool = False
    is_default_output: bool = False

    @property
    def key(self) -> str:
        """Serialisable identifier that survives restarts and re-plugging: ``"<host API>: <name>"``."""
        return f"{self.host_api}: {self.name}"

    @property
    def is_input(self) -> bool:
        return self.max_input_channels > 0

    @property
    def is_output(self) -> bool:
        return self.max_output_channels > 0


class AudioStream(Protocol):
    """The part of a started ``sounddevice`` stream that Recorder and Player use."""

    @property
    def active(self) -> bool: ...

    @property
    def latency(self) -> float: ...

    def stop(self) -> None: ...

    def abort(self) -> None: ...

    def close(self) -> None: ...


# callback(data, frames, time_info, status): data is float32 (frames, channels); for input it is
# the captured block (valid only during the call), for output the block to fill.
StreamCallback = Callable[[np.ndarray, int, Any, Any], None]


class SoundBackend(Protocol):
    """Device enumeration and stream opening; :class:`SoundDeviceBackend` is the real one."""

    def query_devices(self) -> list[AudioDevice]: ...

    def open_stream(
        self,
        direction: Direction,
        *,
        device: AudioDevice,
        rate_hz: int,
        channels: int,
        block_frames: int,
        latency_s: float,
        callback: StreamCallback,
        finished_callback: Callable[[], None],
    ) -> AudioStream:
        """Open and start a float32 stream; raise AudioDeviceError if that is impossible.

        ``latency_s`` is the suggested host buffering (PortAudio may round it).
        """
        ...

    def refresh(self) -> None:
        """Re-enumerate devices (new servers, hot-plugged devices); no stream may be open."""
        ...


def _portaudio_text(exc: BaseException) -> str:
    try:
        return str(exc)
    except Exception:  # PortAudioError.__str__ itself queries PortAudio for host errors
        return repr(exc.args)


def audio_device_error(exc: BaseException, direction: Direction, device_name: str | None) -> AudioDeviceError:
    """Turn a ``sounddevice.PortAudioError`` into an AudioDeviceError with its reason and facts."""
    what = "microphone" if direction == "input" else "speaker"
    named = f" '{device_name}'" if device_name else ""
    code = exc.args[1] if len(exc.args) > 1 and isinstance(exc.args[1], int) else None
    detail = _portaudio_text(exc)
    facts = {"direction": direction, "device": device_name or "", "detail": detail}
    if code == _PA_DEVICE_UNAVAILABLE:
        return AudioDeviceError(
            f"The {what}{named} is busy or unavailable ({detail}).",
            fix=FIX_BUSY,
            reason=Reason.DEVICE_BUSY,
            facts=facts,
        )
    if code in (_PA_INVALID_DEVICE, _PA_NOT_INITIALIZED):
        return AudioDeviceError(
            f"The {what}{named} is not available ({detail}).",
            fix=no_device_fix(direction),
            reason=Reason.DEVICE_NOT_CONNECTED if device_name else Reason.NO_DEVICE,
            facts=facts,
        )
    if code in (_PA_INVALID_SAMPLE_RATE, _PA_INVALID_CHANNEL_COUNT):
        return AudioDeviceError(
            f"The {what}{named} does not accept the requested format ({detail}).",
            fix=FIX_FORMAT,
            reason=Reason.DEVICE_FORMAT,
            facts=facts,
        )
    return AudioDeviceError(
        f"Cannot open the {what}{named} ({detail}).", fix=FIX_LOST, reason=Reason.DEVICE_LOST, facts=facts
    )


def device_lost(direction: Direction, message: str) -> AudioDeviceError:
    """A stream that stopped, stalled or never started."""
    return AudioDeviceError(message, fix=FIX_LOST, reason=Reason.DEVICE_LOST, facts={"direction": direction})


# PortAudio is process-global: re-initialising it while a stream is open would free that stream
# under our feet, so the real backend counts its open streams.
_streams_lock = threading.Lock()
_open_streams = 0


def _register_stream(delta: int) -> None:
    global _open_streams
    with _streams_lock:
        _open_streams += delta


class _TrackedStream:
    """A started sounddevice stream that un-registers itself when closed."""

    __slots__ = ("_closed", "_stream")

    def __init__(self, stream: Any) -> None:
        self._stream = stream
        self._closed = False

    @property
    def active(self) -> bool:
        return bool(self._stream.active)

    @property
    def latency(self) -> float:
        return float(self._stream.latency)

    def stop(self) -> None:
        self._stream.stop()

    def abort(self) -> None:
        self._stream.abort()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            self._stream.close()
        finally:
            _register_stream(-1)


def _sounddevice() -> Any:
    """The ``sounddevice`` module; AudioDeviceError(PORTAUDIO_MISSING) when PortAudio cannot be loaded.

    Without the shared library, ``import sounddevice`` raises OSError ("PortAudio library not
    found"); a failed import is not cached, so installing the library and retrying works.
    """
    try:
        import sounddevice
    except OSError as exc:
        raise AudioDeviceError(
            f"The PortAudio library could not be loaded ({exc}).",
            fix=FIX_PORTAUDIO,
            reason=Reason.PORTAUDIO_MISSING,
            facts={"library": PORTAUDIO_PACKAGES["debian"], "detail": str(exc)},
        ) from exc
    return sounddevice


class SoundDeviceBackend:
    """The real :class:`SoundBackend`, on top of ``sounddevice``/PortAudio."""

    def query_devices(self) -> list[AudioDevice]:
        sd = _sounddevice()
        try:
            raw = list(sd.query_devices())
            host_apis = [h["name"] for h in sd.query_hostapis()]
        except sd.PortAudioError as exc:
            logger.warning("Listing audio devices failed: %s", _portaudio_text(exc))
            return []
        default_in = self._default_index(sd, "input")
        default_out = self._default_index(sd, "output")
        devices = []
        for info in raw:
            index = int(info["index"])
            api = int(info["hostapi"])
            devices.append(
                AudioDevice(
                    index=index,
                    name=str(info["name"]),
                    host_api=host_apis[api] if 0 <= api < len(host_apis) else str(api),
                    max_input_channels=int(info["max_input_channels"]),
                    max_output_channels=int(info["max_output_channels"]),
                    default_rate_hz=round(info["default_samplerate"]),
                    is_default_input=index == default_in,
                    is_default_output=index == default_out,
                )
            )
        return devices

    @staticmethod
    def _default_index(sd: Any, kind: Direction) -> int | None:
        try:
            return int(sd.query_devices(kind=kind)["index"])
        except (sd.PortAudioError, ValueError, KeyError):
            return None

    def open_stream(
        self,
        direction: Direction,
        *,
        device: AudioDevice,
        rate_hz: int,
        channels: int,
        block_frames: int,
        latency_s: float,
        callback: StreamCallback,
        finished_callback: Callable[[], None],
    ) -> AudioStream:
        sd = _sounddevice()
        cls = sd.InputStream if direction == "input" else sd.OutputStream
        try:
            stream = cls(
                device=device.index,
                samplerate=rate_hz,
                channels=channels,
                dtype="float32",
                blocksize=block_frames,
                latency=latency_s,
                callback=callback,
                finished_callback=finished_callback,
            )
        except sd.PortAudioError as exc:
            raise audio_device_error(exc, direction, device.name) from exc
        _register_stream(+1)
        tracked = _TrackedStream(stream)
        try:
            stream.start()
        except sd.PortAudioError as exc:
            try:
                tracked.close()
            except sd.PortAudioError as close_exc:
                logger.warning("Closing a stream that failed to start: %s", _portaudio_text(close_exc))
            raise audio_device_error(exc, direction, device.name) from exc
        return tracked

    def refresh(self) -> None:
        sd = _sounddevice()
        with _streams_lock:
            if _open_streams:
                raise AudioDeviceError(
                    f"Cannot refresh audio devices while {_open_streams} stream(s) are open.",
                    fix="Stop recording and playback first, then look for devices again.",
                    reason=Reason.STREAMS_OPEN,
                    facts={"streams": _open_streams},
                )
            try:
                sd._terminate()
                sd._initialize()
            except sd.PortAudioError as exc:
                raise audio_device_error(exc, "input", None) from exc
