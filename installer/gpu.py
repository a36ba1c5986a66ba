"""The machine's NVIDIA GPUs and driver, as ``nvidia-smi`` reports them (no CUDA library is loaded).

Standard library only (the launcher runs before anything is installed).
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass

Runner = Callable[..., subprocess.CompletedProcess]
NVIDIA_SMI_TIMEOUT_S = 30
# compute_cap is a valid query field from driver R510 on; older drivers reject the whole query.
QUERY_FIELDS = "name,driver_version,compute_cap"
QUERY_FIELDS_OLD_DRIVER = "name,driver_version"


@dataclass(frozen=True, slots=True)
class GpuInfo:
    """What ``nvidia-smi`` says about the machine's NVIDIA GPUs."""

    names: tuple[str, ...]
    driver_version: str
    cuda_version: tuple[int, int] | None  # the newest CUDA the driver supports
    # (major, minor) per GPU, in the order of ``names``; empty when the driver cannot say.
    capabilities: tuple[tuple[int, int], ...] = ()

    def describe(self) -> str:
        cuda = f", CUDA {self.cuda_version[0]}.{self.cuda_version[1]}" if self.cuda_version else ""
        return f"{', '.join(self.names)} (driver {self.driver_version}{cuda})"


def _parse_capability(text: str) -> tuple[int, int] | None:
    # "8.9"; a driver version such as "535.104.05" or "535.1" is never a compute capability.
    match = re.fullmatch(r"\s*(\d{1,2})\.(\d)\s*", text)
    return (int(match.group(1)), int(match.group(2))) if match else None


def parse_nvidia_smi(query_output: str, header_output: str) -> GpuInfo | None:
    """Build GpuInfo from ``nvidia-smi --query-gpu=name,driver_version[,compute_cap] --format=csv,noheader``
    and the plain ``nvidia-smi`` banner (which carries "CUDA Version: X.Y")."""
    names: list[str] = []
    capabilities: list[tuple[int, int]] = []
    driver = ""
    for line in query_output.splitlines():
        if not line.strip():
            continue
        fields = [field.strip() for field in line.split(",")]
        capability = _parse_capability(fields[-1]) if len(fields) >= 3 else None
        if capability is not None:
            capabilities.append(capability)
            fields = fields[:-1]
        names.append(", ".join(fields[:-1]) if len(fields) > 1 else fields[0])
        driver = driver or (fields[-1] if len(fields) > 1 else "")
    if not names:
        return None
    match = re.search(r"CUDA Version:\s*(\d+)\.(\d+)", header_output)
    cuda = (int(match.group(1)), int(match.group(2))) if match else None
    return GpuInfo(
        names=tuple(names),
        driver_version=driver,
        cuda_version=cuda,
        capabilities=tuple(capabilities) if len(capabilities) == len(names) else (),
    )


def detect_nvidia(run: Runner = subprocess.run) -> GpuInfo | None:
    """Return the NVIDIA GPUs of this machine, or None when there is no usable driver."""
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return None

    def smi(*args: str) -> subprocess.CompletedProcess:
        return run([exe, *args], capture_output=True, text=True, timeout=NVIDIA_SMI_TIMEOUT_S)

    try:
        query = smi(f"--query-gpu={QUERY_FIELDS}", "--format=csv,noheader")
        if query.returncode != 0:
            query = smi(f"--query-gpu={QUERY_FIELDS_OLD_DRIVER}", "--format=csv,noheader")
        if query.returncode != 0:
            return None
        banner = smi()
    except (OSError, subprocess.SubprocessError):
        return None
    return parse_nvidia_smi(query.stdout, banner.stdout if banner.returncode == 0 else "")
