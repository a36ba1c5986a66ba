"""Real PortAudio without a sound server, with a server that disappears, and stale device lists.

Each test owns its PulseAudio server (or none), so it can kill it; PortAudio is re-scanned
before and after so the rest of the session sees a clean state.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from engine.audio.backend import SoundDeviceBackend
from engine.audio.capture import Recorder
from engine.audio.devices import list_devices, resolve_device
from engine.audio.playback import Player
from engine.errors import AudioDeviceError
from tests.pulse import (
    PULSE_TOOLS,
    PulseServer,
    refresh_portaudio,
    require_portaudio,
    require_tools,
    start_pulse_server,
)
from tests.waiting import wait_until

pytestmark = pytest.mark.timeout(120)

STREAM_START_TIMEOUT_S = 10.0


@pytest.fixture
def no_sound_server(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    require_portaudio()
    monkeypatch.setenv("PULSE_SERVER", "unix:/nonexistent/omnitalk-no-server")
    refresh_portaudio()
    yield
    monkeypatch.undo()
    refresh_portaudio()


@pytest.fixture
def own_server(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[PulseServer, Path]]:
    """A private server this test may kill; yields it and the folder for a replacement."""
    require_tools(*PULSE_TOOLS)
    require_portaudio()
    root = Path(tempfile.mkdtemp(prefix="omnitalk-pa-"))
    server = start_pulse_server(root / "a")
    monkeypatch.setenv("PULSE_SERVER", server.address)
    refresh_portaudio()
    try:
        yield server, root
    finally:
        server.stop()
        monkeypatch.undo()
        refresh_portaudio()
        shutil.rmtree(root, ignore_errors=True)


def test_no_server_means_no_devices_and_clear_errors(no_sound_server: None) -> None:
    if list_devices():
        pytest.skip("this machine has sound hardware outside PulseAudio; the no-device case needs none")
    with pytest.raises(AudioDeviceError, match="No microphone found") as mic:
        Recorder().start()
    assert mic.value.kind == "audio_device" and "Connect a microphone" in (mic.value.fix or "")
    with pytest.raises(AudioDeviceError, match="No speaker found"):
        Player().start()


def test_opening_a_device_from_a_stale_list_is_an_audio_device_error(own_server: tuple[PulseServer, Path]) -> None:
    server, _ = own_server
    mic = resolve_device(None, "input")
    server.stop()  # the device vanishes between listing and opening; PortAudio still lists it
    with pytest.raises(AudioDeviceError) as info:
        stream = SoundDeviceBackend().open_stream(
            "input",
            device=mic,
            rate_hz=mic.default_rate_hz,
            channels=1,
            block_frames=960,
            latency_s=0.1,
            callback=lambda *args: None,
            finished_callback=lambda: None,
        )
        stream.close()
    assert info.value.fix
    assert "PaErrorCode" in info.value.message  # the PortAudio detail is kept for the log


def test_server_dies_mid_take_then_the_recorder_works_again(
    own_server: tuple[PulseServer, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    server, root = own_server
    errors: list[AudioDeviceError] = []
    rec = Recorder(on_error=errors.append)
    rec.open()
    assert rec.wait_ready(STREAM_START_TIMEOUT_S)
    rec.start()
    wait_until(lambda: rec.duration_s > 0.2, 10.0, "some audio")
    server.stop()  # "unplugged"
    wait_until(lambda: errors, 10.0, "on_error after the device vanished")
    assert errors[0].kind == "audio_device" and errors[0].fix
    with pytest.raises(AudioDeviceError):
        rec.stop()
    assert not rec.is_open

    replacement = start_pulse_server(root / "b")  # "plugged back in"
    try:
        monkeypatch.setenv("PULSE_SERVER", replacement.address)
        refresh_portaudio()
        rec.open()
        assert rec.wait_ready(STREAM_START_TIMEOUT_S)
        rec.start()
        wait_until(lambda: rec.duration_s > 0.2, 10.0, "audio after recovery")
        assert rec.stop().shape[0] > 3000
        rec.close()
    finally:
        replacement.stop()


def test_server_dies_during_playback_then_the_player_works_again(
    own_server: tuple[PulseServer, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    server, root = own_server
    player = Player()
    player.start()
    tone = (0.3 * np.sin(2 * np.pi * 440.0 * np.arange(16000) / 16000)).astype(np.float32)
    player.write(tone)
    wait_until(lambda: player.played_s > 0.1, 10.0, "playback to start")
    server.stop()
    wait_until(lambda: player.error is not None, 10.0, "the player to notice")
    with pytest.raises(AudioDeviceError, match="speaker"):
        player.write(tone)
    with pytest.raises(AudioDeviceError):
        player.wait_done(1.0)
    player.stop()

    replacement = start_pulse_server(root / "b")
    try:
        monkeypatch.setenv("PULSE_SERVER", replacement.address)
        refresh_portaudio()
        player.start()
        assert player.write(tone[:4000])
        player.finish()
        assert player.wait_done(10.0)
        player.stop()
    finally:
        replacement.stop()
