"""After torch is installed: does CUDA work in the new environment, and if not, why and what to do.

A child process of the new environment's Python imports torch and reports, as JSON, its version,
the CUDA it was built for, ``torch.cuda.is_available()`` (with the warning torch gives when it is
False), the GPUs it sees with their compute capability, and the architectures it has kernels for.
``diagnose`` turns that and ``nvidia-smi``'s view into one verdict with the reason and the fix.
``cuda_libraries_present`` says whether torch's install brought the CUDA and cuDNN libraries that
onnxruntime-gpu's CUDA provider loads (see ``torch_build.choose_onnxruntime``).

Standard library only (the launcher runs before anything is installed).
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from installer.gpu import GpuInfo
from installer.torch_build import MIN_DRIVER_FOR_CUDA_MAJOR, STABLE_CUDA_BUILDS, TORCH_ENV

PROBE_TIMEOUT_S = 180  # importing a CUDA build of torch the first time can take a while on a cold disk

PROBE_SCRIPT = r"""
import json, os, warnings
info = {"torch": None, "cuda": None, "available": False, "warnings": [], "devices": [], "arch_list": [],
        "error": None, "torch_dir": None}
try:
    import torch
    info["torch"] = torch.__version__
    info["cuda"] = torch.version.cuda
    info["torch_dir"] = os.path.dirname(torch.__file__)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        info["available"] = bool(torch.cuda.is_available())
        if info["available"]:
            info["arch_list"] = list(torch.cuda.get_arch_list())
            for index in range(torch.cuda.device_count()):
                major, minor = torch.cuda.get_device_capability(index)
                info["devices"].append({"name": torch.cuda.get_device_name(index), "capability": [major, minor]})
    info["warnings"] = [str(w.message) for w in caught]
except Exception as exc:
    info["error"] = f"{type(exc).__name__}: {exc}"
print(json.dumps(info))
"""


@dataclass(frozen=True, slots=True)
class TorchProbe:
    """What the new environment's torch reports about itself and CUDA."""

    torch_version: str | None
    cuda: str | None  # torch.version.cuda: the CUDA the build targets; None for a CPU build
    available: bool
    warnings: tuple[str, ...] = ()
    devices: tuple[tuple[str, tuple[int, int]], ...] = ()  # (name, compute capability)
    arch_list: tuple[str, ...] = ()  # "sm_86", "compute_120", ...
    error: str | None = None  # torch did not import
    torch_dir: Path | None = None


@dataclass(frozen=True, slots=True)
class CudaVerdict:
    ok: bool
    message: str
    fix: str | None = None


def parse_probe(output: str) -> TorchProbe:
    data = json.loads(output.strip().splitlines()[-1])
    return TorchProbe(
        torch_version=data["torch"],
        cuda=data["cuda"],
        available=data["available"],
        warnings=tuple(data["warnings"]),
        devices=tuple((d["name"], (d["capability"][0], d["capability"][1])) for d in data["devices"]),
        arch_list=tuple(data["arch_list"]),
        error=data["error"],
        torch_dir=Path(data["torch_dir"]) if data["torch_dir"] else None,
    )


def probe_torch(python: Path, run: Callable[..., subprocess.CompletedProcess] = subprocess.run) -> TorchProbe:
    """Ask the environment's own Python (a child process: importing torch here is impossible)."""
    try:
        result = run([str(python), "-c", PROBE_SCRIPT], capture_output=True, text=True, timeout=PROBE_TIMEOUT_S)
    except (OSError, subprocess.SubprocessError) as exc:
        return TorchProbe(None, None, False, error=f"could not run {python}: {exc}")
    if result.returncode != 0 or not result.stdout.strip():
        detail = (result.stderr or result.stdout).strip().splitlines()[-1:] or ["no output"]
        return TorchProbe(None, None, False, error=f"the check crashed (exit code {result.returncode}): {detail[0]}")
    return parse_probe(result.stdout)


def has_kernels(arch_list: tuple[str, ...], capability: tuple[int, int]) -> bool:
    """Whether a build with ``arch_list`` runs on a GPU of ``capability``: SASS of the same major and
    an equal or lower minor, or PTX of an equal or lower version (compiled by the driver)."""
    for arch in arch_list:
        kind, _, digits = arch.partition("_")
        if not digits.isdigit() or len(digits) < 2:
            continue
        built = (int(digits[:-1]), int(digits[-1]))
        if kind == "sm" and built[0] == capability[0] and built[1] <= capability[1]:
            return True
        if kind == "compute" and built <= capability:
            return True
    return False


