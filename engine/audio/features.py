"""Whisper's log-mel features, numerically the same as ``whisper.log_mel_spectrogram``.

The reference pads or trims the 16 kHz audio to 30 s *before* the mel (``whisper.pad_or_trim``),
so every turn gives exactly ``N_FRAMES`` = 3000 frames and the encoder 1500 positions. The mel
filterbank is librosa's Slaney-normalized one (what openai-whisper stores in
``mel_filters.npz``), computed here in float64 and cast to float32, so no asset file is needed.
"""

from __future__ import annotations

import functools

import numpy as np
import torch

from engine.audio.resample import MODEL_SAMPLE_RATE_HZ

N_FFT_SAMPLES = 400  # 25 ms window
HOP_SAMPLES = 160  # 10 ms hop
CHUNK_S = 30
N_SAMPLES = CHUNK_S * MODEL_SAMPLE_RATE_HZ  # 480000
N_FRAMES = N_SAMPLES // HOP_SAMPLES  # 3000
N_MELS = 128  # large-v3
LOG_FLOOR = 1e-10
DYNAMIC_RANGE_LOG10 = 8.0  # 80 dB below the loudest bin

# Slaney mel scale (librosa htk=False): linear below 1 kHz, logarithmic above.
_MEL_F_SP_HZ = 200.0 / 3
_MEL_MIN_LOG_HZ = 1000.0
_MEL_MIN_LOG_MEL = _MEL_MIN_LOG_HZ / _MEL_F_SP_HZ
_MEL_LOGSTEP = np.log(6.4) / 27.0


def _hz_to_mel(hz: np.ndarray) -> np.ndarray:
    hz = np.asarray(hz, dtype=np.float64)
    mel = hz / _MEL_F_SP_HZ
    log_region = hz >= _MEL_MIN_LOG_HZ
    mel[log_region] = _MEL_MIN_LOG_MEL + np.log(hz[log_region] / _MEL_MIN_LOG_HZ) / _MEL_LOGSTEP
    return mel


def _mel_to_hz(mel: np.ndarray) -> np.ndarray:
    mel = np.asarray(mel, dtype=np.float64)
    hz = _MEL_F_SP_HZ * mel
    log_region = mel >= _MEL_MIN_LOG_MEL
    hz[log_region] = _MEL_MIN_LOG_HZ * np.exp(_MEL_LOGSTEP * (mel[log_region] - _MEL_MIN_LOG_MEL))
    return hz


@functools.lru_cache(maxsize=4)
def mel_filters(
    n_mels: int = N_MELS, sample_rate_hz: int = MODEL_SAMPLE_RATE_HZ, n_fft: int = N_FFT_SAMPLES
) -> np.ndarray:
    """librosa.filters.mel(sr, n_fft, n_mels) with Slaney norm: float32 (n_mels, n_fft // 2 + 1)."""
    fft_freqs = np.fft.rfftfreq(n=n_fft, d=1.0 / sample_rate_hz)
    mel_points = _mel_to_hz(
        np.linspace(_hz_to_mel(np.array([0.0]))[0], _hz_to_mel(np.array([sample_rate_hz / 2]))[0], n_mels + 2)
    )
    f_diff = np.diff(mel_points)
    ramps = np.subtract.outer(mel_points, fft_freqs)
    weights = np.zeros((n_mels, len(fft_freqs)), dtype=np.float64)
    for i in range(n_mels):
        lower = -ramps[i] / f_diff[i]
        upper = ramps[i + 2] / f_diff[i + 1]
        weights[i] = np.maximum(0.0, np.minimum(lower, upper))
    weights *= (2.0 / (mel_points[2 : n_mels + 2] - mel_points[:n_mels]))[:, None]
    return weights.astype(np.float32)


def pad_or_trim(audio: np.ndarray, n_samples: int = N_SAMPLES) -> np.ndarray:
    """float32 (n,) -> float32 (n_samples,): zero-padded at the end or cut (30 s window)."""
    audio = np.asarray(audio, dtype=np.float32)
    if audio.shape[0] >= n_samples:
        return audio[:n_samples]
    return np.pad(audio, (0, n_samples - audio.shape[0]))


def log_mel_spectrogram(
    audio_16k: np.ndarray | torch.Tensor, n_mels: int = N_MELS, device: torch.device | str | None = None
) -> torch.Tensor:
    """float32 mono 16 kHz (n_samples,) -> float32 (n_mels, n_samples // HOP_SAMPLES).

    Pass audio already padded to ``N_SAMPLES`` (``pad_or_trim``) for the 3000 frames the model needs.
    """
    audio = torch.as_tensor(np.asarray(audio_16k, dtype=np.float32)) if not torch.is_tensor(audio_16k) else audio_16k
    audio = audio.to(device=device, dtype=torch.float32)
    window = torch.hann_window(N_FFT_SAMPLES, device=audio.device)
    stft = torch.stft(audio, N_FFT_SAMPLES, HOP_SAMPLES, window=window, return_complex=True)
    power = stft[..., :-1].abs() ** 2  # whisper drops the last frame
    filters = torch.from_numpy(mel_filters(n_mels)).to(audio.device)
    mel = filters @ power
    log_spec = torch.clamp(mel, min=LOG_FLOOR).log10()
    log_spec = torch.maximum(log_spec, log_spec.max() - DYNAMIC_RANGE_LOG10)
    return (log_spec + 4.0) / 4.0


def speech_features(
    audio_16k: np.ndarray, n_mels: int = N_MELS, device: torch.device | str | None = None
) -> torch.Tensor:
    """What the reference feeds the encoder: pad/trim to 30 s, then log-mel. float32 (n_mels, 3000)."""
    return log_mel_spectrogram(pad_or_trim(audio_16k), n_mels=n_mels, device=device)
