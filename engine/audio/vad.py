"""Is there speech in a take? Rejects empty or near-silent push-to-talk presses before a turn.

Two tests must both pass: enough loud-enough audio (energy), and enough windows that silero-vad's
packaged TorchScript model calls speech. The model ships inside the ``silero-vad`` wheel (no
download). If it cannot be loaded the detector falls back to energy alone and logs a warning once.
Presses shorter than :data:`engine.audio.capture.MIN_PRESS_S` never get here: the caller drops them.
"""

from __future__ import annotations

import logging
import threading
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np

from engine.audio.capture import dbfs
from engine.audio.resample import MODEL_SAMPLE_RATE_HZ
from engine.vocoder.runtime import onnxruntime_available

logger = logging.getLogger(__name__)

VAD_WINDOW_SAMPLES = 512  # silero-vad's fixed window at 16 kHz (32 ms)
VAD_WINDOW_S = VAD_WINDOW_SAMPLES / MODEL_SAMPLE_RATE_HZ
ENERGY_FLOOR_DBFS = -50.0  # a window quieter than this is not speech, whatever the model says
SPEECH_PROB_THRESHOLD = 0.5
MIN_SPEECH_S = 0.15  # speech needed in a take (energy and model each) to start a turn


def _load_silero() -> Any:
    """silero-vad's model from the installed wheel, without changing torch's thread count.

    Its ONNX build when onnxruntime is installed (the app always has it): the same probabilities,
    about 5x faster per take, and onnxruntime builds its session without holding the GIL, whereas
    ``torch.jit.load`` of the TorchScript build holds it for ~80 ms, a visible stall of the UI
    thread at the end of every first model load (bench/bench_ui.py).
    """
    import torch

    threads = torch.get_num_threads()
    try:
        with warnings.catch_warnings():
            # silero-vad 6.x uses importlib.resources.path() and torch.jit.load, both deprecated
            # upstream; the warnings say nothing actionable to our users.
            warnings.simplefilter("ignore", DeprecationWarning)
            from silero_vad import load_silero_vad  # its import calls torch.set_num_threads(1)

            return load_silero_vad(onnx=onnxruntime_available())
    finally:
        torch.set_num_threads(threads)


class SpeechDetector:
    """Energy gate + silero-vad. Thread-safe (the stateful model runs under a lock).

    ``loader`` returns a silero-style model (``model(window, 16000) -> prob``,
    ``reset_states()``); it is called lazily on first use or by :meth:`preload`.
    """

    def __init__(self, *, use_model: bool = True, loader: Callable[[], Any] | None = None) -> None:
        self._use_model = use_model
        self._loader = loader or _load_silero
        self._lock = threading.Lock()
        self._model: Any = None
        self._load_failed = False

    @property
    def uses_model(self) -> bool:
        """True once the model is loaded; False when running on energy alone."""
        return self._model is not None

    def preload(self) -> bool:
        """Load the model now (e.g. on the engine thread at startup); return whether it is usable."""
        with self._lock:
            return self._ensure_model() is not None

    def is_speech(self, audio16k: np.ndarray) -> bool:
        """audio16k: float32 mono (n_samples,) at 16 kHz -> whether it holds at least MIN_SPEECH_S of speech."""
        audio = np.asarray(audio16k, dtype=np.float32).reshape(-1)
        if self.energy_speech_s(audio) < MIN_SPEECH_S:
            return False
        with self._lock:
            model = self._ensure_model()
            if model is None:
                return True
            return self._model_speech_s(model, audio, stop_at_s=MIN_SPEECH_S) >= MIN_SPEECH_S

    @staticmethod
    def energy_speech_s(audio16k: np.ndarray) -> float:
        """Seconds of VAD windows louder than ``ENERGY_FLOOR_DBFS``."""
        n_windows = audio16k.shape[0] // VAD_WINDOW_SAMPLES
        if n_windows == 0:
            return 0.0
        windows = audio16k[: n_windows * VAD_WINDOW_SAMPLES].reshape(n_windows, VAD_WINDOW_SAMPLES)
        mean_square = np.mean(np.square(windows, dtype=np.float64), axis=1)
        loud = sum(1 for ms in mean_square if dbfs(float(ms)) > ENERGY_FLOOR_DBFS)
        return loud * VAD_WINDOW_S

    def speech_probabilities(self, audio16k: np.ndarray) -> np.ndarray | None:
        """silero-vad's speech probability per 32 ms window, float32 (n_windows,); None without the model."""
        audio = np.asarray(audio16k, dtype=np.float32).reshape(-1)
        with self._lock:
            model = self._ensure_model()
            if model is None:
                return None
            return self._probabilities(model, audio, stop_at_s=None)

    def _ensure_model(self) -> Any:
        if self._model is None and self._use_model and not self._load_failed:
            try:
                self._model = self._loader()
            except Exception as exc:  # a broken or missing wheel must not break push-to-talk
                self._load_failed = True
                logger.warning("silero-vad could not be loaded (%s); using the energy gate only", exc)
        return self._model

    def _model_speech_s(self, model: Any, audio: np.ndarray, stop_at_s: float) -> float:
        probs = self._probabilities(model, audio, stop_at_s=stop_at_s)
        return float(np.count_nonzero(probs >= SPEECH_PROB_THRESHOLD)) * VAD_WINDOW_S

    @staticmethod
    def _probabilities(model: Any, audio: np.ndarray, stop_at_s: float | None) -> np.ndarray:
        import torch

        n_windows = audio.shape[0] // VAD_WINDOW_SAMPLES
        probs = np.zeros(n_windows, dtype=np.float32)
        needed = None if stop_at_s is None else int(np.ceil(stop_at_s / VAD_WINDOW_S))
        found = 0
        tensor = torch.from_numpy(np.ascontiguousarray(audio))
        with torch.inference_mode():
            model.reset_states()
            for i in range(n_windows):
                window = tensor[i * VAD_WINDOW_SAMPLES : (i + 1) * VAD_WINDOW_SAMPLES]
                probs[i] = float(model(window, MODEL_SAMPLE_RATE_HZ))
                if probs[i] >= SPEECH_PROB_THRESHOLD:
                    found += 1
                    if needed is not None and found >= needed:
                        return probs[: i + 1]
        return probs


_default_detector: SpeechDetector | None = None
_default_lock = threading.Lock()


def default_detector() -> SpeechDetector:
    global _default_detector
    with _default_lock:
        if _default_detector is None:
            _default_detector = SpeechDetector()
        return _default_detector


def is_speech(audio16k: np.ndarray) -> bool:
    """float32 mono (n_samples,) at 16 kHz -> True if the take holds speech (energy and silero-vad)."""
    return default_detector().is_speech(audio16k)
