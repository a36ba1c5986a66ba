"""Entry points the rest of the engine uses: load a runtime, synthesise a unit sequence.

    runtime = load_vocoder_runtime(vocoder_dir, device="auto", on_progress=report)  # engine thread
    stream = StreamingVocoder(runtime, chunk_units=10)
    for chunk in stream.push(units): play(chunk)
    ...
    for chunk in stream.flush(): play(chunk)
    runtime.close()
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from engine.errors import ModelCorrupt, NotEnoughMemory
from engine.gpu import error_summary, is_out_of_memory, release_cuda_cache
from engine.vocoder.checkpoint import load_torch_vocoder
from engine.vocoder.config import load_config
from engine.vocoder.defaults import DEFAULT_OPSET
from engine.vocoder.onnx_export import ProgressCallback
from engine.vocoder.runtime import VocoderRuntime, check_device, onnxruntime_available
from engine.vocoder.runtime_torch import TorchVocoderRuntime

logger = logging.getLogger(__name__)

BACKENDS = ("auto", "onnx", "torch")
# Share of the progress bar taken by the (first-use) ONNX export; the rest is session start + warm-up.
_EXPORT_SHARE = 0.9


def _scaled(on_progress: ProgressCallback | None, low: float, high: float) -> ProgressCallback | None:
    if on_progress is None:
        return None
    return lambda fraction, message: on_progress(low + (high - low) * fraction, message)


def load_vocoder_runtime(
    vocoder_dir: Path,
    device: str = "auto",
    on_progress: ProgressCallback | None = None,
    *,
    backend: str = "onnx",
    export_dir: Path | None = None,
    opset: int = DEFAULT_OPSET,
    warm_up: bool = True,
    export_in_subprocess: bool = False,
    gpu_index: int = 0,
) -> VocoderRuntime:
    """Load the vocoder in ``vocoder_dir`` for the engine, ready to use (warmed up).

    backend "onnx" exports to ONNX on first use (cached, see ``export_cache``) and runs
    onnxruntime, on CUDA when its provider really loads (``runtime.providers`` tells), otherwise on
    CPU with a logged reason; ``device="cuda"`` raises DeviceUnavailable instead of falling back.
    backend "torch" runs the PyTorch model. "auto" is "onnx" when onnxruntime is installed.
    ``gpu_index``: the GPU to use (the model's). When the GPU has no memory left for the vocoder
    (creating it or warming it up), "auto" runs it on the CPU instead, where it keeps up with
    speech, and "cuda" raises ``NotEnoughMemory``.
    ``on_progress(fraction, message)`` is called from this thread. ``export_in_subprocess`` runs a
    needed ONNX export in a child process (the app's choice: it keeps the UI thread's GIL free).
    """
    vocoder_dir = Path(vocoder_dir)
    check_device(device)
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if backend == "auto":
        backend = "onnx" if onnxruntime_available() else "torch"
        if backend == "torch":
            logger.warning("onnxruntime is not installed; the vocoder runs on PyTorch")

    def make(where: str) -> VocoderRuntime:
        return _make_runtime(
            vocoder_dir, where, gpu_index, backend, on_progress, export_dir, opset, export_in_subprocess
        )

    try:
        runtime = make(device)
        if warm_up:
            _warm_up(runtime, on_progress)
    except Exception as exc:
        if device != "auto" or not (isinstance(exc, NotEnoughMemory) or is_out_of_memory(exc)):
            raise
        detail = error_summary(exc)
        runtime = None
    if runtime is None:  # out of GPU memory: the handler above is done, so the failed attempt is released
        release_cuda_cache()
        logger.warning("the vocoder does not fit on GPU %d (%s); it runs on the CPU", gpu_index, detail)
        runtime = make("cpu")
        if warm_up:
            _warm_up(runtime, on_progress)
    logger.info("vocoder ready: %r", runtime)
    if on_progress is not None:
        on_progress(1.0, f"Vocoder ready ({runtime.backend} on {runtime.device})")
    return runtime


def _make_runtime(
    vocoder_dir: Path,
    device: str,
    gpu_index: int,
    backend: str,
    on_progress: ProgressCallback | None,
    export_dir: Path | None,
    opset: int,
    export_in_subprocess: bool,
) -> VocoderRuntime:
    if backend == "torch":
        if on_progress is not None:
            on_progress(0.0, "Loading the PyTorch vocoder")
        return TorchVocoderRuntime(load_torch_vocoder(vocoder_dir), device, gpu_index)
    from engine.vocoder.export_cache import ensure_vocoder_onnx
    from engine.vocoder.runtime_onnx import OnnxVocoderRuntime

    config = load_config(vocoder_dir)
    export = ensure_vocoder_onnx(
        vocoder_dir, opset=opset, export_dir=export_dir, on_progress=_scaled(on_progress, 0.0, _EXPORT_SHARE),
        in_subprocess=export_in_subprocess,
    )
    if on_progress is not None:
        on_progress(_EXPORT_SHARE, "Starting onnxruntime")
    try:
        return OnnxVocoderRuntime(config, export.durations_path, export.generator_path, device, gpu_index)
    except ModelCorrupt:
        # A cached file damaged after its manifest was written (disk error, antivirus, a partial
        # copy): the cache is derived data, so rebuild it once rather than fail the app.
        logger.warning("the cached vocoder export is unreadable; exporting it again", exc_info=True)
        export = ensure_vocoder_onnx(
            vocoder_dir, opset=opset, export_dir=export_dir, force=True, in_subprocess=export_in_subprocess
        )
        return OnnxVocoderRuntime(config, export.durations_path, export.generator_path, device, gpu_index)


def _warm_up(runtime: VocoderRuntime, on_progress: ProgressCallback | None) -> None:
    if on_progress is not None:
        on_progress(0.95, "Warming up the vocoder")
    try:
        runtime.warm_up()
    except Exception:
        runtime.close()
        raise


def synthesize_units(
    vocoder_dir: Path, units: Sequence[int], *, backend: str = "auto", device: str = "auto", gpu_index: int = 0
) -> np.ndarray:
    """One-shot synthesis: units (n_units,) -> float32 waveform (n_samples,) at 16 kHz.

    Loads (and on first ONNX use exports) the vocoder, synthesises the whole sequence in one pass
    and releases it. Empty ``units`` give an empty waveform; out-of-range ids raise BadInput.
    """
    with load_vocoder_runtime(vocoder_dir, device, backend=backend, warm_up=False, gpu_index=gpu_index) as runtime:
        return runtime.synthesize(units)
