"""Listing, choosing and remembering audio devices.

Choose a device by its ``key`` (``AudioDevice.key``: host API + name), which is what the app
stores in its settings: PortAudio indexes change whenever devices come and go. PortAudio scans
devices once, when ``sounddevice`` is imported; :func:`refresh_devices` scans again (after the user
plugs something in, or when a sound server started after us).
"""

from __future__ import annotations

import logging

from engine.audio.backend import (
    AudioDevice,
    Direction,
    SoundBackend,
    SoundDeviceBackend,
    no_device_fix,
)
from engine.errors import AudioDeviceError, Reason

logger = logging.getLogger(__name__)

# What a caller may pass to pick a device: None (system default), a remembered key or a device
# name, a PortAudio index (valid until the next refresh), or an AudioDevice from list_devices().
DeviceSpec = str | int | AudioDevice | None

_default_backend: SoundBackend | None = None


def default_backend() -> SoundBackend:
    """The process-wide real backend (PortAudio is process-global, so there is one)."""
    global _default_backend
    if _default_backend is None:
        _default_backend = SoundDeviceBackend()
    return _default_backend


def list_devices(backend: SoundBackend | None = None) -> list[AudioDevice]:
    """Every device PortAudio knows, inputs and outputs, in PortAudio order."""
    return (backend or default_backend()).query_devices()


def refresh_devices(backend: SoundBackend | None = None) -> list[AudioDevice]:
    """Re-scan devices (restarts PortAudio) and return the new list.

    Raises AudioDeviceError if a Recorder or Player stream is still open: stop them first.
    """
    backend = backend or default_backend()
    backend.refresh()
    devices = backend.query_devices()
    logger.info("Audio devices refreshed: %d found", len(devices))
    return devices


def _has_direction(device: AudioDevice, direction: Direction) -> bool:
    return device.is_input if direction == "input" else device.is_output


def find_device(spec: DeviceSpec, direction: Direction, devices: list[AudioDevice]) -> AudioDevice | None:
    """The device ``spec`` names among ``devices`` (only those usable for ``direction``), or None.

    A string matches a key first, then an exact name, then a case-insensitive name; among
    several devices with that name the one on the default device's host API wins.
    """
    usable = [d for d in devices if _has_direction(d, direction)]
    if not usable:
        return None
    default = next((d for d in usable if (d.is_default_input if direction == "input" else d.is_default_output)), None)
    if spec is None:
        return default or usable[0]
    if isinstance(spec, int):
        return next((d for d in usable if d.index == spec), None)
    if isinstance(spec, AudioDevice):
        return next((d for d in usable if d.key == spec.key), None) or find_device(spec.name, direction, devices)
    exact_key = next((d for d in usable if d.key == spec), None)
    if exact_key is not None:
        return exact_key
    for same in (lambda d: d.name == spec, lambda d: d.name.casefold() == spec.casefold()):
        named = [d for d in usable if same(d)]
        if named:
            on_default_api = [d for d in named if default is not None and d.host_api == default.host_api]
            return (on_default_api or named)[0]
    return None


def resolve_device(
    spec: DeviceSpec,
    direction: Direction,
    *,
    backend: SoundBackend | None = None,
    fallback_to_default: bool = False,
) -> AudioDevice:
    """Find the device to open now; raise AudioDeviceError (with fix text) if there is none.

    With ``fallback_to_default`` a remembered device that is gone is replaced by the system
    default (logged), which is what the app wants after the user unplugged a headset.
    """
    devices = list_devices(backend)
    found = find_device(spec, direction, devices)
    if found is None and spec is not None and fallback_to_default:
        found = find_device(None, direction, devices)
        if found is not None:
            logger.warning("Audio device %r is not available; using default %r", spec, found.key)
    if found is not None:
        return found
    what = "microphone" if direction == "input" else "speaker"
    fix = no_device_fix(direction)
    if spec is None or not any(_has_direction(d, direction) for d in devices):
        raise AudioDeviceError(f"No {what} found.", fix=fix, reason=Reason.NO_DEVICE, facts={"direction": direction})
    names = ", ".join(d.key for d in devices if _has_direction(d, direction))
    raise AudioDeviceError(
        f"The {what} {spec!r} is not connected (available: {names}).",
        fix=fix,
        reason=Reason.DEVICE_NOT_CONNECTED,
        facts={"direction": direction, "device": str(spec), "available": names},
    )
