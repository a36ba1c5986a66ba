"""OmniTalk launcher: one command sets up everything, then runs the app or the test suite.

    ./omnitalk [APP ARGS]        (omnitalk.cmd on Windows)  install if needed, then start the app
    ./omnitalk test [PYTEST ARGS]                           install with dev tools, then run pytest
    ./omnitalk install [--desktop] [--no-shortcuts]         install, then add OmniTalk to the app menu
    ./omnitalk uninstall                                    remove what ``install`` added to the menu

What it does (re-runs are fast: a stamp in ``.venv`` records what was installed):
1. makes a virtual environment in the checkout (``.venv``);
2. installs the torch build this PC needs (``torch_build.choose_torch``), one pinned version
   (``TORCH_VERSION``): no NVIDIA GPU -> the CPU build (on Linux from PyTorch's CPU index, since
   PyPI's Linux torch is a CUDA build with GB of NVIDIA libraries; Windows and macOS PyPI wheels are
   CPU builds); an NVIDIA GPU -> the CUDA build its driver runs and that has kernels for the GPU
   (CUDA 13.0 from PyPI on Linux with driver R580+, otherwise from the PyTorch index). An
   unreachable index costs at most a few seconds (a DNS failure: tens of milliseconds), then the
   default index is used and the launcher says what that gave (``torch_install``); the next run
   tries the index again if that was not the wanted build. ``OMNITALK_TORCH`` overrides the choice;
3. on a PC with an NVIDIA GPU, checks ``torch.cuda.is_available()`` in the new environment and
   prints the reason and the fix when it is False (``cuda_check``), and pins onnxruntime-gpu to
   torch's CUDA major (``torch_build.choose_onnxruntime``);
4. installs the project (editable) and, for ``test``, its ``dev`` extra;
5. on Linux, checks the system libraries the app needs (and, for ``test``, the tools the tests use)
   and installs what is missing as root or with passwordless sudo, or prints the command and stops
   (``system_packages``; not for ``--version``/``--help``, which need no Qt);
6. runs the app or pytest in the environment.

pip's output is shown as one progress line per step (``pip_progress``) and kept in full in
``.venv/omnitalk-install.log``: beside the environment it describes (deleting ``.venv`` deletes
both), in the checkout where a user looks, and known before anything is installed (the app's log
folder comes from platformdirs, which is not installed yet when the first install fails).

Standard library only: this runs before anything is installed. Run as ``python installer/bootstrap.py``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if not __package__:  # run as a script: make the `installer` package importable
    sys.path.insert(0, str(ROOT))

from installer.console import StatusLine, format_duration, say  # noqa: E402
from installer.cuda_check import cuda_libraries_present, diagnose, probe_torch  # noqa: E402
from installer.gpu import GpuInfo, detect_nvidia  # noqa: E402
from installer.install_lock import install_lock  # noqa: E402
from installer.pip_progress import (  # noqa: E402
    LOG_NAME,
    RAW_PROGRESS_PIP,
    InstallLog,
    PipFailed,
    PipProgress,
    pip_version,
    run_pip,
)
from installer.system_packages import (  # noqa: E402
    APP_REQUIREMENTS,
    APT_TEST_PACKAGES,
    SKIP_ENV,
    SYSTEM_REQUIREMENTS,
    SystemRequirement,
    ensure_system_requirements,
)
from installer.torch_build import (  # noqa: E402
    TORCH_ENV,
    OnnxruntimeChoice,
    TorchChoice,
    choose_onnxruntime,
    choose_torch,
)
from installer.torch_install import install_torch, probe_index  # noqa: E402

__all__ = ["APT_TEST_PACKAGES", "ensure_environment", "main"]

VENV_DIR = ROOT / ".venv"
LOCK_PATH = ROOT / ".omnitalk-install.lock"
STAMP_NAME = "omnitalk-install.json"
MIN_PYTHON = (3, 10)
# Arguments that main.py answers without Qt: no system libraries needed.
INFO_ARGS = {"--version", "--help", "-h"}
# --self-check reports missing system libraries itself, next to everything else it checks.
NO_SYSTEM_CHECK_ARGS = INFO_ARGS | {"--self-check"}


def venv_python(venv: Path | None = None) -> Path:
    venv = venv or VENV_DIR
    if os.name == "nt":
        return venv / "Scripts" / "python.exe"
    return venv / "bin" / "python"


def site_packages(venv: Path | None = None) -> list[Path]:
    venv = venv or VENV_DIR
    return [p for p in (*venv.glob("lib/python*/site-packages"), venv / "Lib" / "site-packages") if p.is_dir()]


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


def _read_stamp(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


class _Steps:
    """``[k/N] title`` labels for the install's steps."""

    def __init__(self, names: Sequence[str]) -> None:
        self._names = list(names)

    def label(self, name: str) -> str:
        return f"[{self._names.index(name) + 1}/{len(self._names)}]"


