"""A PC without the PortAudio library (``libportaudio2`` not installed): the engine says so at start-up
with a true fix, keeps running, and answers typed questions in text."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.audio.backend import PORTAUDIO_PACKAGES, SoundDeviceBackend
from engine.audio.vad import SpeechDetector
from engine.bench.event_log import EventLog
from engine.engine import Engine
from engine.errors import AudioDeviceError, Reason
from engine.events import DevicesListed, Failed, ListDevices, LoadModel, Ready, SendText, TurnFinished

from .engine_fixtures import ScriptedModel, tiny_vocoder_loader


def test_the_backend_turns_a_missing_library_into_facts(no_portaudio: None) -> None:
    with pytest.raises(AudioDeviceError) as info:
        SoundDeviceBackend().query_devices()
    error = info.value
    assert error.reason is Reason.PORTAUDIO_MISSING
    assert error.facts["library"] == PORTAUDIO_PACKAGES["debian"] == "libportaudio2"
    assert error.fix is not None and "libportaudio2" in error.fix and "Reinstall" not in error.fix


def test_engine_reports_it_before_any_model_and_typed_questions_still_work(
    no_portaudio: None, tmp_path: Path
) -> None:
    log = EventLog()
    engine = Engine(
        log,
        model_loader=tiny_vocoder_loader(tmp_path, ScriptedModel()),
        speech_detector=SpeechDetector(use_model=False),
        sound_backend=SoundDeviceBackend(),
    )
    engine.start()
    try:
        engine.send(ListDevices(rescan=False))  # what the app asks at start-up, before any model
        listed = log.wait_for(DevicesListed)
        assert listed.devices == () and listed.error is not None
        assert listed.error.kind == "audio_device" and listed.error.reason is Reason.PORTAUDIO_MISSING
        assert listed.error.facts["library"] == "libportaudio2"

        engine.send(LoadModel(model_dir=Path("unused")))  # the model loads anyway (nothing to open)
        log.wait_for(Ready)
        engine.send(SendText("hello"))
        done = log.wait_for(TurnFinished)
        assert done.text == "The capital is Paris."
        spoken = [f for f in log.of(Failed) if f.turn_id == done.turn_id]
        assert [(f.kind, f.reason) for f in spoken] == [("audio_device", Reason.PORTAUDIO_MISSING)]
    finally:
        engine.shutdown()
