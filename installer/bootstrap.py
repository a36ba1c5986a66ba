"""OmniTalk launcher: one command sets up everything, then runs the app or the test suite.

    ./omnitalk [APP ARGS]        (omnitalk.cmd on Windows)  install if needed, then start the app
    ./omnitalk test [PYTEST ARGS]                           install with dev tools, then run pytest

What it does, every time (re-runs are fast: a stamp records what was installed):
1. makes a virtual environment in the checkout (``.venv``);
2. installs the right torch build first: CUDA on an NVIDIA PC (PyPI's Linux wheels are CUDA builds;
   on Windows PyPI only has CPU wheels, so the PyTorch CUDA index is used), the CPU build
   ``torch==2.13.0`` otherwise. ``OMNITALK_TORCH`` overrides the choice (see ``choose_torch``);
3. installs the project (editable) and, for ``test``, its ``dev`` extra and the Debian packages the
   tests need.

Standard library only: this runs before anything is installed.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import re
import shutil
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VENV_DIR = ROOT / ".venv"
STAMP_NAME = "omnitalk-install.json"
MIN_PYTHON = (3, 10)

TORCH_ENV = "OMNITALK_TORCH"
CPU_TORCH = "torch==2.13.0"
CUDA_TORCH = "torch>=2.6,<3"
TORCH_INDEX_URL = "https://download.pytorch.org/whl/{tag}"
# CUDA wheel indexes of PyTorch, newest first: (minimum driver CUDA version, index tag).
CUDA_WHEEL_TAGS: tuple[tuple[tuple[int, int], str], ...] = (
    ((13, 0), "cu130"),
    ((12, 8), "cu128"),
    ((12, 6), "cu126"),
    ((11, 8), "cu118"),
)
# PyPI's Linux torch wheels bundle CUDA 12.8+; older drivers need an older CUDA build from the index.
PYPI_LINUX_MIN_CUDA = (12, 8)

# Debian packages the test suite needs (real audio through PulseAudio, real windows under Xvfb,
# key presses with xdotool, speech with espeak-ng, screenshots with imagemagick).
APT_TEST_PACKAGES = (
    "libportaudio2",
    "libsndfile1",
    "xvfb",
    "xauth",
    "libxcb-icccm4",
    "libxcb-keysyms1",
    "libxcb-image0",
    "libxcb-render-util0",
    "libxcb-xkb1",
    "libxcb-cursor0",
    "libxkbcommon-x11-0",
    "libxkbcommon0",
    "libegl1",
    "libgl1",
    "libfontconfig1",
    "libdbus-1-3",
    "xdotool",
    "espeak-ng",
    "sox",
    "pulseaudio",
    "pulseaudio-utils",
    "imagemagick",
)

Runner = Callable[..., subprocess.CompletedProcess]


@dataclass(frozen=True, slots=True)
class GpuInfo:
    """What ``nvidia-smi`` says about the machine's NVIDIA GPUs."""

    names: tuple[str, ...]
    driver_version: str
    cuda_version: tuple[int, int] | None  # highest CUDA the driver supports


@dataclass(frozen=True, slots=True)
class TorchChoice:
    """How to install torch: a requirement, an optional index, and a human-readable reason."""

    requirement: str | None  # None: leave torch to the project's own requirement
    index_url: str | None
    label: str


def parse_nvidia_smi(query_output: str, header_output: str) -> GpuInfo | None:
    """Build GpuInfo from ``nvidia-smi --query-gpu=name,driver_version --format=csv,noheader`` and
    the plain ``nvidia-smi`` banner (which carries "CUDA Version: X.Y")."""
    names: list[str] = []
    driver = ""
    for line in query_output.splitlines():
        if not line.strip():
            continue
        name, _, version = line.rpartition(",")
        names.append(name.strip())
        driver = driver or version.strip()
    if not names:
        return None
    match = re.search(r"CUDA Version:\s*(\d+)\.(\d+)", header_output)
    cuda = (int(match.group(1)), int(match.group(2))) if match else None
    return GpuInfo(names=tuple(names), driver_version=driver, cuda_version=cuda)


