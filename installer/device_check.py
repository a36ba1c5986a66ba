"""At the app's start: will the model run on an NVIDIA GPU here, and if not, why and what fixes it.

The launcher checks CUDA right after installing torch (``cuda_check.diagnose``, printed in the
console). A user who starts OmniTalk from the menu sees no console, so the app asks again at its
first start (``app/first_start.py`` shows the answer in a dialog that offers to go on with the CPU)
and ``--self-check`` reports it. Both use ``device_problem``, which adds what the launcher does not
need to say: there is no driver at all (then the launcher chose the CPU build without a word), and
whether an NVIDIA card is in the PC anyway (Linux: the PCI vendor id in sysfs), which tells
"install the driver" from "this PC has no NVIDIA GPU".

``probe`` is slow (imports torch, runs nvidia-smi): call it off the UI thread.
Standard library only, like the rest of the launcher package.
"""

from __future__ import annotations

import contextlib
import io
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from installer.cuda_check import PROBE_SCRIPT, TorchProbe, diagnose, parse_probe
from installer.gpu import GpuInfo, detect_nvidia
from installer.torch_build import TORCH_ENV

NVIDIA_PCI_VENDOR = "0x10de"
PCI_DISPLAY_CLASS_PREFIX = "0x03"  # VGA, 3D and other display controllers
PCI_DEVICES = Path("/sys/bus/pci/devices")
DRIVER_URL = "https://www.nvidia.com/Download/index.aspx"


@dataclass(frozen=True, slots=True)
class DeviceState:
    """What the app found about the GPU, the driver and its torch."""

    gpu: GpuInfo | None  # nvidia-smi's view; None: no driver (or no NVIDIA GPU)
    torch: TorchProbe
    nvidia_card_present: bool | None  # an NVIDIA display device on the PCI bus; None: cannot tell


@dataclass(frozen=True, slots=True)
class DeviceProblem:
    """Why the model would run on the CPU, for a dialog: a title, what is wrong, what to do."""

    key: str  # stable name of the situation ("no_driver", "cpu_torch", ...), remembered once accepted
    title: str
    message: str
    fix: str


def nvidia_card_on_pci(devices: Path = PCI_DEVICES) -> bool | None:
    """Linux: whether an NVIDIA display controller is on the PCI bus, driver or not; None elsewhere."""
    if not devices.is_dir():
        return None
    for device in devices.iterdir():
        try:
            vendor = (device / "vendor").read_text().strip().lower()
            device_class = (device / "class").read_text().strip().lower()
        except OSError:
            continue
        if vendor == NVIDIA_PCI_VENDOR and device_class.startswith(PCI_DISPLAY_CLASS_PREFIX):
            return True
    return False


def probe_torch_in_process() -> TorchProbe:
    """The launcher's torch probe, run in this process (the app has torch; a frozen build has no ``-c``)."""
    output = io.StringIO()
    with contextlib.redirect_stdout(output):
        exec(PROBE_SCRIPT, {"__name__": "omnitalk_torch_probe"})  # our own constant script
    return parse_probe(output.getvalue())


def probe(
    detect: Callable[[], GpuInfo | None] = detect_nvidia,
    torch_probe: Callable[[], TorchProbe] = probe_torch_in_process,
    pci: Callable[[], bool | None] = nvidia_card_on_pci,
) -> DeviceState:
    return DeviceState(gpu=detect(), torch=torch_probe(), nvidia_card_present=pci())


def launcher_command(windows: bool | None = None) -> str:
    windows = os.name == "nt" if windows is None else windows
    return "omnitalk.cmd" if windows else "./omnitalk"


def _torch_fix(windows: bool, frozen: bool) -> str:
    if frozen:
        return (
            "This OmniTalk build carries a CPU-only PyTorch. Install OmniTalk with its installer or "
            "launcher instead: it installs the CUDA build your driver runs."
        )
    if windows:
        return (
            f"Open a terminal in the OmniTalk folder and run: set {TORCH_ENV}=cuda && omnitalk.cmd install "
            "(it installs the CUDA build of PyTorch for your driver, about 3 GB)."
        )
    return (
        f"In the OmniTalk folder run: {TORCH_ENV}=cuda ./omnitalk install "
        "(it installs the CUDA build of PyTorch for your driver, about 3 GB)."
    )


def device_problem(
    state: DeviceState, *, windows: bool | None = None, frozen: bool | None = None
) -> DeviceProblem | None:
    """Why OmniTalk would run on the CPU here, with the fix; None when CUDA works."""
    windows = os.name == "nt" if windows is None else windows
    frozen = bool(getattr(sys, "frozen", False)) if frozen is None else frozen
    torch = state.torch
    if torch.error is not None:
        return DeviceProblem(
            "torch_broken",
            "PyTorch does not load",
            f"OmniTalk's PyTorch cannot be loaded: {torch.error}",
            f"Run {launcher_command(windows)} install again; it repairs the installation.",
        )
    if torch.available:
        verdict = diagnose(torch, state.gpu, None)
        if verdict.ok:
            return None
        return DeviceProblem("cuda_unusable", "The GPU cannot be used", verdict.message, verdict.fix or "")
    if state.gpu is None:
        cpu_note = " OmniTalk can run on the CPU, but answers take minutes instead of seconds."
        if state.nvidia_card_present:
            return DeviceProblem(
                "no_driver",
                "The NVIDIA driver is not installed",
                "This PC has an NVIDIA graphics card, but its driver is not installed (or not loaded), so "
                "OmniTalk cannot use it." + cpu_note,
                "Install the NVIDIA driver (Ubuntu: sudo ubuntu-drivers install; other systems: your "
                f"distribution's NVIDIA driver package or {DRIVER_URL}), restart the PC, then start OmniTalk again.",
            )
        return DeviceProblem(
            "no_gpu",
            "No NVIDIA GPU found",
            "OmniTalk found no NVIDIA GPU with a working driver (nvidia-smi is missing or fails)." + cpu_note,
            f"If this PC has an NVIDIA GPU, install its driver from {DRIVER_URL} (on Linux: your "
            "distribution's NVIDIA driver package), restart the PC, then start OmniTalk again.",
        )
    if torch.cuda is None:
        return DeviceProblem(
            "cpu_torch",
            "PyTorch is the CPU-only build",
            f"This PC has {state.gpu.describe()}, but OmniTalk's PyTorch {torch.torch_version} is the "
            "CPU-only build, so the GPU is not used.",
            _torch_fix(windows, frozen),
        )
    verdict = diagnose(torch, state.gpu, None)
    return DeviceProblem("cuda_unusable", "CUDA does not work", verdict.message, verdict.fix or "")
