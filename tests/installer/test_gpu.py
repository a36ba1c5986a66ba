"""Reading the NVIDIA driver's view of the machine from nvidia-smi."""

from __future__ import annotations

import subprocess

import pytest

from installer import gpu as gpu_module
from installer.gpu import GpuInfo, detect_nvidia, parse_nvidia_smi

BANNER = """
+-----------------------------------------------------------------------------------------+
| NVIDIA-SMI 570.86.10              Driver Version: 570.86.10      CUDA Version: 12.8     |
+-----------------------------------------------------------------------------------------+
"""


def test_parse_with_compute_capability() -> None:
    info = parse_nvidia_smi("NVIDIA GeForce RTX 4070, 570.86.10, 8.9\nNVIDIA RTX A2000, 570.86.10, 8.6\n", BANNER)
    assert info == GpuInfo(("NVIDIA GeForce RTX 4070", "NVIDIA RTX A2000"), "570.86.10", (12, 8), ((8, 9), (8, 6)))
    assert info.describe() == "NVIDIA GeForce RTX 4070, NVIDIA RTX A2000 (driver 570.86.10, CUDA 12.8)"


def test_parse_the_old_query_without_capability() -> None:
    info = parse_nvidia_smi("Tesla T4, 470.256.02\n", "")
    assert info == GpuInfo(("Tesla T4",), "470.256.02", None, ())
    assert parse_nvidia_smi("", BANNER) is None


def test_detect_nvidia_without_driver(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(gpu_module.shutil, "which", lambda name: None)
    assert detect_nvidia() is None


def test_detect_nvidia_with_fake_smi(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(gpu_module.shutil, "which", lambda name: "/usr/bin/nvidia-smi")

    def fake_run(cmd: list[str], **kwargs: object) -> subprocess.CompletedProcess:
        out = "NVIDIA GeForce RTX 3060, 560.1, 8.6\n" if len(cmd) > 1 else BANNER
        return subprocess.CompletedProcess(cmd, 0, stdout=out, stderr="")

    info = detect_nvidia(run=fake_run)
    assert info is not None and info.names == ("NVIDIA GeForce RTX 3060",)
    assert info.cuda_version == (12, 8) and info.capabilities == ((8, 6),)

    def failing_run(cmd: list[str], **kwargs: object) -> subprocess.CompletedProcess:
        return subprocess.CompletedProcess(cmd, 9, stdout="", stderr="NVIDIA-SMI has failed")

    assert detect_nvidia(run=failing_run) is None


def test_an_old_driver_that_rejects_compute_cap_is_asked_again_without_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(gpu_module.shutil, "which", lambda name: "/usr/bin/nvidia-smi")
    queries: list[str] = []

    def old_driver(cmd: list[str], **kwargs: object) -> subprocess.CompletedProcess:
        if len(cmd) == 1:
            return subprocess.CompletedProcess(cmd, 0, stdout=BANNER.replace("12.8", "11.4"), stderr="")
        queries.append(cmd[1])
        if "compute_cap" in cmd[1]:
            return subprocess.CompletedProcess(cmd, 2, stdout='Field "compute_cap" is not a valid field', stderr="")
        return subprocess.CompletedProcess(cmd, 0, stdout="Quadro P4000, 470.1\n", stderr="")

    info = detect_nvidia(run=old_driver)
    assert info == GpuInfo(("Quadro P4000",), "470.1", (11, 4), ())
    assert queries == ["--query-gpu=name,driver_version,compute_cap", "--query-gpu=name,driver_version"]
