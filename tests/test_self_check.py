"""``--self-check``: passes on this machine, and fails with a clear report when a dependency is missing."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from engine.self_check import FAIL, OK, WARN, Check, Dependency, check_import, format_report

ROOT = Path(__file__).resolve().parent.parent
SELF_CHECK_TIMEOUT_S = 600


def _self_check(env_extra: dict[str, str], tmp_path: Path) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, OMNITALK_HOME=str(tmp_path / "home"), **env_extra)
    env.pop("DISPLAY", None)
    return subprocess.run(
        [sys.executable, str(ROOT / "main.py"), "--self-check"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=SELF_CHECK_TIMEOUT_S,
    )


def _lines(report: str) -> dict[str, str]:
    """name -> status for each check line of the report."""
    return {m.group(2): m.group(1) for m in re.finditer(r"^\[\s*(\w+)\] (\S+(?: \S+)*)  ", report, re.MULTILINE)}


def test_report_names_each_failure_and_its_fix() -> None:
    checks = [
        Check("torch", OK, "2.13.0", seconds=2.0),
        Check("soxr", FAIL, "does not import", "Run ./omnitalk install"),
        Check("GPU", WARN, "No NVIDIA GPU found", "Install the driver"),
    ]
    report = format_report("T", ["OmniTalk 1"], checks)
    assert "[  ok] torch  2.13.0  (2.0 s)" in report
    assert "[FAIL] soxr   does not import\n" in report and "fix: Run ./omnitalk install" in report
    assert "fix: Install the driver" in report
    assert report.rstrip().endswith("Result: 1 problem(s): soxr")
    assert format_report("T", [], checks[:1]).rstrip().endswith("Result: all checks passed")


def test_a_missing_library_fails_and_an_optional_one_warns() -> None:
    missing = check_import(Dependency("omnitalk_no_such_module", "no-such", "testing"))
    assert missing.status == FAIL and "No module named 'omnitalk_no_such_module'" in missing.detail
    assert "install" in missing.fix
    optional = check_import(Dependency("omnitalk_no_such_module", "no-such", "testing", required=False))
    assert optional.status == WARN
    present = check_import(Dependency("numpy", "numpy", "arrays"))
    assert present.status == OK and re.fullmatch(r"\d+\.\d+.*", present.detail)


@pytest.mark.slow
def test_self_check_passes_here(tmp_path: Path) -> None:
    """Imports, the window offscreen, one turn on the tiny model, speech through the export child."""
    result = _self_check({}, tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    lines = _lines(result.stdout)
    for name in ("torch", "transformers", "onnxruntime", "PySide6.QtWidgets", "window", "one turn", "speech"):
        assert lines.get(name) == "ok", result.stdout
    assert "exported to ONNX in a child process" in result.stdout
    assert "Result: all checks passed" in result.stdout
    saved = tmp_path / "home" / "logs" / "self-check.txt"
    assert f"(saved in {saved})" in result.stdout
    assert saved.read_text(encoding="utf-8") in result.stdout


def test_self_check_fails_clearly_when_torch_is_missing(tmp_path: Path) -> None:
    """A torch that does not import (a broken install) fails the check, names it and says what to do."""
    shadow = tmp_path / "shadow"
    shadow.mkdir()
    (shadow / "torch.py").write_text("raise ModuleNotFoundError(\"No module named 'torch'\", name='torch')\n")
    result = _self_check({"PYTHONPATH": str(shadow)}, tmp_path)
    assert result.returncode == 1, result.stdout + result.stderr
    lines = _lines(result.stdout)
    assert lines["torch"] == "FAIL" and lines["window"] == "ok" and lines["numpy"] == "ok"
    assert "No module named 'torch'" in result.stdout
    assert "fix: Run ./omnitalk install in the OmniTalk folder again" in result.stdout
    assert re.search(r"^Result: \d+ problem\(s\): .*torch", result.stdout, re.MULTILINE)
    assert "Traceback" not in result.stdout  # tracebacks go to the log file, not into the report
