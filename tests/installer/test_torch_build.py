"""Which torch build each PC gets, which onnxruntime-gpu goes with it, and what a fallback means."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from installer.gpu import GpuInfo
from installer.torch_build import (
    CPU,
    PROJECT_TORCH_RANGE,
    PYPI_LINUX_CUDA_TAG,
    TORCH_REQUIREMENT,
    TORCH_VERSION,
    TorchChoice,
    build_of_installed,
    choose_onnxruntime,
    choose_torch,
    fallback_choice,
    fallback_warning,
)

CPU_INDEX = "https://download.pytorch.org/whl/cpu"
AMPERE = (8, 6)
PASCAL = (6, 1)
BLACKWELL = (12, 0)
KEPLER = (3, 5)

# Driver branch -> the newest CUDA it supports (NVIDIA's release notes).
DRIVER_CUDA = {
    "525.147.05": (12, 0),
    "535.183.01": (12, 2),
    "550.144.03": (12, 4),
    "570.86.10": (12, 8),
    "575.64.03": (12, 9),
    "580.65.06": (13, 0),
    "595.71.05": (13, 2),
}


def gpu(driver: str = "570.86.10", capability: tuple[int, int] | None = AMPERE) -> GpuInfo:
    return GpuInfo(
        names=("NVIDIA GeForce RTX 3060",),
        driver_version=driver,
        cuda_version=DRIVER_CUDA.get(driver),
        capabilities=(capability,) if capability else (),
    )


# --- no GPU: the CPU build; on Linux from the CPU index, elsewhere from PyPI (already CPU builds) ---


@pytest.mark.parametrize(
    ("system", "machine", "index"),
    [
        ("Linux", "x86_64", CPU_INDEX),
        ("Linux", "aarch64", CPU_INDEX),
        ("Windows", "AMD64", None),
        ("Darwin", "arm64", None),
    ],
)
@pytest.mark.parametrize("override", [None, "", "auto", "cpu", " CPU "])
def test_without_gpu_or_with_cpu_override_every_system_gets_the_cpu_build(
    system: str, machine: str, index: str | None, override: str | None
) -> None:
    choice = choose_torch(system, machine, None, override)
    assert choice.requirement == TORCH_REQUIREMENT == f"torch=={TORCH_VERSION}"
    assert choice.index_url == index
    assert choice.build == CPU
    assert "CPU build" in choice.describe()


@pytest.mark.parametrize(("system", "machine"), [("Linux", "x86_64"), ("Windows", "AMD64")])
def test_cpu_override_wins_over_a_gpu(system: str, machine: str) -> None:
    choice = choose_torch(system, machine, gpu(), "cpu")
    assert choice.build == CPU
    assert choice.index_url == (CPU_INDEX if system == "Linux" else None)


def test_gpu_on_macos_or_arm_gets_the_cpu_build_and_says_why() -> None:
    mac = choose_torch("Darwin", "x86_64", gpu(), None)
    arm = choose_torch("Linux", "aarch64", gpu(), None)
    assert mac.build == arm.build == CPU
    assert "Darwin/x86_64" in mac.reason and "Linux/aarch64" in arm.reason


# --- NVIDIA GPU: the CUDA build the driver runs (issue 17: drivers 525 ... 580+) ---


@pytest.mark.parametrize(
    ("driver", "tag", "how"),
    [
        ("525.147.05", "cu126", "minor-version compatibility"),
        ("535.183.01", "cu126", "minor-version compatibility"),
        ("550.144.03", "cu126", "minor-version compatibility"),
        ("570.86.10", "cu126", "supports CUDA 12.8"),  # R570 cannot run PyPI's CUDA 13 build
        ("575.64.03", "cu126", "supports CUDA 12.9"),
        ("580.65.06", "cu130", "supports CUDA 13.0"),
        ("595.71.05", "cu130", "supports CUDA 13.2"),  # cu132 is experimental for 2.13
    ],
)
@pytest.mark.parametrize("system", ["Linux", "Windows"])
def test_the_cuda_build_follows_the_driver(driver: str, tag: str, how: str, system: str) -> None:
    choice = choose_torch(system, "x86_64" if system == "Linux" else "AMD64", gpu(driver), None)
    assert choice.build == tag
    assert choice.requirement == TORCH_REQUIREMENT
    assert how in choice.reason and driver in choice.reason
    if system == "Linux" and tag == PYPI_LINUX_CUDA_TAG:
        assert choice.index_url is None  # PyPI's Linux torch==2.13.0 is this very build
    else:
        assert choice.index_url == f"https://download.pytorch.org/whl/{tag}"


def test_a_driver_older_than_cuda_12_gets_the_cpu_build_and_the_fix() -> None:
    old = GpuInfo(("NVIDIA GeForce GTX 1080",), "470.256.02", (11, 4), (PASCAL,))
    choice = choose_torch("Linux", "x86_64", old, None)
    assert choice.build == CPU
    assert choice.warning is not None and "R525" in choice.warning and "Update the NVIDIA driver" in choice.warning


def test_pascal_on_a_new_driver_gets_cu126_because_cu130_has_no_kernels_for_it() -> None:
    choice = choose_torch("Windows", "AMD64", gpu("580.65.06", PASCAL), None)
    assert choice.build == "cu126"


def test_blackwell_needs_cuda_13_and_so_a_r580_driver() -> None:
    assert choose_torch("Linux", "x86_64", gpu("580.65.06", BLACKWELL), None).build == "cu130"
    stuck = choose_torch("Linux", "x86_64", gpu("570.86.10", BLACKWELL), None)
    assert stuck.build == CPU
    assert stuck.warning is not None and "R580" in stuck.warning and "sm_" not in stuck.warning


def test_a_gpu_no_build_supports_runs_on_the_cpu() -> None:
    choice = choose_torch("Linux", "x86_64", gpu("580.65.06", KEPLER), None)
    assert choice.build == CPU and choice.warning is not None and "sm_35" in choice.warning


def test_unknown_driver_cuda_gets_the_most_widely_supported_build() -> None:
    unknown = GpuInfo(("Tesla T4",), "535.1", None, ())
    assert choose_torch("Linux", "x86_64", unknown, None).build == "cu126"
    new_gpu = GpuInfo(("RTX 5090",), "", None, (BLACKWELL,))
    assert choose_torch("Windows", "AMD64", new_gpu, None).build == "cu130"


def test_overrides() -> None:
    forced = choose_torch("Windows", "AMD64", None, "cuda")
    assert forced.build == "cu126" and forced.index_url == "https://download.pytorch.org/whl/cu126"
    assert choose_torch("Linux", "x86_64", gpu("580.65.06"), "cuda").build == "cu130"
    tagged = choose_torch("Linux", "x86_64", None, "cu126")
    assert (tagged.requirement, tagged.index_url) == (TORCH_REQUIREMENT, "https://download.pytorch.org/whl/cu126")
    # An index without a TORCH_VERSION build gets the project's range rather than an impossible pin.
    older = choose_torch("Linux", "x86_64", None, "cu118")
    assert older.requirement == "torch>=2.4,<3" and older.index_url == "https://download.pytorch.org/whl/cu118"
    skipped = choose_torch("Linux", "x86_64", gpu(), "skip")
    assert skipped.requirement is None and skipped.build is None
    custom = choose_torch("Linux", "x86_64", None, "torch==2.8.0")
    assert (custom.requirement, custom.index_url, custom.build) == ("torch==2.8.0", None, None)
    with pytest.raises(ValueError, match="OMNITALK_TORCH"):
        choose_torch("Linux", "x86_64", None, "rocm")


# --- when the PyTorch index cannot be reached ---


def test_fallback_installs_the_same_requirement_from_the_default_index() -> None:
    wanted = choose_torch("Linux", "x86_64", None, None)
    used = fallback_choice(wanted, "https://download.pytorch.org/whl/cpu cannot be reached (DNS)")
    assert (used.requirement, used.index_url, used.build) == (TORCH_REQUIREMENT, None, None)
    assert "default package index" in used.reason and "cannot be reached (DNS)" in used.reason


def test_fallback_warning_says_what_the_default_index_gave() -> None:
    cpu = choose_torch("Linux", "x86_64", None, None)
    assert fallback_warning(cpu, CPU, "Linux", None) is None  # a local +cpu wheel, as on a mirror
    heavy = fallback_warning(cpu, "cu130", "Linux", None)
    assert heavy is not None and "several GB of NVIDIA libraries" in heavy and CPU_INDEX in heavy
    windows = choose_torch("Windows", "AMD64", gpu("570.86.10"), None)
    on_cpu = fallback_warning(windows, CPU, "Windows", "570.86.10")
    assert on_cpu is not None and "runs on the CPU" in on_cpu and "whl/cu126" in on_cpu
    linux = choose_torch("Linux", "x86_64", gpu("570.86.10"), None)
    mismatch = fallback_warning(linux, "cu130", "Linux", "570.86.10")
    assert mismatch is not None and "R580" in mismatch and "570.86.10" in mismatch


@pytest.mark.parametrize(
    ("version", "system", "machine", "build"),
    [
        ("2.13.0+cpu", "Linux", "x86_64", CPU),
        ("2.13.0+cu126", "Windows", "AMD64", "cu126"),
        ("2.13.0", "Linux", "x86_64", PYPI_LINUX_CUDA_TAG),
        ("2.13.0", "Windows", "AMD64", CPU),
        ("2.13.0", "Darwin", "arm64", CPU),
        ("2.8.0", "Linux", "x86_64", None),
        ("2.13.0+rocm6.4", "Linux", "x86_64", None),
    ],
)
def test_build_of_an_installed_torch(version: str, system: str, machine: str, build: str | None) -> None:
    assert build_of_installed(version, system, machine) == build


# --- onnxruntime-gpu follows torch's CUDA major (issue 17 item 2) ---

ORT_CUDA12 = "onnxruntime-gpu>=1.21,<1.27"
ORT_CUDA13 = "onnxruntime-gpu>=1.27"


@pytest.mark.parametrize(
    ("driver", "torch_cuda", "requirement"),
    [
        ("525.147.05", "12.6", ORT_CUDA12),
        ("535.183.01", "12.6", ORT_CUDA12),
        ("550.144.03", "12.6", ORT_CUDA12),
        ("570.86.10", "12.6", ORT_CUDA12),
        ("575.64.03", "12.6", ORT_CUDA12),
        ("580.65.06", "13.0", ORT_CUDA13),
        ("595.71.05", "13.0", ORT_CUDA13),
    ],
)
@pytest.mark.parametrize("system", ["Linux", "Windows"])
def test_onnxruntime_matches_the_cuda_major_of_the_torch_the_driver_gets(
    driver: str, torch_cuda: str, requirement: str, system: str
) -> None:
    choice = choose_torch(system, "AMD64", gpu(driver), None)
    # torch.version.cuda of each build (what the installed torch reports).
    assert torch_cuda == {"cu126": "12.6", "cu130": "13.0"}[choice.build or ""]
    # torch's CUDA wheels bring cuDNN and the CUDA runtime on both systems: no [cuda,cudnn] extras.
    onnxruntime = choose_onnxruntime(torch_cuda, cuda_libraries_from_torch=True)
    assert onnxruntime.requirement == requirement
    assert "[" not in requirement


def test_onnxruntime_extras_only_where_torch_brought_no_cuda_libraries() -> None:
    assert choose_onnxruntime("12.6", cuda_libraries_from_torch=False).requirement == (
        "onnxruntime-gpu[cuda,cudnn]>=1.21,<1.27"
    )
    cpu = choose_onnxruntime(None, cuda_libraries_from_torch=False)
    assert cpu.requirement is None and "CPU" in cpu.reason
    unknown = choose_onnxruntime("11.8", cuda_libraries_from_torch=True)
    assert unknown.requirement is None and "CUDA 11" in unknown.reason


def test_choice_describe_says_build_source_and_reason() -> None:
    text = TorchChoice(TORCH_REQUIREMENT, CPU_INDEX, CPU, "no NVIDIA GPU found").describe()
    assert text == f"the CPU build {TORCH_REQUIREMENT} from {CPU_INDEX} (no NVIDIA GPU found)"


def test_the_projects_own_requirements_accept_what_the_launcher_installs() -> None:
    pyproject = (Path(__file__).resolve().parents[2] / "pyproject.toml").read_text()
    assert f'"{PROJECT_TORCH_RANGE}",' in pyproject  # accepts TORCH_VERSION, CPU or CUDA build alike
    low, high = re.fullmatch(r"torch>=([\d.]+),<(\d+)", PROJECT_TORCH_RANGE).groups()  # type: ignore[union-attr]
    version = tuple(int(part) for part in TORCH_VERSION.split("."))
    assert tuple(int(part) for part in low.split(".")) <= version < (int(high),)
    # onnxruntime-gpu's own range admits both the CUDA 12 and the CUDA 13 pins.
    assert '"onnxruntime-gpu>=1.20;' in pyproject