def _fix_for_driver(gpu: GpuInfo | None, build_cuda: tuple[int, int]) -> str:
    needed = MIN_DRIVER_FOR_CUDA_MAJOR.get(build_cuda[0])
    older = [b for b in STABLE_CUDA_BUILDS if gpu and gpu.cuda_version and b.runs_on(gpu.cuda_version)]
    alternative = f", or run with {TORCH_ENV}={older[0].tag} to get a build this driver runs" if older else ""
    update = f"update the NVIDIA driver to R{needed} or newer" if needed else "update the NVIDIA driver"
    return f"{update}, then run ./omnitalk again{alternative}"


def diagnose(probe: TorchProbe, gpu: GpuInfo | None, wanted_build: str | None) -> CudaVerdict:
    """One verdict on CUDA in the new environment, with the reason and the fix when it does not work."""
    if probe.error is not None:
        return CudaVerdict(
            False,
            f"torch does not load in the new environment: {probe.error}",
            "delete the .venv folder and run ./omnitalk again; the install log has pip's output",
        )
    version = probe.torch_version
    if probe.cuda is None:
        if gpu is None:
            return CudaVerdict(True, f"torch {version} is the CPU build (no NVIDIA GPU found)")
        if wanted_build == "cpu":
            return CudaVerdict(True, f"torch {version} is the CPU build, as chosen above: {gpu.describe()} is not used")
        fix = (
            "run ./omnitalk again where https://download.pytorch.org can be reached (the launcher tries again)"
            if wanted_build and wanted_build.startswith("cu")
            else f"run with {TORCH_ENV}=cuda ./omnitalk"
        )
        return CudaVerdict(False, f"torch {version} is the CPU build, so {gpu.describe()} is not used", fix)
    major, _, minor = probe.cuda.partition(".")
    build_cuda = (int(major), int(minor.split(".")[0] or 0))
    if not probe.available:
        said = f" torch says: {probe.warnings[0].strip()}" if probe.warnings else ""
        if gpu is None:
            return CudaVerdict(
                False,
                f"torch {version} (CUDA {probe.cuda}) finds no usable NVIDIA GPU: nvidia-smi "
                f"is missing or failed.{said}",
                "install the NVIDIA driver (nvidia-smi must list the GPU), then run ./omnitalk again",
            )
        if gpu.cuda_version is not None and gpu.cuda_version < build_cuda and gpu.cuda_version[0] != build_cuda[0]:
            return CudaVerdict(
                False,
                f"torch {version} needs CUDA {probe.cuda}, but NVIDIA driver "
                f"{gpu.driver_version} supports CUDA {gpu.cuda_version[0]}.{gpu.cuda_version[1]}.{said}",
                _fix_for_driver(gpu, build_cuda),
            )
        return CudaVerdict(
            False,
            f"torch {version} (CUDA {probe.cuda}) cannot use {gpu.describe()}.{said}",
            "check that nvidia-smi works for your user (after a driver update: reboot), then run ./omnitalk again",
        )
    unsupported = [
        (name, cap) for name, cap in probe.devices if probe.arch_list and not has_kernels(probe.arch_list, cap)
    ]
    if unsupported:
        name, cap = unsupported[0]
        others = [b.tag for b in STABLE_CUDA_BUILDS if b.has_kernels_for(cap)]
        fix = f"run with {TORCH_ENV}={others[0]} ./omnitalk" if others else "this GPU is not supported by this torch"
        return CudaVerdict(
            False,
            f"torch {version} has no kernels for {name} (sm_{cap[0]}{cap[1]}); it has {' '.join(probe.arch_list)}",
            fix,
        )
    names = ", ".join(f"{name} (sm_{cap[0]}{cap[1]})" for name, cap in probe.devices)
    return CudaVerdict(True, f"CUDA works: torch {version} on {names}")


# The libraries onnxruntime-gpu's CUDA provider loads, as file-name patterns per CUDA major.
_LINUX_LIBRARIES = (
    "libcudart.so.{major}*",
    "libcublasLt.so.{major}*",
    "libcufft.so.*",
    "libcurand.so.*",
    "libcudnn.so.9*",
)
_WINDOWS_LIBRARIES = (
    "cudart64_{major}*.dll",
    "cublasLt64_{major}*.dll",
    "cufft64_*.dll",
    "curand64_*.dll",
    "cudnn64_9.dll",
)


def cuda_libraries_present(torch_dir: Path, cuda_major: int, windows: bool) -> bool:
    """Whether torch's install put every library onnxruntime-gpu's CUDA provider needs where it finds
    them: torch's own ``lib`` folder (Windows wheels) or the ``nvidia-*`` wheels next to torch (Linux)."""
    site_packages = torch_dir.parent
    folders = [torch_dir / "lib", site_packages / "nvidia"]
    patterns = _WINDOWS_LIBRARIES if windows else _LINUX_LIBRARIES
    for pattern in patterns:
        name = pattern.format(major=cuda_major)
        if not any(next(folder.rglob(name), None) for folder in folders if folder.is_dir()):
            return False
    return True
