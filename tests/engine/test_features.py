"""Log-mel features and the Whisper encoder against openai-whisper's own implementation.

This is the only test module that imports ``whisper`` (dev dependency, reference implementation).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from engine.audio.features import (
    HOP_SAMPLES,
    N_FRAMES,
    N_SAMPLES,
    log_mel_spectrogram,
    mel_filters,
    pad_or_trim,
    speech_features,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")

whisper = pytest.importorskip("whisper")


@pytest.mark.parametrize("n_mels", [80, 128])
def test_mel_filterbank_equals_whispers_stored_librosa_filters(n_mels: int) -> None:
    ours = mel_filters(n_mels)
    ref = whisper.audio.mel_filters("cpu", n_mels).numpy()
    assert ours.shape == ref.shape == (n_mels, 201)
    np.testing.assert_allclose(ours, ref, rtol=0, atol=1e-7)


def test_slaney_filterbank_by_hand() -> None:
    # 130 mel points over 0..8 kHz; the first triangle spans 0 Hz, f1, f2 (all on the linear part
    # of the Slaney scale, f = 200/3 * mel). Its peak FFT bin (40 Hz) lies past f1 on the falling
    # slope, and Slaney normalisation scales the triangle by 2 / (f2 - 0).
    filters = mel_filters(128)
    f_sp = 200.0 / 3
    mel_max = 15.0 + np.log(8000 / 1000) / (np.log(6.4) / 27)
    step = mel_max / 129
    f1, f2 = step * f_sp, 2 * step * f_sp
    bin_hz = 16000 / 400
    expected_peak_bin = round(f1 / bin_hz)
    assert int(np.argmax(filters[0])) == expected_peak_bin
    fb = expected_peak_bin * bin_hz
    assert f1 < fb < f2
    weight = (f2 - fb) / (f2 - f1) * (2.0 / f2)
    assert filters[0, expected_peak_bin] == pytest.approx(weight, rel=1e-5)
    assert np.all(filters >= 0)


@pytest.mark.parametrize("seconds", [0.7, 3.0, 31.0])
def test_log_mel_matches_openai_whisper(seconds: float, speech_16k: np.ndarray) -> None:
    rng = np.random.default_rng(int(seconds * 10))
    n = int(seconds * 16_000)
    audio = (0.05 * rng.standard_normal(n)).astype(np.float32)
    audio[: speech_16k.shape[0]] += speech_16k[:n]
    ours = speech_features(audio)
    ref = whisper.log_mel_spectrogram(whisper.pad_or_trim(audio), n_mels=128)
    assert ours.shape == ref.shape == (128, N_FRAMES)
    torch.testing.assert_close(ours, ref, rtol=0, atol=2e-6)


def test_pad_or_trim_and_frame_count() -> None:
    short = np.ones(1000, np.float32)
    padded = pad_or_trim(short)
    assert padded.shape == (N_SAMPLES,) and padded[:1000].sum() == 1000 and padded[1000:].sum() == 0
    assert pad_or_trim(np.ones(N_SAMPLES + 5, np.float32)).shape == (N_SAMPLES,)
    assert log_mel_spectrogram(np.zeros(16_000, np.float32)).shape == (128, 16_000 // HOP_SAMPLES)


def test_silence_hits_the_floor() -> None:
    # log10(1e-10) = -10, clipped to max - 8 = -10 as well, then (x + 4) / 4 = -1.5.
    mel = speech_features(np.zeros(100, np.float32))
    assert torch.all(mel == -1.5)


def test_our_encoder_equals_openai_whisper_encoder(tiny_omni, speech_16k: np.ndarray) -> None:
    """The tiny large-v3.pt is a real openai-whisper checkpoint: whisper.load_model reads it."""
    from engine.model.encoder_loading import open_encoder
    from engine.model.safetensors_io import ShardSet
    from engine.model.whisper_encoder import WhisperEncoder

    ref_model = whisper.load_model(str(tiny_omni.speech_encoder_pt), device="cpu")
    ckpt = open_encoder(tiny_omni.omni, ShardSet.open(tiny_omni.omni), None, tiny_omni.speech_encoder_pt)
    ours = WhisperEncoder(ckpt.source.dims)
    ours.load_state_dict({k: v.float() for k, v in ckpt.iter_tensors()})
    mel = speech_features(speech_16k).unsqueeze(0)
    with torch.no_grad():
        ref = ref_model.encoder(mel)
        got = ours(mel)
    assert got.shape == (1, 1500, 128)
    torch.testing.assert_close(got, ref.float(), rtol=1e-4, atol=1e-4)
