"""The launcher's install sequence: steps, fallback, stamp, re-runs, and what `main` checks before starting."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import pytest

from installer import bootstrap
from installer.bootstrap import install_fingerprint
from installer.cuda_check import TorchProbe
from installer.gpu import GpuInfo
from installer.pip_progress import PipProgress
from installer.system_packages import APT_TEST_PACKAGES
from installer.torch_build import choose_torch

ROOT = Path(__file__).resolve().parents[2]
R570 = GpuInfo(("NVIDIA GeForce RTX 3060",), "570.86.10", (12, 8), ((8, 6),))


def test_fingerprint_changes_with_what_decides_the_install() -> None:
    cpu = choose_torch("Linux", "x86_64", None, None)
    cuda = choose_torch("Linux", "x86_64", R570, None)
    base = install_fingerprint(b"[project]", cpu, ["dev"], "3.11.7")
    assert base == install_fingerprint(b"[project]", cpu, ["dev"], "3.11.7")
    assert base != install_fingerprint(b"[project]\n#", cpu, ["dev"], "3.11.7")
    assert base != install_fingerprint(b"[project]", cuda, ["dev"], "3.11.7")
    assert base != install_fingerprint(b"[project]", cpu, [], "3.11.7")
    assert base != install_fingerprint(b"[project]", cpu, ["dev"], "3.12.1")


class Launcher:
    """bootstrap.ensure_environment with a temporary .venv, a fake pip and a fake index probe."""

    def __init__(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, gpu: GpuInfo | None = None) -> None:
        self.venv = tmp_path / ".venv"
        self.pip_calls: list[list[str]] = []
        self.reachable = False
        self.torch_installs = "torch-2.13.0+cpu"
        monkeypatch.setattr(bootstrap, "VENV_DIR", self.venv)
        monkeypatch.setattr(bootstrap, "detect_nvidia", lambda: gpu)
        monkeypatch.setattr(bootstrap.platform, "system", lambda: "Linux")
        monkeypatch.setattr(bootstrap.platform, "machine", lambda: "x86_64")
        monkeypatch.setattr(bootstrap, "_create_venv", self._create_venv)
        monkeypatch.setattr(bootstrap, "probe_index", self._probe)
        monkeypatch.setattr(bootstrap, "run_pip", self._pip)
        monkeypatch.delenv("OMNITALK_TORCH", raising=False)

    def _create_venv(self) -> None:
        python = bootstrap.venv_python(self.venv)
        python.parent.mkdir(parents=True)
        python.write_text("")

    def _probe(self, url: str) -> str | None:
        return None if self.reachable else "[Errno -2] Name or service not known"

    def _pip(self, cmd: Sequence[str], *, step: str, log: object, status: object) -> PipProgress:
        args = list(cmd[5:])  # after: python -m pip --disable-pip-version-check --no-input
        self.pip_calls.append([step, *args])
        progress = PipProgress()
        progress.installed = (self.torch_installs,) if "torch==2.13.0" in args else ("omnitalk-0.1.0",)
        return progress


def test_first_run_without_gpu_falls_back_fast_and_writes_the_stamp(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    launcher = Launcher(tmp_path, monkeypatch)
    python = bootstrap.ensure_environment(["dev"])
    assert python == bootstrap.venv_python(launcher.venv)
    assert launcher.pip_calls == [
        ["[2/3] torch", "install", "--progress-bar", "off", "torch==2.13.0"],
        ["[3/3] OmniTalk, its libraries and the dev tools", "install", "--progress-bar", "off", "-e", f"{ROOT}[dev]"],
    ]
    out = capsys.readouterr().out
    assert "[1/3] creating the virtual environment" in out
    assert "torch: the CPU build torch==2.13.0 from https://download.pytorch.org/whl/cpu (no NVIDIA GPU found" in out
    assert "https://download.pytorch.org/whl/cpu cannot be reached ([Errno -2] Name or service not known)" in out
    assert "torch 2.13.0+cpu is installed (the CPU build)" in out
    assert f"install log: {launcher.venv / 'omnitalk-install.log'}" in out
    stamp = json.loads((launcher.venv / "omnitalk-install.json").read_text())
    assert stamp["torch_version"] == "2.13.0+cpu" and stamp["retry_index"] is False
    assert "GPU: none found" in (launcher.venv / "omnitalk-install.log").read_text()
    # A second run with nothing changed installs nothing and does not probe the index.
    launcher.pip_calls.clear()
    assert bootstrap.ensure_environment(["dev"]) == python
    assert launcher.pip_calls == []


def test_a_gpu_pc_checks_cuda_and_pins_onnxruntime_to_torchs_cuda(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    launcher = Launcher(tmp_path, monkeypatch, gpu=R570)
    launcher.reachable = True
    launcher.torch_installs = "torch-2.13.0+cu126"
    probe = TorchProbe(
        "2.13.0+cu126",
        "12.6",
        True,
        devices=(("RTX 3060", (8, 6)),),
        arch_list=("sm_86",),
        torch_dir=tmp_path / "site" / "torch",
    )
    monkeypatch.setattr(bootstrap, "probe_torch", lambda python: probe)
    monkeypatch.setattr(bootstrap, "cuda_libraries_present", lambda torch_dir, major, windows: True)
    bootstrap.ensure_environment([])
    assert launcher.pip_calls == [
        [
            "[2/4] torch",
            "install",
            "--progress-bar",
            "off",
            "torch==2.13.0",
            "--index-url",
            "https://download.pytorch.org/whl/cu126",
        ],
        [
            "[4/4] OmniTalk, its libraries",
            "install",
            "--progress-bar",
            "off",
            "-e",
            str(ROOT),
            "onnxruntime-gpu>=1.21,<1.27",
        ],
    ]
    out = capsys.readouterr().out
    assert "[3/4] checking CUDA in the new environment" in out
    assert "CUDA works: torch 2.13.0+cu126 on RTX 3060 (sm_86)" in out
    assert "onnxruntime-gpu: onnxruntime-gpu>=1.21,<1.27 (the CUDA 12 build" in out


def test_a_failed_cuda_check_is_repeated_at_the_end_with_the_fix(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    launcher = Launcher(tmp_path, monkeypatch, gpu=R570)
    launcher.reachable = True
    monkeypatch.setenv("OMNITALK_TORCH", "cu130")  # a build the R570 driver cannot run
    probe = TorchProbe("2.13.0+cu130", "13.0", False, warnings=("The NVIDIA driver on your system is too old",))
    monkeypatch.setattr(bootstrap, "probe_torch", lambda python: probe)
    bootstrap.ensure_environment([])
    last = capsys.readouterr().out.rstrip().splitlines()[-2:]
    assert last[0].startswith("[omnitalk] warning: CUDA is not available: torch 2.13.0+cu130 needs CUDA 13.0")
    assert "Fix: update the NVIDIA driver to R580 or newer" in last[1]


def test_a_cuda_build_that_fell_back_is_retried_once_its_index_answers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    launcher = Launcher(tmp_path, monkeypatch, gpu=R570)
    launcher.torch_installs = "torch-2.13.0"  # PyPI's cu130, which the R570 driver cannot run
    monkeypatch.setattr(bootstrap, "probe_torch", lambda python: TorchProbe("2.13.0", "13.0", False))
    bootstrap.ensure_environment([])
    stamp = launcher.venv / "omnitalk-install.json"
    assert json.loads(stamp.read_text())["retry_index"] is True
    launcher.pip_calls.clear()
    bootstrap.ensure_environment([])  # still unreachable: nothing to do
    assert launcher.pip_calls == []
    launcher.reachable = True
    launcher.torch_installs = "torch-2.13.0+cu126"
    bootstrap.ensure_environment([])
    assert launcher.pip_calls[0][-2:] == ["--index-url", "https://download.pytorch.org/whl/cu126"]
    assert json.loads(stamp.read_text())["retry_index"] is False


def test_version_and_help_start_without_the_system_library_check(monkeypatch: pytest.MonkeyPatch) -> None:
    checked: list[object] = []
    started: list[list[str]] = []
    monkeypatch.setattr(bootstrap, "ensure_environment", lambda extras: Path("/venv/python"))
    monkeypatch.setattr(bootstrap, "ensure_system", checked.append)

    def run_child(cmd: Sequence[object]) -> int:
        started.append([str(c) for c in cmd])
        return 0

    monkeypatch.setattr(bootstrap, "_run_child", run_child)
    assert bootstrap.main(["--version"]) == 0
    assert checked == []
    assert bootstrap.main(["--model", "/m"]) == 0
    assert checked == [bootstrap.APP_REQUIREMENTS]
    assert bootstrap.main(["test", "-x"]) == 0
    assert checked[-1] == bootstrap.SYSTEM_REQUIREMENTS
    assert started[-1] == ["/venv/python", "-m", "pytest", "-x"]


def test_ci_reads_the_apt_packages_from_the_launcher() -> None:
    # .ci/run reads them exactly like this, with the system Python, before anything is installed.
    ci = subprocess.run(
        [sys.executable, "-c", "import installer.bootstrap as b; print(' '.join(b.APT_TEST_PACKAGES))"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    assert ci.stdout.split() == list(APT_TEST_PACKAGES)


def test_runs_as_a_script_from_the_shell_launchers() -> None:
    """`python installer/bootstrap.py` (not -m) must import its sibling modules; stop before installing."""
    env = dict(os.environ, OMNITALK_TORCH="rocm")
    result = subprocess.run(
        [sys.executable, "installer/bootstrap.py", "--version"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    assert "OMNITALK_TORCH='rocm' is not understood" in result.stderr
