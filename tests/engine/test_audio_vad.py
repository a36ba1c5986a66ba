"""Speech detection for push-to-talk takes: silero-vad from the wheel plus an energy gate."""

from __future__ import annotations

import logging
import socket
from pathlib import Path

import numpy as np
import pytest
import torch

from engine.audio.io import load_audio
from engine.audio.resample import MODEL_SAMPLE_RATE_HZ
from engine.audio.vad import MIN_SPEECH_S, SpeechDetector, is_speech
from tests.engine.audio_fixtures import QUESTION_TEXT, espeak_wav, sine


@pytest.fixture(scope="module")
def detector() -> SpeechDetector:
    d = SpeechDetector()
    assert d.preload(), "silero-vad's packaged model should load"
    return d


@pytest.fixture(scope="module")
def speech16k(tmp_path_factory: pytest.TempPathFactory) -> np.ndarray:
    return load_audio(espeak_wav(QUESTION_TEXT, tmp_path_factory.mktemp("vad")))


def noise(seconds: float, rms_dbfs: float, seed: int = 0) -> np.ndarray:
    rms = 10 ** (rms_dbfs / 20)
    return (rms * np.random.default_rng(seed).standard_normal(round(seconds * MODEL_SAMPLE_RATE_HZ))).astype(np.float32)


def test_espeak_question_is_speech(detector: SpeechDetector, speech16k: np.ndarray) -> None:
    assert detector.is_speech(speech16k)
    quiet = speech16k * 0.1  # -20 dB: a distant talker still counts
    assert detector.is_speech(quiet)
    assert is_speech(speech16k)  # the module-level helper


def test_silence_and_low_noise_are_not_speech(detector: SpeechDetector) -> None:
    assert not detector.is_speech(np.zeros(2 * MODEL_SAMPLE_RATE_HZ, dtype=np.float32))
    assert not detector.is_speech(noise(2.0, -60.0))
    assert not detector.is_speech(np.zeros(0, dtype=np.float32))


def test_loud_noise_and_a_tone_are_rejected_by_the_model(detector: SpeechDetector) -> None:
    loud = noise(2.0, -25.0, seed=1)
    tone = sine(1000.0, 2.0, MODEL_SAMPLE_RATE_HZ, 0.3)
    assert detector.energy_speech_s(loud) >= MIN_SPEECH_S  # energy alone would accept them
    assert not detector.is_speech(loud)
    assert not detector.is_speech(tone)


def test_speech_with_silence_around_it_is_speech(detector: SpeechDetector, speech16k: np.ndarray) -> None:
    padded = np.concatenate([noise(1.0, -65.0), speech16k, noise(1.0, -65.0, seed=2)])
    assert detector.is_speech(padded)
    probs = detector.speech_probabilities(padded)
    assert probs is not None and probs.shape == (padded.shape[0] // 512,)
    assert probs[:25].max() < 0.5 < probs.max()  # the leading second is not speech


def test_the_model_ships_in_the_wheel_and_loads_offline(monkeypatch: pytest.MonkeyPatch) -> None:
    import silero_vad

    data = Path(silero_vad.__file__).parent / "data"
    assert (data / "silero_vad.onnx").is_file() and (data / "silero_vad.jit").is_file()

    def no_network(*args: object, **kwargs: object) -> None:
        raise AssertionError("silero-vad tried to use the network")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    detector = SpeechDetector()
    assert detector.preload()
    # The ONNX build (onnxruntime is a dependency): same probabilities as TorchScript, no GIL-held load.
    assert type(detector._model).__name__ == "OnnxWrapper"  # noqa: SLF001


def test_without_onnxruntime_the_torchscript_model_is_used(monkeypatch: pytest.MonkeyPatch) -> None:
    import engine.audio.vad as vad_module

    monkeypatch.setattr(vad_module, "onnxruntime_available", lambda: False)
    detector = SpeechDetector()
    assert detector.preload()
    assert isinstance(detector._model, torch.jit.ScriptModule)  # noqa: SLF001


def test_loading_keeps_torch_thread_count() -> None:
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        assert SpeechDetector().preload()
        assert torch.get_num_threads() == 2  # silero_vad's import would set it to 1
    finally:
        torch.set_num_threads(before)


def test_falls_back_to_energy_with_a_warning(caplog: pytest.LogCaptureFixture, speech16k: np.ndarray) -> None:
    def broken() -> object:
        raise RuntimeError("model file is corrupt")

    d = SpeechDetector(loader=broken)
    with caplog.at_level(logging.WARNING, logger="engine.audio.vad"):
        assert not d.preload()
        assert d.is_speech(speech16k)
        assert not d.is_speech(noise(2.0, -60.0))
    assert not d.uses_model
    warnings = [r for r in caplog.records if "energy gate only" in r.getMessage()]
    assert len(warnings) == 1  # logged once, not per take
    assert d.speech_probabilities(speech16k) is None