def _create_venv() -> None:
    result = subprocess.run([sys.executable, "-m", "venv", str(VENV_DIR)], capture_output=True, text=True)
    if result.returncode != 0:
        shutil.rmtree(VENV_DIR, ignore_errors=True)  # a half-made venv would break the next run
        detail = (result.stderr or result.stdout).strip()
        raise SystemExit(
            f"[omnitalk] could not create the virtual environment:\n{detail}\n"
            "On Debian/Ubuntu install the venv module first: sudo apt-get install python3-venv"
        )


def _report_cuda(
    python: Path, gpu: GpuInfo | None, wanted: str | None, log: InstallLog
) -> tuple[OnnxruntimeChoice, str | None]:
    """Check CUDA in the new environment; return the onnxruntime-gpu choice and a warning if CUDA fails."""
    probe = probe_torch(python)
    log.note(f"torch probe: {probe}")
    verdict = diagnose(probe, gpu, wanted)
    if verdict.ok:
        say(f"CUDA check: {verdict.message}")
        warning = None
    else:
        warning = f"CUDA is not available: {verdict.message}" + (f"\nFix: {verdict.fix}" if verdict.fix else "")
        say(f"warning: {warning}")
    libraries = bool(
        probe.cuda
        and probe.torch_dir
        and cuda_libraries_present(probe.torch_dir, int(probe.cuda.split(".")[0]), os.name == "nt")
    )
    onnxruntime = choose_onnxruntime(probe.cuda if probe.error is None else None, libraries)
    say(f"onnxruntime-gpu: {onnxruntime.requirement or 'as the project requires'} ({onnxruntime.reason})")
    return onnxruntime, warning


def ensure_environment(extras: Sequence[str]) -> Path:
    """Create/refresh ``.venv`` so it holds torch (right build) and the project; return its python.
    One launcher at a time: a second one (a second click on the menu entry) waits, then finds it done."""
    with install_lock(LOCK_PATH, say):
        return _ensure_environment(extras)


def _ensure_environment(extras: Sequence[str]) -> Path:
    if sys.version_info < MIN_PYTHON:
        wanted = ".".join(map(str, MIN_PYTHON))
        raise SystemExit(f"[omnitalk] Python {wanted}+ is needed, this is {platform.python_version()}")
    system, machine = platform.system(), platform.machine()
    gpu = detect_nvidia()
    try:
        choice = choose_torch(system, machine, gpu, os.environ.get(TORCH_ENV))
    except ValueError as exc:
        raise SystemExit(f"[omnitalk] {exc}") from exc
    python = venv_python()
    fingerprint = install_fingerprint((ROOT / "pyproject.toml").read_bytes(), choice, extras, platform.python_version())
    stamp_path = VENV_DIR / STAMP_NAME
    stamp = _read_stamp(stamp_path)
    if python.exists() and stamp.get("fingerprint") == fingerprint:
        if not (stamp.get("retry_index") and choice.index_url and probe_index(choice.index_url) is None):
            return python
        say(f"{choice.index_url} can be reached now: installing the {choice.build} build of torch")

    started = time.monotonic()
    fresh = not python.exists()
    check_cuda = gpu is not None or bool(choice.build and choice.build.startswith("cu"))
    steps = _Steps(
        [
            *(["venv"] if fresh else []),
            *(["torch"] if choice.requirement else []),
            *(["cuda"] if check_cuda else []),
            "project",
        ]
    )
    if fresh:
        say(f"{steps.label('venv')} creating the virtual environment in {VENV_DIR}")
        _create_venv()
    log = InstallLog(VENV_DIR / LOG_NAME)
    status = StatusLine()
    folders = site_packages()
    raw = (pip_version(folders) or (0, 0)) >= RAW_PROGRESS_PIP
    pip_base = [str(python), "-m", "pip", "--disable-pip-version-check", "--no-input"]

    def pip(args: Sequence[str], step: str) -> PipProgress:
        if args[0] == "install":
            args = ["install", "--progress-bar", "raw" if raw else "off", *args[1:]]
        return run_pip([*pip_base, *args], step=step, log=log, status=status)

    try:
        log.note(f"GPU: {gpu.describe() if gpu else 'none found'}\ntorch choice: {choice.describe()}")
        say(f"torch: {choice.describe()}")
        if choice.warning:
            say(f"warning: {choice.warning}")
        torch = None
        if choice.requirement:
            torch = install_torch(
                choice,
                system=system,
                machine=machine,
                driver=gpu.driver_version if gpu else None,
                site_packages=folders,
                pip=pip,
                step=f"{steps.label('torch')} torch",
                probe=probe_index,
                say=say,
            )
            log.note("\n".join(torch.messages))
        cuda_warning = None
        onnxruntime = OnnxruntimeChoice(None, "no GPU check")
        if check_cuda:
            say(f"{steps.label('cuda')} checking CUDA in the new environment")
            onnxruntime, cuda_warning = _report_cuda(python, gpu, choice.build, log)
        target = f"{ROOT}[{','.join(extras)}]" if extras else str(ROOT)
        what = "OmniTalk, its libraries" + (" and the dev tools" if "dev" in extras else "")
        pip(
            ["install", "-e", target, *([onnxruntime.requirement] if onnxruntime.requirement else [])],
            f"{steps.label('project')} {what}",
        )
    except PipFailed as exc:
        log.close()
        raise SystemExit(f"[omnitalk] {exc}") from exc
    log.close()
    stamp_path.write_text(
        json.dumps(
            {
                "fingerprint": fingerprint,
                "torch": asdict(torch.choice if torch else choice),
                "torch_version": torch.version if torch else None,
                "retry_index": bool(torch and torch.retry_index),
                "onnxruntime": onnxruntime.requirement,
            },
            indent=2,
        )
    )
    say(f"environment ready in {format_duration(time.monotonic() - started)} (install log: {log.path})")
    if cuda_warning:
        say(f"warning: {cuda_warning}")
    return python


