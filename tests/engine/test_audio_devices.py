"""Device listing, choosing by a stable key or name, defaults, and PortAudio error translation."""

from __future__ import annotations

import pytest

from engine.audio.backend import AudioDevice, Direction, audio_device_error
from engine.audio.devices import DeviceSpec, find_device, refresh_devices, resolve_device
from engine.audio.fake_device import FakeSoundDevice, fake_device
from engine.errors import AudioDeviceError
from tests.pulse import require_portaudio

DEVICES = [
    fake_device(0, "Built-in Mic", host_api="MME", outputs=0, default_input=True),
    fake_device(1, "Speakers", host_api="MME", inputs=0, default_output=True),
    fake_device(2, "USB Headset", host_api="Windows WASAPI", rate_hz=44_100),
    fake_device(3, "USB Headset", host_api="MME", rate_hz=44_100),
]


def pick(spec: DeviceSpec, direction: Direction, devices: list[AudioDevice] = DEVICES) -> AudioDevice:
    found = find_device(spec, direction, devices)
    assert found is not None, f"{spec!r} not found"
    return found


def test_none_means_the_default_device_of_each_direction() -> None:
    assert pick(None, "input").name == "Built-in Mic"
    assert pick(None, "output").name == "Speakers"


def test_key_is_stable_when_indexes_change() -> None:
    chosen = find_device("Windows WASAPI: USB Headset", "input", DEVICES)
    assert chosen is not None and chosen.index == 2
    key = chosen.key
    reordered = [fake_device(7, "USB Headset", host_api="Windows WASAPI", rate_hz=44_100), *DEVICES[:2]]
    again = find_device(key, "input", reordered)
    assert again is not None and again.index == 7 and again.key == key
    stale = find_device(chosen, "input", reordered)  # an AudioDevice with an outdated index
    assert stale is not None and stale.index == 7


def test_plain_name_prefers_the_default_host_api_then_ignores_case() -> None:
    assert pick("USB Headset", "input").host_api == "MME"
    assert pick("usb headset", "output").index == 3
    assert find_device("Speakers", "input", DEVICES) is None  # output-only device
    assert pick(1, "output").name == "Speakers"


def test_resolve_explains_missing_devices() -> None:
    with pytest.raises(AudioDeviceError, match="No microphone found") as no_mic:
        resolve_device(None, "input", backend=FakeSoundDevice(devices=[]))
    assert no_mic.value.fix and "microphone" in no_mic.value.fix
    with pytest.raises(AudioDeviceError, match="No speaker found"):
        resolve_device(None, "output", backend=FakeSoundDevice(devices=[DEVICES[0]]))
    with pytest.raises(AudioDeviceError, match="'Gone Mic' is not connected.*MME: Built-in Mic"):
        resolve_device("Gone Mic", "input", backend=FakeSoundDevice(devices=DEVICES))
    fallback = resolve_device("Gone Mic", "input", backend=FakeSoundDevice(devices=DEVICES), fallback_to_default=True)
    assert fallback.name == "Built-in Mic"


def test_refresh_goes_through_the_backend() -> None:
    backend = FakeSoundDevice(devices=DEVICES)
    assert refresh_devices(backend) == DEVICES
    assert backend.refreshes == 1


@pytest.mark.parametrize(
    ("code", "message"),
    [
        (-9985, "busy or unavailable"),
        (-9996, "is not available"),
        (-9997, "does not accept the requested format"),
        (-9999, "Cannot open the microphone"),
    ],
)
def test_portaudio_errors_become_audio_device_errors(code: int, message: str) -> None:
    require_portaudio()
    import sounddevice as sd

    exc = sd.PortAudioError("Error opening InputStream: something", code)
    err = audio_device_error(exc, "input", "USB Headset")
    assert isinstance(err, AudioDeviceError)
    assert err.kind == "audio_device"
    assert message in err.message and "'USB Headset'" in err.message
    assert err.fix
