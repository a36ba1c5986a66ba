"""The launcher's decisions: which torch build, when to reinstall, which system packages are missing."""

from __future__ import annotations

import subprocess

import pytest

from installer import bootstrap
from installer.bootstrap import (
    CPU_TORCH,
    CUDA_TORCH,
    GpuInfo,
    TorchChoice,
    choose_torch,
    cuda_tag_for,
    extras_for,
    install_fingerprint,
    missing_apt_packages,
    parse_nvidia_smi,
)

RTX = GpuInfo(names=("NVIDIA GeForce RTX 4070",), driver_version="570.86", cuda_version=(12, 8))
OLD_DRIVER = GpuInfo(names=("NVIDIA GeForce GTX 1080",), driver_version="535.1", cuda_version=(12, 2))

BANNER = """
+-----------------------------------------------------------------------------------------+
| NVIDIA-SMI 570.86.10              Driver Version: 570.86.10      CUDA Version: 12.8     |
+-----------------------------------------------------------------------------------------+
"""


def test_no_gpu_gets_the_cpu_build_everywhere() -> None:
    for system in ("Linux", "Windows", "Darwin"):
        choice = choose_torch(system, "x86_64", None, None)
        assert choice.requirement == CPU_TORCH == "torch==2.13.0"
        assert choice.index_url is None


def test_linux_nvidia_uses_pypi_cuda_wheels() -> None:
    choice = choose_torch("Linux", "x86_64", RTX, "auto")
    assert choice.requirement == CUDA_TORCH
    assert choice.index_url is None  # PyPI's Linux wheels are CUDA builds
    assert "RTX 4070" in choice.label


def test_windows_nvidia_needs_the_pytorch_cuda_index() -> None:
    # PyPI only has CPU wheels for Windows, so the launcher must point pip at a CUDA index.
    choice = choose_torch("Windows", "AMD64", RTX, None)
    assert choice.requirement == CUDA_TORCH
    assert choice.index_url == "https://download.pytorch.org/whl/cu128"


def test_old_linux_driver_gets_a_matching_older_cuda_build() -> None:
    choice = choose_torch("Linux", "x86_64", OLD_DRIVER, None)
    assert choice.index_url == "https://download.pytorch.org/whl/cu118"


@pytest.mark.parametrize(
    ("cuda", "tag"),
    [
        ((13, 1), "cu130"),
        ((12, 9), "cu128"),
        ((12, 6), "cu126"),
        ((12, 4), "cu118"),
        ((11, 0), "cu118"),
        (None, "cu128"),
    ],
)
def test_cuda_tag_follows_the_driver(cuda: tuple[int, int] | None, tag: str) -> None:
    assert cuda_tag_for(cuda) == tag


def test_gpu_on_arm_falls_back_to_cpu() -> None:
    choice = choose_torch("Linux", "aarch64", RTX, None)
    assert choice.requirement == CPU_TORCH
    assert "aarch64" in choice.label


def test_environment_override() -> None:
    assert choose_torch("Linux", "x86_64", RTX, "cpu").requirement == CPU_TORCH
    forced = choose_torch("Windows", "AMD64", None, "cuda")
    assert forced.requirement == CUDA_TORCH and forced.index_url is not None
    tagged = choose_torch("Linux", "x86_64", None, "cu126")
    assert tagged.index_url == "https://download.pytorch.org/whl/cu126"
    skipped = choose_torch("Linux", "x86_64", RTX, "skip")
    assert skipped == TorchChoice(None, None, "OMNITALK_TORCH=skip: torch left as installed")
    assert choose_torch("Linux", "x86_64", None, "torch==2.8.0").requirement == "torch==2.8.0"
    with pytest.raises(ValueError, match="OMNITALK_TORCH"):
        choose_torch("Linux", "x86_64", None, "rocm")


def test_parse_nvidia_smi() -> None:
    info = parse_nvidia_smi("NVIDIA GeForce RTX 4070, 570.86.10\nNVIDIA RTX A2000, 570.86.10\n", BANNER)
    assert info == GpuInfo(("NVIDIA GeForce RTX 4070", "NVIDIA RTX A2000"), "570.86.10", (12, 8))
    assert parse_nvidia_smi("", BANNER) is None
    assert parse_nvidia_smi("Tesla T4, 535.1\n", "").cuda_version is None  # type: ignore[union-attr]


def test_detect_nvidia_without_driver(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(bootstrap.shutil, "which", lambda name: None)
    assert bootstrap.detect_nvidia() is None


def test_detect_nvidia_with_fake_smi(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(bootstrap.shutil, "which", lambda name: "/usr/bin/nvidia-smi")

    def fake_run(cmd: list[str], **kwargs: object) -> subprocess.CompletedProcess:
        out = "NVIDIA GeForce RTX 3060, 560.1\n" if len(cmd) > 1 else BANNER
        return subprocess.CompletedProcess(cmd, 0, stdout=out, stderr="")

    info = bootstrap.detect_nvidia(run=fake_run)
    assert info is not None and info.names == ("NVIDIA GeForce RTX 3060",) and info.cuda_version == (12, 8)

    def failing_run(cmd: list[str], **kwargs: object) -> subprocess.CompletedProcess:
        return subprocess.CompletedProcess(cmd, 9, stdout="", stderr="NVIDIA-SMI has failed")

    assert bootstrap.detect_nvidia(run=failing_run) is None


def test_fingerprint_changes_with_what_decides_the_install() -> None:
    cpu = choose_torch("Linux", "x86_64", None, None)
    cuda = choose_torch("Linux", "x86_64", RTX, None)
    base = install_fingerprint(b"[project]", cpu, ["dev"], "3.11.7")
    assert base == install_fingerprint(b"[project]", cpu, ["dev"], "3.11.7")
    assert base != install_fingerprint(b"[project]\n#", cpu, ["dev"], "3.11.7")
    assert base != install_fingerprint(b"[project]", cuda, ["dev"], "3.11.7")
    assert base != install_fingerprint(b"[project]", cpu, [], "3.11.7")
    assert base != install_fingerprint(b"[project]", cpu, ["dev"], "3.12.1")


def test_missing_apt_packages(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(bootstrap.shutil, "which", lambda name: "/usr/bin/" + name)
    installed = {"xvfb"}

    def fake_run(cmd: list[str], **kwargs: object) -> subprocess.CompletedProcess:
        name = cmd[-1]
        if name in installed:
            return subprocess.CompletedProcess(cmd, 0, stdout="install ok installed", stderr="")
        return subprocess.CompletedProcess(cmd, 1, stdout="", stderr="no packages found")

    assert missing_apt_packages(["xvfb", "espeak-ng", "sox"], run=fake_run) == ["espeak-ng", "sox"]


def test_cuda_builds_also_get_onnxruntimes_cuda_libraries() -> None:
    cuda = choose_torch("Windows", "AMD64", RTX, None)
    cpu = choose_torch("Linux", "x86_64", None, None)
    assert extras_for(cuda, ["dev"]) == ["dev", "cuda"]
    assert extras_for(cpu, ["dev"]) == ["dev"]
    assert extras_for(cpu, []) == []
