"""NVIDIA GPUs: listing through NVML, GPU numbering, and CUDA memory housekeeping; no torch import.

``list_gpus``: the GPUs and their free/total memory, through NVML (``nvidia-ml-py``'s ``pynvml``).

NVML comes with the driver, so this answers in milliseconds without importing torch or creating
a CUDA context (which would itself take ~0.5 GB of the memory we are asking about). No package, no
driver, or no GPU all give an empty list: the caller then offers the CPU.

Ordinals: ``GpuInfo.index`` is the number torch uses (``cuda:N``). NVML counts in PCI bus order,
CUDA by default "fastest first"; both agree on single-GPU PCs and whenever
``CUDA_DEVICE_ORDER=PCI_BUS_ID`` is set, which every entry point does first (``use_pci_bus_order``:
the app's ``main.py`` and ``python -m engine``). ``CUDA_VISIBLE_DEVICES`` (indexes or ``GPU-``
UUIDs) is honoured the way CUDA applies it.

Memory housekeeping for the engine thread, which must not import torch itself (the app starts
without it): ``release_cuda_cache`` returns PyTorch's cached blocks to the driver once a model is
gone, so the next load's pre-flight (``cudaMemGetInfo``) sees them as free; ``is_out_of_memory``
recognises an allocation failure from torch, bitsandbytes or onnxruntime by its type or message.
"""

from __future__ import annotations

import gc
import logging
import os
import sys
from dataclasses import dataclass
from typing import Any

logger = logging.getLogger(__name__)

VISIBLE_DEVICES_ENV = "CUDA_VISIBLE_DEVICES"
DEVICE_ORDER_ENV = "CUDA_DEVICE_ORDER"
PCI_BUS_ORDER = "PCI_BUS_ID"
# How allocation failures read: torch ("CUDA out of memory", "DefaultCPUAllocator: not enough
# memory"), cuBLAS/cuDNN status codes, the CUDA runtime's error name, onnxruntime's arena ("Failed to
# allocate memory for requested buffer") and its CUDA provider ("CUDA failure 2: out of memory").
OUT_OF_MEMORY_MARKERS = (
    "out of memory",
    "not enough memory",
    "failed to allocate memory",
    "cudaerrormemoryallocation",
    "cublas_status_alloc_failed",
    "cudnn_status_alloc_failed",
)


@dataclass(frozen=True, slots=True)
class GpuInfo:
    index: int  # CUDA ordinal (``cuda:index``)
    name: str
    total_bytes: int
    free_bytes: int

    @property
    def device(self) -> str:
        return f"cuda:{self.index}"


def _text(value: str | bytes) -> str:
    # pynvml returned bytes before version 11.
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value


def _visible(nvml: Any, count: int) -> list[int] | None:
    """NVML indexes in CUDA order after ``CUDA_VISIBLE_DEVICES``; None when it is not set."""
    spec = os.environ.get(VISIBLE_DEVICES_ENV)
    if spec is None:
        return None
    chosen: list[int] = []
    for token in (t.strip() for t in spec.split(",")):
        if token.isdigit() and int(token) < count:
            index = int(token)
        elif token.startswith(("GPU-", "MIG-")):
            uuids = [_text(nvml.nvmlDeviceGetUUID(nvml.nvmlDeviceGetHandleByIndex(i))) for i in range(count)]
            matches = [i for i, uuid in enumerate(uuids) if uuid.startswith(token)]
            if len(matches) != 1:
                break
            index = matches[0]
        else:
            break  # CUDA stops at the first entry it cannot use
        if index in chosen:
            break
        chosen.append(index)
    return chosen


def list_gpus() -> list[GpuInfo]:
    """Every NVIDIA GPU CUDA would see, with its memory now; [] without NVML, driver or GPU."""
    try:
        import pynvml as nvml
    except ImportError:
        logger.info("nvidia-ml-py is not installed; no GPU information")
        return []
    try:
        nvml.nvmlInit()
    except nvml.NVMLError as exc:
        logger.info("NVML unavailable (%s); no NVIDIA driver or GPU", exc)
        return []
    try:
        count = int(nvml.nvmlDeviceGetCount())
        order = _visible(nvml, count)
        gpus: list[GpuInfo] = []
        for cuda_index, nvml_index in enumerate(order if order is not None else range(count)):
            try:
                handle = nvml.nvmlDeviceGetHandleByIndex(nvml_index)
                memory = nvml.nvmlDeviceGetMemoryInfo(handle)
                name = _text(nvml.nvmlDeviceGetName(handle))
            except nvml.NVMLError as exc:
                logger.warning("GPU %d could not be queried (%s); leaving it out", nvml_index, exc)
                continue
            gpus.append(GpuInfo(cuda_index, name, total_bytes=int(memory.total), free_bytes=int(memory.free)))
        return gpus
    except nvml.NVMLError as exc:
        logger.warning("NVML query failed (%s); no GPU information", exc)
        return []
    finally:
        try:
            nvml.nvmlShutdown()
        except nvml.NVMLError:
            logger.debug("nvmlShutdown failed", exc_info=True)


def use_pci_bus_order() -> None:
    """Number CUDA devices in PCI bus order, as NVML (and so the settings' GPU list) does.

    Only effective before CUDA starts in this process, so entry points call it first; child
    processes inherit it. A value the user set is kept.
    """
    os.environ.setdefault(DEVICE_ORDER_ENV, PCI_BUS_ORDER)


def is_out_of_memory(exc: BaseException) -> bool:
    """Whether ``exc`` is an allocation failure (GPU or host), whoever raised it."""
    if isinstance(exc, MemoryError):
        return True
    torch = sys.modules.get("torch")
    oom_type = getattr(torch, "OutOfMemoryError", None) if torch is not None else None
    if oom_type is not None and isinstance(exc, oom_type):
        return True
    text = str(exc).lower()
    return any(marker in text for marker in OUT_OF_MEMORY_MARKERS)


def error_summary(exc: BaseException, limit: int = 300) -> str:
    """The first line of an exception's message (its type name when it has none), for error texts."""
    lines = str(exc).strip().splitlines()
    return lines[0][:limit] if lines else type(exc).__name__


def release_cuda_cache() -> bool:
    """Collect unreachable objects, then hand PyTorch's cached GPU blocks back to the driver.

    Returns True when a cache was emptied (torch is imported and this process started CUDA);
    never imports torch or starts CUDA itself.
    """
    gc.collect()
    torch = sys.modules.get("torch")
    if torch is None or not torch.cuda.is_initialized():
        return False
    torch.cuda.empty_cache()
    return True
