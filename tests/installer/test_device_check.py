"""The first-start GPU check: each reason the model would run on the CPU gets its own words and fix."""

from __future__ import annotations

from pathlib import Path

import pytest

from installer.cuda_check import TorchProbe
from installer.device_check import DeviceState, device_problem, nvidia_card_on_pci, probe_torch_in_process
from installer.gpu import GpuInfo

RTX = GpuInfo(("NVIDIA GeForce RTX 4060",), "580.65", (13, 0), ((8, 9),))
CPU_TORCH = TorchProbe("2.13.0+cpu", None, False)
CUDA_TORCH_OK = TorchProbe("2.13.0", "13.0", True, devices=(("NVIDIA GeForce RTX 4060", (8, 9)),), arch_list=("sm_89",))
CUDA_TORCH_NO_DEVICE = TorchProbe("2.13.0", "13.0", False, warnings=("CUDA driver version is insufficient",))


def _problem(gpu: GpuInfo | None, torch: TorchProbe, card: bool | None = None, windows: bool = False):
    return device_problem(DeviceState(gpu, torch, card), windows=windows, frozen=False)


def test_cuda_that_works_is_no_problem() -> None:
    assert _problem(RTX, CUDA_TORCH_OK) is None


def test_a_card_without_its_driver_says_install_the_driver() -> None:
    problem = _problem(None, CPU_TORCH, card=True)
    assert problem is not None and problem.key == "no_driver"
    assert "driver is not installed" in problem.message and "ubuntu-drivers" in problem.fix


def test_no_nvidia_gpu_at_all() -> None:
    problem = _problem(None, CPU_TORCH, card=False)
    assert problem is not None and problem.key == "no_gpu" and "CPU" in problem.message


def test_cpu_only_torch_next_to_a_gpu_names_the_gpu_and_the_launcher_fix() -> None:
    problem = _problem(RTX, CPU_TORCH)
    assert problem is not None and problem.key == "cpu_torch"
    assert "RTX 4060" in problem.message and "CPU-only" in problem.message
    assert "OMNITALK_TORCH=cuda ./omnitalk install" in problem.fix
    windows = _problem(RTX, CPU_TORCH, windows=True)
    assert windows is not None and "set OMNITALK_TORCH=cuda && omnitalk.cmd install" in windows.fix
    frozen = device_problem(DeviceState(RTX, CPU_TORCH, None), windows=False, frozen=True)
    assert frozen is not None and "installer" in frozen.fix


def test_a_cuda_build_the_driver_cannot_run_says_update_the_driver() -> None:
    old_driver = GpuInfo(("NVIDIA GeForce GTX 1080",), "535.104", (12, 2), ((6, 1),))
    problem = _problem(old_driver, CUDA_TORCH_NO_DEVICE)
    assert problem is not None and problem.key == "cuda_unusable"
    assert "driver" in problem.fix.lower()


def test_a_torch_that_does_not_import() -> None:
    problem = _problem(RTX, TorchProbe(None, None, False, error="ImportError: libc10.so"))
    assert problem is not None and problem.key == "torch_broken" and "install" in problem.fix


def test_pci_scan_finds_an_nvidia_display_controller(tmp_path: Path) -> None:
    def device(name: str, vendor: str, device_class: str) -> None:
        folder = tmp_path / name
        folder.mkdir()
        (folder / "vendor").write_text(vendor + "\n")
        (folder / "class").write_text(device_class + "\n")

    device("0000:00:02.0", "0x8086", "0x030000")  # Intel graphics
    device("0000:01:00.1", "0x10de", "0x040300")  # NVIDIA HD audio: not a GPU
    assert nvidia_card_on_pci(tmp_path) is False
    device("0000:01:00.0", "0x10de", "0x030000")
    assert nvidia_card_on_pci(tmp_path) is True
    assert nvidia_card_on_pci(tmp_path / "missing") is None


def test_the_in_process_probe_reads_this_torch() -> None:
    torch = pytest.importorskip("torch")
    probe = probe_torch_in_process()
    assert probe.error is None and probe.torch_version == torch.__version__
    assert probe.cuda == torch.version.cuda and probe.available == torch.cuda.is_available()
