"""Which torch build to install, and which onnxruntime-gpu goes with it. Decisions only, no I/O.

The facts these tables encode (check them all when ``TORCH_VERSION`` changes):

- PyTorch 2.13 publishes CUDA 12.6 and 13.0 builds (stable) and 13.2 (experimental) on
  ``download.pytorch.org/whl/cuXYZ`` and CPU builds on ``download.pytorch.org/whl/cpu``
  (pytorch/pytorch RELEASE.md, "Release Compatibility Matrix"). There is no 12.8 build of 2.13.
- PyPI's Linux x86_64 ``torch==2.13.0`` is the CUDA 13.0 build and pulls several GB of ``nvidia-*``
  wheels; PyPI's Windows and macOS wheels are CPU builds.
- GPU architectures with kernels: cu126 Maxwell (5.0) to Hopper (9.0); cu130 and cu132 Turing (7.5)
  to Blackwell (12.0). A GPU runs kernels built for its major version and a lower or equal minor.
- A driver runs builds up to the CUDA version it reports, and any build of the same CUDA major
  through minor-version compatibility (CUDA 12.x on driver R525+, 13.x on R580+).
- onnxruntime-gpu on PyPI: 1.19 to 1.26 are CUDA 12 builds, 1.27 and later CUDA 13 builds; with
  1.27 onnxruntime stopped publishing CUDA 12 Python packages (release 1.27.0 notes: "CUDA 12
  packages are deprecated"). Its ``[cuda,cudnn]`` extras install the CUDA runtime and cuDNN wheels
  into the same ``nvidia/`` folders torch's own wheels use.

Standard library only (the launcher runs before anything is installed).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from installer.gpu import GpuInfo

TORCH_ENV = "OMNITALK_TORCH"
# The one pinned torch version: the CPU index, the CUDA indexes and PyPI all have it.
TORCH_VERSION = "2.13.0"
TORCH_REQUIREMENT = f"torch=={TORCH_VERSION}"
# The project's own range (pyproject.toml); used where an explicit index has no TORCH_VERSION build.
PROJECT_TORCH_RANGE = "torch>=2.4,<3"
TORCH_INDEX_URL = "https://download.pytorch.org/whl/{tag}"
CPU = "cpu"
X86_64 = ("x86_64", "amd64")


@dataclass(frozen=True, slots=True)
class CudaBuild:
    """One CUDA build of ``TORCH_VERSION`` on the PyTorch index."""

    tag: str  # index folder, e.g. "cu126"
    cuda: tuple[int, int]
    oldest_gpu: tuple[int, int]  # oldest compute capability with kernels
    newest_gpu_major: int  # newest compute-capability major with kernels
    stable: bool = True  # the automatic choice only picks stable builds

    def runs_on(self, driver_cuda: tuple[int, int]) -> bool:
        return driver_cuda >= self.cuda or driver_cuda[0] == self.cuda[0]

    def has_kernels_for(self, capability: tuple[int, int]) -> bool:
        return self.oldest_gpu <= capability and capability[0] <= self.newest_gpu_major


# Newest first.
TORCH_CUDA_BUILDS: tuple[CudaBuild, ...] = (
    CudaBuild("cu132", (13, 2), (7, 5), 12, stable=False),
    CudaBuild("cu130", (13, 0), (7, 5), 12),
    CudaBuild("cu126", (12, 6), (5, 0), 9),
)
STABLE_CUDA_BUILDS = tuple(build for build in TORCH_CUDA_BUILDS if build.stable)
# The CUDA build PyPI serves as torch==TORCH_VERSION for Linux x86_64.
PYPI_LINUX_CUDA_TAG = "cu130"
# Oldest driver branch for each CUDA major (minor-version compatibility), for messages.
MIN_DRIVER_FOR_CUDA_MAJOR = {12: 525, 13: 580}

# onnxruntime-gpu versions built for each CUDA major (see the module docstring).
ONNXRUNTIME_FOR_CUDA_MAJOR = {12: ">=1.21,<1.27", 13: ">=1.27"}
ONNXRUNTIME_PACKAGE = "onnxruntime-gpu"
ONNXRUNTIME_CUDA_EXTRAS = "[cuda,cudnn]"


@dataclass(frozen=True, slots=True)
class TorchChoice:
    """How to install torch, and why."""

    requirement: str | None  # None: leave torch as installed
    index_url: str | None  # None: the default package index (PyPI or the user's mirror)
    build: str | None  # "cpu", "cu126", ...; None where only the requirement decides (skip, custom)
    reason: str
    warning: str | None = None  # something the user must do for the GPU to be used

    def describe(self) -> str:
        if self.requirement is None:
            return self.reason
        what = "the CPU build" if self.build == CPU else f"the {self.build} CUDA build" if self.build else "the build"
        where = self.index_url or "the default package index"
        return f"{what} {self.requirement} from {where} ({self.reason})"


@dataclass(frozen=True, slots=True)
class OnnxruntimeChoice:
    """The onnxruntime-gpu requirement added to the project install (None: the project's own)."""

    requirement: str | None
    reason: str


def _cuda_text(version: tuple[int, int]) -> str:
    return f"{version[0]}.{version[1]}"


def _gpu_arch(capability: tuple[int, int]) -> str:
    return f"sm_{capability[0]}{capability[1]}"


def choose_cuda_build(gpu: GpuInfo | None) -> tuple[CudaBuild | None, str]:
    """The stable CUDA build of ``TORCH_VERSION`` that the driver runs and that has kernels for every
    GPU, newest first; an exact match before minor-version compatibility. None (with the reason and
    what to do) where no build fits."""
    driver_cuda = gpu.cuda_version if gpu else None
    capabilities = gpu.capabilities if gpu else ()

    def covers(build: CudaBuild) -> bool:
        return all(build.has_kernels_for(capability) for capability in capabilities)

    covering = [build for build in STABLE_CUDA_BUILDS if covers(build)]
    if not covering:
        archs = ", ".join(sorted({_gpu_arch(c) for c in capabilities}))
        return None, (
            f"no CUDA build of torch {TORCH_VERSION} has kernels for this GPU ({archs}); OmniTalk runs on the CPU"
        )
    if driver_cuda is None:
        # The driver did not say: the build that the oldest drivers run.
        build = min(covering, key=lambda b: b.cuda)
        return build, f"driver's CUDA version unknown: the most widely supported CUDA {_cuda_text(build.cuda)} build"
    for build in covering:
        if driver_cuda >= build.cuda:
            return build, f"the driver supports CUDA {_cuda_text(driver_cuda)}"
    for build in covering:
        if build.runs_on(driver_cuda):
            return build, (
                f"the driver supports CUDA {_cuda_text(driver_cuda)}; the CUDA {_cuda_text(build.cuda)} build "
                "runs on it through CUDA minor-version compatibility"
            )
    needed = min(covering, key=lambda b: b.cuda)
    driver = gpu.driver_version if gpu else "?"
    return None, (
        f"NVIDIA driver {driver} supports CUDA {_cuda_text(driver_cuda)}, but torch {TORCH_VERSION} for this "
        f"GPU needs CUDA {needed.cuda[0]} (driver R{MIN_DRIVER_FOR_CUDA_MAJOR[needed.cuda[0]]} or newer). "
        "Update the NVIDIA driver, then run ./omnitalk again to get the CUDA build; until then OmniTalk "
        "runs on the CPU"
    )


def _index_for(system: str, tag: str) -> str | None:
    if tag == PYPI_LINUX_CUDA_TAG and system == "Linux":
        return None  # the same build, from the index (and mirrors) every machine can reach
    if tag == CPU and system != "Linux":
        return None  # PyPI's Windows and macOS wheels are CPU builds
    return TORCH_INDEX_URL.format(tag=tag)


def cpu_choice(system: str, reason: str, warning: str | None = None) -> TorchChoice:
    return TorchChoice(TORCH_REQUIREMENT, _index_for(system, CPU), CPU, reason, warning)


def cuda_choice(system: str, tag: str, reason: str, warning: str | None = None) -> TorchChoice:
    known = any(build.tag == tag for build in TORCH_CUDA_BUILDS)
    requirement = TORCH_REQUIREMENT if known else PROJECT_TORCH_RANGE
    return TorchChoice(requirement, _index_for(system, tag), tag, reason, warning)


def choose_torch(system: str, machine: str, gpu: GpuInfo | None, override: str | None) -> TorchChoice:
    """Decide which torch build to install.

    ``override`` (from ``OMNITALK_TORCH``): ``auto``/empty = detect; ``cpu``; ``cuda`` (the CUDA build
    for this driver, even where no GPU was detected); ``cuXYZ`` (that PyTorch CUDA index, e.g.
    ``cu126``); ``skip`` (keep whatever torch the environment has); or a full requirement such as
    ``torch==2.8.0`` (installed from the default index).
    """
    value = (override or "auto").strip()
    lowered = value.lower()
    if lowered == "skip":
        return TorchChoice(None, None, None, f"{TORCH_ENV}=skip: torch left as installed")
    if lowered == CPU:
        return cpu_choice(system, f"{TORCH_ENV}=cpu")
    if lowered == "cuda":
        build, why = choose_cuda_build(gpu)
        if build is None:  # asked for CUDA: the most compatible build, with the reason it may not work
            fallback = min(STABLE_CUDA_BUILDS, key=lambda b: b.cuda)
            return cuda_choice(system, fallback.tag, f"{TORCH_ENV}=cuda", warning=why)
        return cuda_choice(system, build.tag, f"{TORCH_ENV}=cuda; {why}")
    if re.fullmatch(r"cu\d{3}", lowered):
        return cuda_choice(system, lowered, f"{TORCH_ENV}={lowered}")
    if lowered.startswith("torch"):
        return TorchChoice(value, None, None, f"{TORCH_ENV}={value}")
    if lowered != "auto":
        raise ValueError(
            f"{TORCH_ENV}={value!r} is not understood; use auto, cpu, cuda, cu126 (etc.), skip, "
            f"or a requirement like {TORCH_REQUIREMENT}"
        )
    if gpu is None:
        return cpu_choice(system, "no NVIDIA GPU found, so no CUDA libraries are needed")
    if system not in ("Linux", "Windows") or machine.lower() not in X86_64:
        return cpu_choice(system, f"{gpu.describe()}, but OmniTalk has no CUDA support on {system}/{machine}")
    build, why = choose_cuda_build(gpu)
    if build is None:
        return cpu_choice(system, f"{gpu.describe()}: no matching CUDA build", warning=why)
    return cuda_choice(system, build.tag, f"{gpu.describe()}; {why}")


def fallback_choice(choice: TorchChoice, why: str) -> TorchChoice:
    """Installing ``choice.requirement`` from the default index, when ``choice.index_url`` cannot be
    reached. The build is then the default index's (``build`` None: an installed torch that satisfies
    the requirement is kept)."""
    reason = f"{why}; installing {choice.requirement} from the default package index instead"
    return TorchChoice(choice.requirement, None, None, reason)


def fallback_warning(wanted: TorchChoice, installed_build: str | None, system: str, driver: str | None) -> str | None:
    """What it means for this PC that the default index gave ``installed_build`` instead of
    ``wanted.build``; None when it gave the wanted build after all."""
    if installed_build == wanted.build or wanted.build is None:
        return None
    retry = f"The next ./omnitalk tries {wanted.index_url} again."
    got = f"the {installed_build} CUDA build" if installed_build and installed_build != CPU else "the CPU build"
    if wanted.build == CPU:
        return (
            f"the default index gave {got} of torch: several GB of NVIDIA libraries this PC does not need "
            f"(torch still runs on the CPU). {retry}"
        )
    if installed_build == CPU:
        return f"the default index only has the CPU build of torch for {system}: OmniTalk runs on the CPU. {retry}"
    major = int(installed_build[2:4]) if installed_build and installed_build.startswith("cu") else None
    needs = (
        f", which needs NVIDIA driver R{MIN_DRIVER_FOR_CUDA_MAJOR[major]} or newer"
        if major in MIN_DRIVER_FOR_CUDA_MAJOR
        else ""
    )
    on_this_pc = f" (this PC has {driver})" if driver else ""
    return (
        f"the default index gave {got} of torch instead of {wanted.build}{needs}{on_this_pc}: the GPU may not be "
        f"used (see the CUDA check below). {retry} Updating the NVIDIA driver is the other way."
    )


def build_of_installed(version: str, system: str, machine: str) -> str | None:
    """The build an installed torch version string names: ``2.13.0+cu126`` -> ``cu126``; a PyPI
    ``2.13.0`` without a local label is PyPI's build for this platform; None where unknown."""
    public, _, label = version.partition("+")
    if label:
        return label if label == CPU or re.fullmatch(r"cu\d{3}", label) else None
    if public != TORCH_VERSION:
        return None
    if system == "Linux":
        return PYPI_LINUX_CUDA_TAG if machine.lower() in X86_64 else None
    return CPU


def choose_onnxruntime(torch_cuda: str | None, cuda_libraries_from_torch: bool) -> OnnxruntimeChoice:
    """onnxruntime-gpu for the torch that was installed: the build for torch's CUDA major, so both use
    one set of CUDA/cuDNN libraries. Its ``[cuda,cudnn]`` extras only where torch brought none: they
    would overwrite torch's cuDNN files where the versions differ.

    ``torch_cuda``: ``torch.version.cuda`` of the installed torch ("13.0"), None for a CPU build.
    """
    if torch_cuda is None:
        return OnnxruntimeChoice(
            None, "CPU build of torch: onnxruntime-gpu as the project requires it (runs on the CPU)"
        )
    major = int(torch_cuda.split(".")[0])
    versions = ONNXRUNTIME_FOR_CUDA_MAJOR.get(major)
    if versions is None:
        return OnnxruntimeChoice(
            None,
            f"no onnxruntime-gpu is built for CUDA {major} (torch {torch_cuda}): the vocoder's onnxruntime "
            "session will run on the CPU",
        )
    if cuda_libraries_from_torch:
        return OnnxruntimeChoice(
            f"{ONNXRUNTIME_PACKAGE}{versions}",
            f"the CUDA {major} build, to match torch's CUDA {torch_cuda}; CUDA and cuDNN libraries come from torch",
        )
    return OnnxruntimeChoice(
        f"{ONNXRUNTIME_PACKAGE}{ONNXRUNTIME_CUDA_EXTRAS}{versions}",
        f"the CUDA {major} build, to match torch's CUDA {torch_cuda}, with CUDA and cuDNN libraries "
        "(torch did not bring them)",
    )