def detect_nvidia(run: Runner = subprocess.run) -> GpuInfo | None:
    """Return the NVIDIA GPUs of this machine, or None when there is no usable driver."""
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return None
    try:
        query = run(
            [exe, "--query-gpu=name,driver_version", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=30,
        )
        banner = run([exe], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return None
    if query.returncode != 0:
        return None
    return parse_nvidia_smi(query.stdout, banner.stdout if banner.returncode == 0 else "")


def cuda_tag_for(cuda_version: tuple[int, int] | None) -> str:
    """The newest PyTorch CUDA wheel tag a driver supporting ``cuda_version`` can run."""
    if cuda_version is None:
        return CUDA_WHEEL_TAGS[1][1]  # unknown driver CUDA: a widely supported build
    for minimum, tag in CUDA_WHEEL_TAGS:
        if cuda_version >= minimum:
            return tag
    return CUDA_WHEEL_TAGS[-1][1]


def _cuda_choice(system: str, gpu: GpuInfo | None, tag: str | None = None) -> TorchChoice:
    cuda = gpu.cuda_version if gpu else None
    what = f"NVIDIA GPU ({', '.join(gpu.names)}, driver {gpu.driver_version})" if gpu else "CUDA requested"
    if tag is None and system == "Linux" and (cuda is None or cuda >= PYPI_LINUX_MIN_CUDA):
        return TorchChoice(CUDA_TORCH, None, f"{what}: CUDA build of torch from PyPI")
    tag = tag or cuda_tag_for(cuda)
    return TorchChoice(CUDA_TORCH, TORCH_INDEX_URL.format(tag=tag), f"{what}: torch {tag} build")


def choose_torch(system: str, machine: str, gpu: GpuInfo | None, override: str | None) -> TorchChoice:
    """Decide which torch build to install.

    ``override`` (from ``OMNITALK_TORCH``): ``auto``/empty = detect; ``cpu``; ``cuda`` (best CUDA
    build for the driver); ``cuXYZ`` (that PyTorch CUDA index, e.g. ``cu126``); ``skip`` (install
    nothing special; keep whatever torch the environment has); or a full requirement such as
    ``torch==2.8.0``.
    """
    value = (override or "auto").strip()
    lowered = value.lower()
    if lowered == "skip":
        return TorchChoice(None, None, "OMNITALK_TORCH=skip: torch left as installed")
    if lowered == "cpu":
        return TorchChoice(CPU_TORCH, None, "OMNITALK_TORCH=cpu: CPU build of torch")
    if lowered == "cuda":
        return _cuda_choice(system, gpu)
    if re.fullmatch(r"cu\d{3}", lowered):
        return _cuda_choice(system, gpu, tag=lowered)
    if lowered.startswith("torch"):
        return TorchChoice(value, None, f"OMNITALK_TORCH: {value}")
    if lowered != "auto":
        raise ValueError(
            f"{TORCH_ENV}={value!r} is not understood; use auto, cpu, cuda, cu126 (etc.), skip, "
            "or a requirement like torch==2.13.0"
        )
    if gpu is not None and system in ("Linux", "Windows") and machine.lower() in ("x86_64", "amd64"):
        return _cuda_choice(system, gpu)
    reason = "no NVIDIA GPU found" if gpu is None else f"no CUDA wheels for {system}/{machine}"
    return TorchChoice(CPU_TORCH, None, f"{reason}: CPU build of torch")


def venv_python(venv: Path = VENV_DIR) -> Path:
    if os.name == "nt":
        return venv / "Scripts" / "python.exe"
    return venv / "bin" / "python"


def install_fingerprint(pyproject: bytes, choice: TorchChoice, extras: Sequence[str], python: str) -> str:
    """A hash of everything that decides what gets installed; equal hash = nothing to do."""
    payload = json.dumps(
        {
            "pyproject": hashlib.sha256(pyproject).hexdigest(),
            "torch": asdict(choice),
            "extras": sorted(extras),
            "python": python,
        },
        sort_keys=True,
    )
    return hashlib.sha256(payload.encode()).hexdigest()


def missing_apt_packages(packages: Sequence[str], run: Runner = subprocess.run) -> list[str]:
    """Debian packages from ``packages`` that are not installed (empty where dpkg is unavailable)."""
    if shutil.which("dpkg-query") is None:
        return []
    missing = []
    for name in packages:
        result = run(["dpkg-query", "-W", "-f=${Status}", name], capture_output=True, text=True)
        if result.returncode != 0 or "install ok installed" not in result.stdout:
            missing.append(name)
    return missing


def _say(message: str) -> None:
    print(f"[omnitalk] {message}", flush=True)


def _check(cmd: Sequence[str | Path]) -> None:
    result = subprocess.run([str(c) for c in cmd])
    if result.returncode != 0:
        raise SystemExit(f"[omnitalk] command failed ({result.returncode}): {' '.join(map(str, cmd))}")


def ensure_apt_packages(packages: Sequence[str]) -> None:
    """Install missing Debian packages (as root, or with passwordless sudo); otherwise explain."""
    missing = missing_apt_packages(packages)
    if not missing:
        return
    if shutil.which("apt-get") is None:
        _say(f"warning: cannot install system packages here; some tests need: {' '.join(missing)}")
        return
    prefix: list[str] = []
    if hasattr(os, "geteuid") and os.geteuid() != 0:
        if (
            shutil.which("sudo")
            and subprocess.run(["sudo", "-n", "true"], capture_output=True).returncode == 0
        ):
            prefix = ["sudo", "-n"]
        else:
            raise SystemExit(
                "[omnitalk] the tests need these Debian packages; install them and re-run:\n"
                f"  sudo apt-get install -y {' '.join(missing)}"
            )
    _say(f"installing system packages: {' '.join(missing)}")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    for cmd in (
        prefix + ["apt-get", "update", "-qq"],
        prefix + ["apt-get", "install", "-y", "-qq", *missing],
    ):
        if subprocess.run(cmd, env=env).returncode != 0:
            raise SystemExit(f"[omnitalk] failed: {' '.join(cmd)}")


def ensure_environment(extras: Sequence[str]) -> Path:
    """Create/refresh ``.venv`` so it holds torch (right build) and the project; return its python."""
    if sys.version_info < MIN_PYTHON:
        wanted = ".".join(map(str, MIN_PYTHON))
        raise SystemExit(f"[omnitalk] Python {wanted}+ is needed, this is {platform.python_version()}")
    python = venv_python()
    if not python.exists():
        _say(f"creating virtual environment in {VENV_DIR}")
        _check([sys.executable, "-m", "venv", VENV_DIR])
    choice = choose_torch(platform.system(), platform.machine(), detect_nvidia(), os.environ.get(TORCH_ENV))
    extras = extras_for(choice, extras)
    fingerprint = install_fingerprint(
        (ROOT / "pyproject.toml").read_bytes(), choice, extras, platform.python_version()
    )
    stamp = VENV_DIR / STAMP_NAME
    if stamp.exists() and json.loads(stamp.read_text()).get("fingerprint") == fingerprint:
        return python
    _say(f"installing ({choice.label})")
    pip = [python, "-m", "pip", "install", "--disable-pip-version-check", "-q"]
    if choice.requirement:
        _check([*pip, choice.requirement, *(["--index-url", choice.index_url] if choice.index_url else [])])
    target = f"{ROOT}[{','.join(extras)}]" if extras else str(ROOT)
    _check([*pip, "-e", target])
    stamp.write_text(json.dumps({"fingerprint": fingerprint, "torch": asdict(choice)}, indent=2))
    _say("environment ready")
    return python


def _run_child(cmd: Sequence[str | Path]) -> int:
    # The venv interpreter runs as a child (not exec) so this works the same on Windows.
    try:
        return subprocess.run([str(c) for c in cmd], cwd=ROOT).returncode
    except KeyboardInterrupt:
        return 130


def extras_for(choice: TorchChoice, wanted: Sequence[str]) -> list[str]:
    """Project extras to install: ``wanted`` plus ``cuda`` (onnxruntime's CUDA libraries) on a CUDA build."""
    extras = list(wanted)
    if choice.requirement == CUDA_TORCH:
        extras.append("cuda")
    return extras


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["test"]:
        if platform.system() == "Linux":
            ensure_apt_packages(APT_TEST_PACKAGES)
        python = ensure_environment(["dev"])
        return _run_child([python, "-m", "pytest", *args[1:]])
    python = ensure_environment([])
    return _run_child([python, ROOT / "main.py", *args])


if __name__ == "__main__":
    sys.exit(main())
