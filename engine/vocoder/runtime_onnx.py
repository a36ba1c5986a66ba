"""onnxruntime backend: the exported generator on CUDA when it really loads, otherwise on CPU.

``onnxruntime-gpu`` lists ``CUDAExecutionProvider`` as *available* even when the CUDA/cuDNN
libraries it needs are missing; the session then silently runs on CPU. So the truth is
``session.get_providers()`` after creation, and that is what ``.providers`` reports.
"""

from __future__ import annotations

import contextlib
import io
import logging
from pathlib import Path

import numpy as np
import onnxruntime

from engine.cpu_threads import onnx_session_options
from engine.errors import DeviceUnavailable, ModelCorrupt
from engine.vocoder.config import VocoderConfig
from engine.vocoder.runtime import VocoderRuntime, check_device

logger = logging.getLogger(__name__)

CUDA_PROVIDER = "CUDAExecutionProvider"
CPU_PROVIDER = "CPUExecutionProvider"
# Streaming windows change length every chunk: EXHAUSTIVE (the default) would re-benchmark cuDNN
# algorithms for each new length, costing far more than it saves.
CUDA_PROVIDER_OPTIONS = {"cudnn_conv_algo_search": "HEURISTIC"}


def _preload_cuda_libraries() -> None:
    """Let onnxruntime find CUDA/cuDNN from PyTorch or the nvidia-* wheels (it prints, so capture)."""
    preload = getattr(onnxruntime, "preload_dlls", None)
    if preload is None:
        return
    with contextlib.redirect_stdout(io.StringIO()) as captured:
        try:
            preload()
        except Exception as exc:  # a failed preload only means CUDA may not load; the check below decides
            logger.debug("onnxruntime.preload_dlls failed: %s", exc)
    if captured.getvalue().strip():
        logger.debug("onnxruntime.preload_dlls: %s", captured.getvalue().strip())


def create_session(path: Path, device: str) -> tuple[onnxruntime.InferenceSession, str | None]:
    """Open ``path`` on ``device``; returns (session, why CUDA is not used, or None when it is)."""
    check_device(device)
    options = onnx_session_options(onnxruntime.SessionOptions())  # threads: engine/cpu_threads.py
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
    providers: list[object] = [CPU_PROVIDER]
    reason: str | None = "the CPU was requested" if device == "cpu" else None
    if device != "cpu":
        if CUDA_PROVIDER in onnxruntime.get_available_providers():
            _preload_cuda_libraries()
            providers = [(CUDA_PROVIDER, dict(CUDA_PROVIDER_OPTIONS)), CPU_PROVIDER]
        else:
            reason = "this onnxruntime build has no CUDA provider (install onnxruntime-gpu, not onnxruntime)"
    try:
        session = onnxruntime.InferenceSession(str(path), sess_options=options, providers=providers)
    except Exception as exc:  # onnxruntime raises its own Fail/InvalidGraph types for unreadable files
        raise ModelCorrupt(
            f"onnxruntime cannot open the vocoder export: {exc}",
            path=path,
            fix="Run `python -m engine export-vocoder --force` to rebuild it.",
        ) from exc
    if device != "cpu" and reason is None and CUDA_PROVIDER not in session.get_providers():
        cuda = getattr(onnxruntime, "cuda_version", "") or "?"
        reason = (
            f"onnxruntime-gpu could not load its CUDA provider (it needs CUDA {cuda} and cuDNN 9 libraries "
            "and an NVIDIA driver; onnxruntime printed the missing library to stderr)"
        )
    return session, reason


class OnnxVocoderRuntime(VocoderRuntime):
    """Two onnxruntime sessions: the tiny duration graph on CPU, the generator on CUDA or CPU."""

    backend = "onnx"

    def __init__(self, config: VocoderConfig, durations_path: Path, generator_path: Path, device: str = "auto") -> None:
        generator, reason = create_session(generator_path, device)
        providers = list(generator.get_providers())
        actual = "cuda" if CUDA_PROVIDER in providers else "cpu"
        if device == "cuda" and actual != "cuda":
            raise DeviceUnavailable(f"The vocoder cannot run on the GPU: {reason}.", fix="Choose the CPU in settings.")
        if device == "auto" and actual != "cuda":
            logger.warning("vocoder runs on CPU: %s", reason)
        super().__init__(config, actual, providers)
        # The duration graph is ~0.2 MFLOP per unit: a GPU round trip would cost more than it saves.
        durations, _ = create_session(durations_path, "cpu")
        self._durations: onnxruntime.InferenceSession | None = durations
        self._generator: onnxruntime.InferenceSession | None = generator
        self.cpu_reason = reason if actual != "cuda" else None

    def predict_durations(self, units: np.ndarray) -> np.ndarray:
        feed = {"units": np.ascontiguousarray(units, dtype=np.int64).reshape(1, -1)}
        return self._session(self._durations).run(None, feed)[0].reshape(-1)

    def generate(self, frame_units: np.ndarray) -> np.ndarray:
        feed = {"frame_units": np.ascontiguousarray(frame_units, dtype=np.int64).reshape(1, -1)}
        return self._session(self._generator).run(None, feed)[0].reshape(-1)

    @staticmethod
    def _session(session: onnxruntime.InferenceSession | None) -> onnxruntime.InferenceSession:
        if session is None:
            raise RuntimeError("this vocoder runtime was closed")
        return session

    def close(self) -> None:
        self._durations = None
        self._generator = None