def ensure_system(requirements: Sequence[SystemRequirement]) -> None:
    """On Linux: the system libraries (and test tools) present, or installed, or SystemExit with the command."""
    if platform.system() != "Linux" or os.environ.get(SKIP_ENV, "").lower() == "skip":
        return
    ensure_system_requirements(requirements, site_packages=site_packages())


def _run_child(cmd: Sequence[str | Path]) -> int:
    # The venv interpreter runs as a child (not exec) so this works the same on Windows.
    try:
        return subprocess.run([str(c) for c in cmd], cwd=ROOT).returncode
    except KeyboardInterrupt:
        return 130


def _menu_parser(command: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=f"omnitalk {command}")
    if command == "install":
        parser.description = (
            "Set up everything OmniTalk needs (as the first start does), then add OmniTalk to your "
            "application menu (Linux) or Start menu (Windows), for this user only."
        )
        parser.add_argument("--desktop", action="store_true", help="Windows: also put a shortcut on the desktop")
        parser.add_argument(
            "--no-shortcuts", action="store_true", help="only set up (the Windows installer makes its own shortcuts)"
        )
    else:
        parser.description = (
            "Remove what `install` added to the menu. The environment (.venv) and your models and settings stay."
        )
    return parser


def install_menu_entry(desktop: bool) -> list[Path]:
    """The application-menu entry (Linux) or Start-menu shortcut (Windows); [] where there is neither."""
    if os.name == "nt":
        from installer import shortcuts_windows

        return shortcuts_windows.install(ROOT, desktop)
    if platform.system() == "Linux":
        from installer import desktop_linux

        return desktop_linux.install(ROOT)
    return []


def uninstall_menu_entry() -> tuple[list[Path], int]:
    """Remove what install_menu_entry added: (the files removed, how many empty folders went with them)."""
    if os.name == "nt":
        from installer import shortcuts_windows

        return shortcuts_windows.uninstall(), 0
    from installer import desktop_linux

    removed = desktop_linux.uninstall()
    return list(removed.files), len(removed.folders)


def install_command(argv: Sequence[str]) -> int:
    options = _menu_parser("install").parse_args(argv)
    ensure_environment([])
    ensure_system(APP_REQUIREMENTS)
    if options.no_shortcuts:
        say("OmniTalk is installed.")
        return 0
    try:
        made = install_menu_entry(options.desktop)
    except (OSError, RuntimeError) as exc:
        raise SystemExit(f"[omnitalk] the environment is ready, but the menu entry failed: {exc}") from exc
    if not made:
        say(f"OmniTalk is installed; start it with {ROOT / 'omnitalk'} (no menu entry on {platform.system()}).")
        return 0
    entries = [p for p in made if p.suffix in (".desktop", ".lnk")]
    where = "Start menu" if os.name == "nt" else "application menu"
    say(f"OmniTalk is in your {where}:\n" + "\n".join(f"  {p}" for p in entries))
    return 0


def uninstall_command(argv: Sequence[str]) -> int:
    _menu_parser("uninstall").parse_args(argv)
    files, folders = uninstall_menu_entry()
    if files:
        also = f"\n  and {folders} empty folder(s) that install had created" if folders else ""
        say("removed:\n" + "\n".join(f"  {p}" for p in files) + also)
    else:
        say("nothing to remove: OmniTalk was not added to the menu for this user.")
    say(
        f"Kept: the environment ({VENV_DIR}), your settings and downloaded models "
        "(README, \"Where things live\"). Delete them yourself if you no longer need them."
    )
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["install"]:
        return install_command(args[1:])
    if args[:1] == ["uninstall"]:
        return uninstall_command(args[1:])
    if args[:1] == ["test"]:
        python = ensure_environment(["dev"])
        ensure_system(SYSTEM_REQUIREMENTS)
        return _run_child([python, "-m", "pytest", *args[1:]])
    python = ensure_environment([])
    if not (args and set(args) <= NO_SYSTEM_CHECK_ARGS):
        ensure_system(APP_REQUIREMENTS)
    return _run_child([python, ROOT / "main.py", *args])


if __name__ == "__main__":
    sys.exit(main())
