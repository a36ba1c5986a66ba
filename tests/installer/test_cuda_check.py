"""After installing: is CUDA usable in the new environment, and if not, the reason and the fix (issue 17)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from installer.cuda_check import (
    TorchProbe,
    cuda_libraries_present,
    diagnose,
    has_kernels,
    parse_probe,
    probe_torch,
)
from installer.gpu import GpuInfo

R570 = GpuInfo(("NVIDIA GeForce RTX 3060",), "570.86.10", (12, 8), ((8, 6),))
R580_PASCAL = GpuInfo(("NVIDIA GeForce GTX 1080",), "580.65.06", (13, 0), ((6, 1),))
CU130_ARCHS = ("sm_75", "sm_80", "sm_86", "sm_90", "sm_100", "sm_120", "compute_120")


def test_probe_of_this_environment_sees_the_cpu_build() -> None:
    """A real child process of this very environment (torch 2.13.0+cpu here)."""
    probe = probe_torch(Path(sys.executable))
    assert probe.error is None
    assert probe.torch_version is not None and probe.torch_version.startswith("2.")
    assert probe.cuda is None and probe.available is False
    assert probe.torch_dir is not None and (probe.torch_dir / "__init__.py").is_file()


def test_probe_reports_a_torch_that_does_not_import(tmp_path: Path) -> None:
    missing = probe_torch(tmp_path / "no-python")
    assert missing.error is not None and "could not run" in missing.error


def test_parse_probe() -> None:
    line = json.dumps(
        {
            "torch": "2.13.0+cu126",
            "cuda": "12.6",
            "available": True,
            "warnings": [],
            "devices": [{"name": "RTX 3060", "capability": [8, 6]}],
            "arch_list": ["sm_86"],
            "error": None,
            "torch_dir": "/v/torch",
        }
    )
    probe = parse_probe(f"some noise\n{line}\n")
    assert probe.devices == (("RTX 3060", (8, 6)),) and probe.torch_dir == Path("/v/torch")


def test_cuda_works() -> None:
    probe = TorchProbe("2.13.0+cu126", "12.6", True, devices=(("RTX 3060", (8, 6)),), arch_list=("sm_80", "sm_86"))
    verdict = diagnose(probe, R570, "cu126")
    assert verdict.ok and verdict.message == "CUDA works: torch 2.13.0+cu126 on RTX 3060 (sm_86)"


def test_pypis_cuda_13_build_on_a_r570_driver_names_the_driver_and_the_fix() -> None:
    """Issue 17's first failure: PyPI's Linux torch needs CUDA 13; torch.cuda.is_available() is False."""
    warning = "CUDA initialization: The NVIDIA driver on your system is too old (found version 12080)."
    probe = TorchProbe("2.13.0", "13.0", False, warnings=(warning,))
    verdict = diagnose(probe, R570, "cu130")
    assert not verdict.ok
    assert "needs CUDA 13.0, but NVIDIA driver 570.86.10 supports CUDA 12.8" in verdict.message
    assert "too old (found version 12080)" in verdict.message
    assert (
        verdict.fix == "update the NVIDIA driver to R580 or newer, then run ./omnitalk again, or run with "
        "OMNITALK_TORCH=cu126 to get a build this driver runs"
    )


def test_cpu_build_on_a_gpu_pc() -> None:
    probe = TorchProbe("2.13.0+cpu", None, False)
    chosen = diagnose(probe, R570, "cpu")
    assert chosen.ok and "as chosen above" in chosen.message
    custom = diagnose(probe, R570, None)
    assert not custom.ok and custom.fix == "run with OMNITALK_TORCH=cuda ./omnitalk"
    fell_back = diagnose(probe, R570, "cu126")  # the CUDA index could not be reached
    assert not fell_back.ok and "download.pytorch.org can be reached" in (fell_back.fix or "")
    assert diagnose(probe, None, "cpu").ok


def test_no_kernels_for_the_gpu() -> None:
    probe = TorchProbe("2.13.0", "13.0", True, devices=(("GTX 1080", (6, 1)),), arch_list=CU130_ARCHS)
    verdict = diagnose(probe, R580_PASCAL, None)
    assert not verdict.ok and "no kernels for GTX 1080 (sm_61)" in verdict.message
    assert verdict.fix == "run with OMNITALK_TORCH=cu126 ./omnitalk"


def test_cuda_build_without_a_usable_driver() -> None:
    verdict = diagnose(TorchProbe("2.13.0+cu126", "12.6", False), None, "cu126")
    assert not verdict.ok and "install the NVIDIA driver" in (verdict.fix or "")
    broken = diagnose(TorchProbe("2.13.0+cu126", "12.6", False), R570, "cu126")  # same major: not the driver's CUDA
    assert not broken.ok and "reboot" in (broken.fix or "")
    failed = diagnose(TorchProbe(None, None, False, error="ImportError: libtorch_cpu.so"), R570, "cu126")
    assert not failed.ok and "ImportError" in failed.message


@pytest.mark.parametrize(
    ("arch_list", "capability", "ok"),
    [
        (CU130_ARCHS, (8, 9), True),  # Ada runs sm_86 kernels
        (CU130_ARCHS, (12, 1), True),
        (CU130_ARCHS, (6, 1), False),
        (("sm_50", "sm_60", "sm_70", "sm_75", "sm_80", "sm_86", "sm_90"), (12, 0), False),
        (("sm_90", "compute_90"), (12, 0), True),  # PTX is compiled by the driver for newer GPUs
    ],
)
def test_has_kernels(arch_list: tuple[str, ...], capability: tuple[int, int], ok: bool) -> None:
    assert has_kernels(arch_list, capability) is ok


def _touch(root: Path, *relative: str) -> None:
    for name in relative:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(b"")


def test_cuda_libraries_from_torchs_linux_wheels(tmp_path: Path) -> None:
    site = tmp_path / "site-packages"
    torch_dir = site / "torch"
    _touch(torch_dir, "__init__.py")
    assert not cuda_libraries_present(torch_dir, 12, windows=False)  # a CPU build: no nvidia-* wheels
    _touch(
        site / "nvidia",
        "cuda_runtime/lib/libcudart.so.12",
        "cublas/lib/libcublasLt.so.12",
        "cufft/lib/libcufft.so.11",
        "curand/lib/libcurand.so.10",
    )
    assert not cuda_libraries_present(torch_dir, 12, windows=False)  # cuDNN still missing
    _touch(site / "nvidia", "cudnn/lib/libcudnn.so.9")
    assert cuda_libraries_present(torch_dir, 12, windows=False)
    assert not cuda_libraries_present(torch_dir, 13, windows=False)  # CUDA 12 runtime is no CUDA 13 runtime


def test_cuda_libraries_in_torchs_windows_lib_folder(tmp_path: Path) -> None:
    torch_dir = tmp_path / "torch"
    _touch(torch_dir, "lib/cudart64_12.dll", "lib/cublasLt64_12.dll", "lib/cufft64_11.dll", "lib/curand64_10.dll")
    assert not cuda_libraries_present(torch_dir, 12, windows=True)
    _touch(torch_dir, "lib/cudnn64_9.dll")
    assert cuda_libraries_present(torch_dir, 12, windows=True)
