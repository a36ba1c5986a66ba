"""engine.gpu: NVML answers become GpuInfo; no package, no driver or a failing GPU never raise."""

from __future__ import annotations

import builtins
import os
import sys
import types
from dataclasses import dataclass

import pytest

from engine.gpu import GpuInfo, list_gpus

GB = 1_000_000_000


class NVMLError(Exception):
    pass


class NVMLErrorLibraryNotFound(NVMLError):
    pass


@dataclass
class _Memory:
    total: int
    free: int
    used: int = 0


@dataclass
class _Card:
    name: str | bytes
    uuid: str
    total: int
    free: int
    broken: bool = False


def _fake_nvml(cards: list[_Card], *, init_error: Exception | None = None) -> types.ModuleType:
    module = types.ModuleType("pynvml")
    state = {"init": 0, "shutdown": 0}

    def init() -> None:
        if init_error is not None:
            raise init_error
        state["init"] += 1

    def handle(index: int) -> _Card:
        if not 0 <= index < len(cards):
            raise NVMLError("Invalid Argument")
        return cards[index]

    def memory(card: _Card) -> _Memory:
        if card.broken:
            raise NVMLError("GPU is lost")
        return _Memory(card.total, card.free)

    def shutdown() -> None:
        state["shutdown"] += 1

    module.NVMLError = NVMLError  # type: ignore[attr-defined]
    module.nvmlInit = init  # type: ignore[attr-defined]
    module.nvmlShutdown = shutdown  # type: ignore[attr-defined]
    module.nvmlDeviceGetCount = lambda: len(cards)  # type: ignore[attr-defined]
    module.nvmlDeviceGetHandleByIndex = handle  # type: ignore[attr-defined]
    module.nvmlDeviceGetMemoryInfo = memory  # type: ignore[attr-defined]
    module.nvmlDeviceGetName = lambda card: card.name  # type: ignore[attr-defined]
    module.nvmlDeviceGetUUID = lambda card: card.uuid  # type: ignore[attr-defined]
    module.state = state  # type: ignore[attr-defined]
    return module


CARDS = [
    _Card("NVIDIA GeForce RTX 3060", "GPU-aaaa-1111", 12 * GB, 11 * GB),
    _Card(b"NVIDIA GeForce RTX 4090", "GPU-bbbb-2222", 24 * GB, 20 * GB),  # pynvml < 11 returned bytes
]


@pytest.fixture(autouse=True)
def _no_visible_devices_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)


def _install(monkeypatch: pytest.MonkeyPatch, module: types.ModuleType) -> types.ModuleType:
    monkeypatch.setitem(sys.modules, "pynvml", module)
    return module


def test_lists_every_gpu_with_memory(monkeypatch: pytest.MonkeyPatch) -> None:
    nvml = _install(monkeypatch, _fake_nvml(CARDS))
    assert list_gpus() == [
        GpuInfo(0, "NVIDIA GeForce RTX 3060", total_bytes=12 * GB, free_bytes=11 * GB),
        GpuInfo(1, "NVIDIA GeForce RTX 4090", total_bytes=24 * GB, free_bytes=20 * GB),
    ]
    assert list_gpus()[1].device == "cuda:1"
    assert nvml.state == {"init": 2, "shutdown": 2}  # type: ignore[attr-defined]


def test_no_driver_gives_an_empty_list(monkeypatch: pytest.MonkeyPatch) -> None:
    _install(monkeypatch, _fake_nvml(CARDS, init_error=NVMLErrorLibraryNotFound("NVML Shared Library Not Found")))
    assert list_gpus() == []


