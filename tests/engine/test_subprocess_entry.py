"""One decision for starting a child Python of the engine: ``-m`` from source, ``--engine-child`` frozen."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from engine import subprocess_entry
from engine.subprocess_entry import CHILD_FLAG, child_command, child_env, run_child
from engine.version import __version__

ROOT = Path(__file__).resolve().parents[2]


def test_from_source_the_child_is_python_dash_m(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delattr(sys, "frozen", raising=False)
    assert child_command("engine", ["finetune", "--help"]) == [sys.executable, "-m", "engine", "finetune", "--help"]
    assert child_command("engine.x", python="/usr/bin/python3")[:3] == ["/usr/bin/python3", "-m", "engine.x"]
    env = child_env({"PYTHONPATH": "/elsewhere"})
    assert env["PYTHONPATH"].split(":" if sys.platform != "win32" else ";") == [str(ROOT), "/elsewhere"]
    assert env["PYTHONUNBUFFERED"] == "1"


def test_frozen_the_child_is_the_app_itself(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "frozen", True, raising=False)
    monkeypatch.setattr(sys, "executable", "/opt/OmniTalk/OmniTalk")
    assert child_command("engine.vocoder.export_process", ["--out", "x"]) == [
        "/opt/OmniTalk/OmniTalk", CHILD_FLAG, "engine.vocoder.export_process", "--out", "x"
    ]
    assert "PYTHONPATH" not in child_env({})  # a frozen app imports from itself only
    assert subprocess_entry.is_frozen()


def test_run_child_runs_the_module_as_main(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    monkeypatch.setattr(sys, "argv", list(sys.argv))  # run_child sets the child's argv
    monkeypatch.delitem(sys.modules, "engine.__main__", raising=False)  # as in a fresh child process
    assert run_child(["--model", "x"]) is None  # an ordinary app start
    assert run_child([CHILD_FLAG, "engine", "--version"]) == 0
    assert capsys.readouterr().out.strip() == f"OmniTalk engine {__version__}"
    assert run_child([CHILD_FLAG, "engine", "no-such-command"]) == 2  # argparse's exit code comes back
    assert run_child([CHILD_FLAG]) == 2


def test_main_py_dispatches_engine_children_before_its_own_options() -> None:
    result = subprocess.run(
        [sys.executable, "main.py", CHILD_FLAG, "engine", "--version"],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"OmniTalk engine {__version__}"
