"""PyTorch backend: the model itself (the parity reference, and the fallback without onnxruntime)."""

from __future__ import annotations

import numpy as np
import torch

from engine.errors import DeviceUnavailable, Reason
from engine.gpu import is_out_of_memory
from engine.vocoder.model import UnitVocoder
from engine.vocoder.runtime import VocoderRuntime, check_device, out_of_memory


def torch_device(device: str, gpu_index: int = 0) -> torch.device:
    """"auto" / "cpu" / "cuda" -> where the PyTorch vocoder runs (the model's GPU ``gpu_index``)."""
    check_device(device)
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    elif device == "cuda" and not torch.cuda.is_available():
        raise DeviceUnavailable(
            "CUDA was requested for the vocoder but this PyTorch build cannot use a GPU.",
            fix="Install the CUDA build of PyTorch, or run on the CPU.",
            reason=Reason.CUDA_UNAVAILABLE,
        )
    return torch.device("cuda", gpu_index) if device == "cuda" else torch.device("cpu")


class TorchVocoderRuntime(VocoderRuntime):
    """The PyTorch model itself (reference for parity, and the fallback without onnxruntime)."""

    backend = "torch"

    def __init__(self, model: UnitVocoder, device: str = "auto", gpu_index: int = 0) -> None:
        self._device = torch_device(device, gpu_index)
        super().__init__(model.config, self._device.type, [f"torch-{self._device.type}"])
        self.model: UnitVocoder | None = model.to(self._device).eval()

    def _model(self) -> UnitVocoder:
        if self.model is None:
            raise RuntimeError("this vocoder runtime was closed")
        return self.model

    def predict_durations(self, units: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            tensor = torch.from_numpy(np.ascontiguousarray(units, dtype=np.int64)).to(self._device)
            return self._model().durations(tensor.view(1, -1)).view(-1).cpu().numpy()

    def generate(self, frame_units: np.ndarray) -> np.ndarray:
        try:
            with torch.inference_mode():
                tensor = torch.from_numpy(np.ascontiguousarray(frame_units, dtype=np.int64)).to(self._device)
                return self._model().generate(tensor.view(1, -1)).view(-1).float().cpu().numpy()
        except RuntimeError as exc:
            if not is_out_of_memory(exc):
                raise
            error = out_of_memory(exc, self.device)
        raise error  # outside the handler: the failed run's tensors are released first

    def close(self) -> None:
        self.model = None
        if self.device == "cuda":
            torch.cuda.empty_cache()