def test_no_package_gives_an_empty_list(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delitem(sys.modules, "pynvml", raising=False)
    real_import = builtins.__import__

    def no_pynvml(name: str, *args: object, **kwargs: object) -> object:
        if name == "pynvml":
            raise ImportError("No module named 'pynvml'")
        return real_import(name, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(builtins, "__import__", no_pynvml)
    assert list_gpus() == []


def test_a_gpu_that_fails_is_left_out_but_keeps_the_ordinals(monkeypatch: pytest.MonkeyPatch) -> None:
    broken = _Card("Lost GPU", "GPU-cccc", 8 * GB, 8 * GB, broken=True)
    nvml = _install(monkeypatch, _fake_nvml([broken, CARDS[0]]))
    assert list_gpus() == [GpuInfo(1, "NVIDIA GeForce RTX 3060", total_bytes=12 * GB, free_bytes=11 * GB)]
    assert nvml.state["shutdown"] == 1  # type: ignore[attr-defined]


def test_cuda_visible_devices_by_index_and_uuid(monkeypatch: pytest.MonkeyPatch) -> None:
    _install(monkeypatch, _fake_nvml(CARDS))
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1")
    assert [(g.index, g.name) for g in list_gpus()] == [(0, "NVIDIA GeForce RTX 4090")]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "GPU-bbbb,0")
    assert [(g.index, g.name) for g in list_gpus()] == [(0, "NVIDIA GeForce RTX 4090"), (1, "NVIDIA GeForce RTX 3060")]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,7,1")  # CUDA stops at the first invalid entry
    assert [g.name for g in list_gpus()] == ["NVIDIA GeForce RTX 3060"]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert list_gpus() == []
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "-1")
    assert list_gpus() == []


def test_real_nvml_never_raises() -> None:
    """Whatever this machine has (often no driver): a list, never an exception."""
    gpus = list_gpus()  # raising here fails the test on any machine
    if not gpus:
        pytest.skip("no NVIDIA GPU on this machine: only checked that probing NVML does not raise")
    assert all(g.total_bytes >= g.free_bytes >= 0 and g.name for g in gpus)


# ---------------------------------------------------------------------- housekeeping (no torch import)


def test_pci_bus_order_is_set_unless_the_user_chose(monkeypatch: pytest.MonkeyPatch) -> None:
    from engine.gpu import use_pci_bus_order

    monkeypatch.delenv("CUDA_DEVICE_ORDER", raising=False)
    use_pci_bus_order()
    assert os.environ["CUDA_DEVICE_ORDER"] == "PCI_BUS_ID"
    monkeypatch.setenv("CUDA_DEVICE_ORDER", "FASTEST_FIRST")
    use_pci_bus_order()
    assert os.environ["CUDA_DEVICE_ORDER"] == "FASTEST_FIRST"


def test_python_m_engine_numbers_gpus_like_the_driver(monkeypatch: pytest.MonkeyPatch) -> None:
    from engine.__main__ import main

    monkeypatch.delenv("CUDA_DEVICE_ORDER", raising=False)
    assert main([]) == 0
    assert os.environ["CUDA_DEVICE_ORDER"] == "PCI_BUS_ID"


@pytest.mark.parametrize(
    "message",
    [
        "CUDA out of memory. Tried to allocate 20.00 MiB (GPU 0; 7.79 GiB total capacity)",
        "[ONNXRuntimeError] : 6 : RUNTIME_EXCEPTION : Exception during initialization: "
        "/onnxruntime_src/onnxruntime/core/framework/bfc_arena.cc:359 void* onnxruntime::BFCArena::"
        "AllocateRawInternal(size_t, bool, onnxruntime::Stream*) Failed to allocate memory for requested buffer",
        "CUDA failure 2: out of memory ; GPU=0 ; hostname=pc ; file=cuda_allocator.cc",
        "CUBLAS_STATUS_ALLOC_FAILED when calling `cublasCreate(handle)`",
        "DefaultCPUAllocator: not enough memory: you tried to allocate 4294967296 bytes.",
        "cudaErrorMemoryAllocation",
    ],
)
def test_out_of_memory_is_recognised_by_its_message(message: str) -> None:
    from engine.gpu import is_out_of_memory

    assert is_out_of_memory(RuntimeError(message))


def test_out_of_memory_types_and_other_errors() -> None:
    import torch

    from engine.gpu import error_summary, is_out_of_memory

    assert is_out_of_memory(torch.OutOfMemoryError("CUDA error"))
    assert is_out_of_memory(MemoryError())
    for other in (
        RuntimeError("CUDA error: an illegal memory access was encountered"),
        RuntimeError("CUDNN_STATUS_NOT_SUPPORTED"),
        ValueError("bad shape"),
    ):
        assert not is_out_of_memory(other)
    assert error_summary(RuntimeError("first line\nsecond line")) == "first line"
    assert error_summary(RuntimeError()) == "RuntimeError"


def test_release_cuda_cache_never_starts_cuda(monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    from engine.gpu import release_cuda_cache

    emptied: list[bool] = []
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: emptied.append(True))
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: False)
    assert not release_cuda_cache() and emptied == []
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: True)
    assert release_cuda_cache() and emptied == [True]
