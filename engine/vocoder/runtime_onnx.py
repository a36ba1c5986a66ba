"""onnxruntime backend: the exported generator on CUDA when it really loads, otherwise on CPU.

``onnxruntime-gpu`` lists ``CUDAExecutionProvider`` as *available* even when the CUDA/cuDNN
libraries it needs are missing; the session then silently runs on CPU. So the truth is
``session.get_providers()`` after creation, and that is what ``.providers`` reports.

The CUDA provider runs on the model's GPU (``gpu_index``, its ``device_id``), with an arena that
grows only by what is asked for. When creating the CUDA session fails, the file is opened on the
CPU to tell the two causes apart: if that works, the GPU was the problem (out of memory, a CUDA
error), not the file, so there is nothing to re-export; "auto" then runs on the CPU, "cuda"
raises ``NotEnoughMemory`` or ``DeviceUnavailable``. Only a file the CPU cannot open either is
``ModelCorrupt``.
"""

from __future__ import annotations

import contextlib
import io
import logging
from pathlib import Path

import numpy as np
import onnxruntime

from engine.cpu_threads import onnx_session_options
from engine.errors import DeviceUnavailable, ModelCorrupt, Reason
from engine.gpu import error_summary, is_out_of_memory
from engine.vocoder.config import VocoderConfig
from engine.vocoder.runtime import VocoderRuntime, check_device, out_of_memory

logger = logging.getLogger(__name__)

CUDA_PROVIDER = "CUDAExecutionProvider"
CPU_PROVIDER = "CPUExecutionProvider"
# Streaming windows change length every chunk: EXHAUSTIVE (the default) would re-benchmark cuDNN
# algorithms for each new length, costing far more than it saves. The arena grows by what a run
# asks for instead of doubling, so the vocoder takes little more GPU memory than it uses.
CUDA_PROVIDER_OPTIONS = {"cudnn_conv_algo_search": "HEURISTIC", "arena_extend_strategy": "kSameAsRequested"}


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


def create_session(
    path: Path, device: str, gpu_index: int = 0
) -> tuple[onnxruntime.InferenceSession, str | None]:
    """Open ``path`` on ``device`` (GPU ``gpu_index``); returns (session, why CUDA is not used, or
    None when it is). See the module docstring for what happens when the GPU fails."""
    check_device(device)
    options = onnx_session_options(onnxruntime.SessionOptions())  # threads: engine/cpu_threads.py
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
    if device == "cpu":
        return _open(path, options, [CPU_PROVIDER]), "the CPU was requested"
    if CUDA_PROVIDER not in onnxruntime.get_available_providers():
        return (
            _open(path, options, [CPU_PROVIDER]),
            "this onnxruntime build has no CUDA provider (install onnxruntime-gpu, not onnxruntime)",
        )
    _preload_cuda_libraries()
    cuda_options = {**CUDA_PROVIDER_OPTIONS, "device_id": gpu_index}
    try:
        session = onnxruntime.InferenceSession(
            str(path), sess_options=options, providers=[(CUDA_PROVIDER, cuda_options), CPU_PROVIDER]
        )
    except Exception as exc:  # onnxruntime raises its own Fail/RuntimeException types
        cpu_session = _open(path, options, [CPU_PROVIDER])  # ModelCorrupt if the file itself is bad
        detail = error_summary(exc)
        if is_out_of_memory(exc):
            if device == "cuda":
                raise out_of_memory(exc, "cuda") from exc
            return cpu_session, f"GPU {gpu_index} has no memory left for it ({detail})"
        if device == "cuda":
            raise DeviceUnavailable(
                f"onnxruntime's CUDA provider failed on GPU {gpu_index}: {detail}",
                fix="Run the vocoder on the CPU.",
                reason=Reason.VOCODER_GPU_UNAVAILABLE,
                facts={"detail": detail},
            ) from exc
        return cpu_session, f"onnxruntime's CUDA provider failed on GPU {gpu_index} ({detail})"
    if CUDA_PROVIDER in session.get_providers():
        return session, None
    cuda = getattr(onnxruntime, "cuda_version", "") or "?"
    return session, (
        f"onnxruntime-gpu could not load its CUDA provider (it needs CUDA {cuda} and cuDNN 9 libraries "
        "and an NVIDIA driver; onnxruntime printed the missing library to stderr)"
    )


def _open(path: Path, options: onnxruntime.SessionOptions, providers: list[str]) -> onnxruntime.InferenceSession:
    try:
        return onnxruntime.InferenceSession(str(path), sess_options=options, providers=providers)
    except Exception as exc:  # onnxruntime raises its own Fail/InvalidGraph types for unreadable files
        raise ModelCorrupt(
            f"onnxruntime cannot open the vocoder export: {exc}",
            path=path,
            fix="Delete this file: the export is rebuilt the next time the model loads.",
        ) from exc


class OnnxVocoderRuntime(VocoderRuntime):
    """Two onnxruntime sessions: the tiny duration graph on CPU, the generator on CUDA or CPU."""

    backend = "onnx"

    def __init__(
        self,
        config: VocoderConfig,
        durations_path: Path,
        generator_path: Path,
        device: str = "auto",
        gpu_index: int = 0,
    ) -> None:
        generator, reason = create_session(generator_path, device, gpu_index)
        providers = list(generator.get_providers())
        actual = "cuda" if CUDA_PROVIDER in providers else "cpu"
        if device == "cuda" and actual != "cuda":
            raise DeviceUnavailable(
                f"The vocoder cannot run on the GPU: {reason}.",
                fix="Run it on the CPU.",
                reason=Reason.VOCODER_GPU_UNAVAILABLE,
                facts={"detail": str(reason)},
            )
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
        try:
            return self._session(self._generator).run(None, feed)[0].reshape(-1)
        except Exception as exc:
            if not is_out_of_memory(exc):
                raise
            error = out_of_memory(exc, self.device)
        raise error

    @staticmethod
    def _session(session: onnxruntime.InferenceSession | None) -> onnxruntime.InferenceSession:
        if session is None:
            raise RuntimeError("this vocoder runtime was closed")
        return session

    def close(self) -> None:
        self._durations = None
        self._generator = None
