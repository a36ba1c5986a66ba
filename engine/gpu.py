"""NVIDIA GPUs and their free/total memory, through NVML (``nvidia-ml-py``'s ``pynvml``).

NVML comes with the driver, so this answers in milliseconds without importing torch or creating
a CUDA context (which would itself take ~0.5 GB of the memory we are asking about). No package, no
driver, or no GPU all give an empty list: the caller then offers the CPU.

Ordinals: ``GpuInfo.index`` is the number torch uses (``cuda:N``). NVML counts in PCI bus order,
CUDA by default "fastest first"; both agree on single-GPU PCs and whenever
``CUDA_DEVICE_ORDER=PCI_BUS_ID`` is set. ``CUDA_VISIBLE_DEVICES`` (indexes or ``GPU-`` UUIDs) is
honoured the way CUDA applies it.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Any

logger = logging.getLogger(__name__)

VISIBLE_DEVICES_ENV = "CUDA_VISIBLE_DEVICES"


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
