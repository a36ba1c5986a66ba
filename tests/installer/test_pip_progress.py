"""A first install shows what pip is doing and keeps its full output in a log (issue 14, item 2)."""

from __future__ import annotations

import io
import itertools
import sys
import textwrap
from pathlib import Path

import pytest

from installer.console import StatusLine
from installer.pip_progress import (
    InstallLog,
    PipEvent,
    PipFailed,
    PipProgress,
    parse_pip_line,
    pip_version,
    run_pip,
)

# Lines as pip 23 to 25 print them (taken from real runs).
PIP_OUTPUT = """\
Looking in indexes: https://pypi.org/simple, file:///opt/pypi/simple
WARNING: Location 'file:///opt/pypi-more/simple/rich/' is ignored: it is neither a file nor a directory.
Processing /opt/wheels/torch-2.13.0+cpu-cp311-cp311-manylinux_2_28_x86_64.whl
Collecting tokenizers
  Downloading tokenizers-0.23.3-cp310-abi3-manylinux_2_17_x86_64.manylinux2014_x86_64.whl (3.4 MB)
Collecting filelock (from torch==2.13.0)
  Downloading https://download.pytorch.org/whl/filelock-3.20.0-py3-none-any.whl (16 kB)
Requirement already satisfied: numpy>=1.26 in ./.venv/lib/python3.11/site-packages (from omnitalk==0.1.0) (2.3.4)
Installing collected packages: filelock, tokenizers, torch
Successfully installed filelock-3.20.0 tokenizers-0.23.3 torch-2.13.0+cpu
"""


@pytest.mark.parametrize(
    ("line", "event"),
    [
        ("Collecting huggingface-hub<3.0,>=0.16.4 (from tokenizers)", PipEvent("collect", "huggingface-hub")),
        (
            "  Downloading torch-2.13.0-cp311-cp311-manylinux_2_28_x86_64.whl (915.0 MB)",
            PipEvent("download", "torch-2.13.0-cp311-cp311-manylinux_2_28_x86_64.whl", 915_000_000),
        ),
        (
            "  Downloading https://download.pytorch.org/whl/cpu/torch-2.13.0%2Bcpu-cp311-cp311-linux_x86_64.whl"
            " (190.2 MB)",
            PipEvent("download", "torch-2.13.0+cpu-cp311-cp311-linux_x86_64.whl", 190_200_000),
        ),
        (
            "  Downloading filelock-3.20.0-py3-none-any.whl.metadata (2.1 kB)",
            PipEvent("metadata", "filelock-3.20.0-py3-none-any.whl.metadata", 2100),
        ),
        (
            "  Using cached sympy-1.14.0-py3-none-any.whl (6.3 MB)",
            PipEvent("cached", "sympy-1.14.0-py3-none-any.whl", 6_300_000),
        ),
        (
            "Processing /opt/pypi/files/idna-3.20-py3-none-any.whl (from requests)",
            PipEvent("local", "idna-3.20-py3-none-any.whl", location="/opt/pypi/files/idna-3.20-py3-none-any.whl"),
        ),
        ("Obtaining file:///work/omnitalk", PipEvent("local", "omnitalk", location="file:///work/omnitalk")),
        ("Progress 524288 of 915000000", PipEvent("progress", done=524288, size=915000000)),
        ("Progress 524288 of ? bytes", PipEvent("progress", done=524288, size=None)),
        ("  Building editable for omnitalk (pyproject.toml): started", PipEvent("build", "omnitalk")),
        ("Installing collected packages: mpmath, sympy", PipEvent("install", names=("mpmath", "sympy"))),
        (
            "Successfully installed sympy-1.14.0 torch-2.13.0+cpu",
            PipEvent("installed", names=("sympy-1.14.0", "torch-2.13.0+cpu")),
        ),
        ("  Successfully uninstalled torch-2.13.0+cpu", PipEvent("uninstalled", "torch-2.13.0+cpu")),
        ("Requirement already satisfied: numpy>=1.26 in ./.venv (2.3.4)", PipEvent("satisfied", "numpy")),
        ("WARNING: Location 'file:///x' is ignored: it is neither a file nor a directory.", None),
        ("Looking in indexes: https://pypi.org/simple", None),
    ],
)
def test_parse_pip_line(line: str, event: PipEvent | None) -> None:
    assert parse_pip_line(line) == event


def test_progress_follows_the_events() -> None:
    progress = PipProgress()
    for line in PIP_OUTPUT.splitlines():
        if (event := parse_pip_line(line)) is not None:
            progress.update(event)
    assert progress.packages == {"torch", "tokenizers", "filelock", "numpy"}
    assert progress.downloads == 2 and progress.downloaded_bytes == 3_400_000 + 16_000
    assert progress.summary() == "installed 3 packages, 3.4 MB downloaded"
    progress.update(PipEvent("download", "torch.whl", 915_000_000))
    progress.update(PipEvent("progress", done=457_500_000, size=915_000_000))
    assert progress.activity == "downloading torch.whl 50% of 915.0 MB"


def _fake_pip(tmp_path: Path, body: str) -> list[str]:
    """A real child process standing in for pip: prints ``body``'s lines, then runs ``body``'s code."""
    script = tmp_path / "fake_pip.py"
    script.write_text(textwrap.dedent(body))
    return [sys.executable, str(script)]


def _printing(text: str, exit_code: int = 0, pause_s: float = 0.0) -> str:
    return f"""
        import sys, time
        for line in {text!r}.splitlines():
            print(line)
        time.sleep({pause_s})
        sys.exit({exit_code})
    """


def test_run_pip_without_a_terminal_prints_steps_and_logs_everything(tmp_path: Path) -> None:
    out = io.StringIO()
    log = InstallLog(tmp_path / "install.log")
    progress = run_pip(
        _fake_pip(tmp_path, _printing(PIP_OUTPUT)),
        step="[2/3] torch",
        log=log,
        status=StatusLine(out, interactive=False),
    )
    log.close()
    shown = out.getvalue()
    assert "\r" not in shown
    assert "[2/3] torch" in shown and "downloading tokenizers-0.23.3" in shown and "(3.4 MB)" in shown
    assert "installing 3 packages (filelock, tokenizers, torch)" in shown
    assert shown.rstrip().splitlines()[-1].startswith("  [2/3] torch done in ")
    assert shown.rstrip().endswith("installed 3 packages, 3.4 MB downloaded")
    assert "is ignored" not in shown  # pip's noise stays in the log
    assert "filelock-3.20.0" not in shown  # small downloads are counted, not listed
    logged = (tmp_path / "install.log").read_text()
    assert PIP_OUTPUT in logged and "(exit code 0 after" in logged
    assert progress.installed[-1] == "torch-2.13.0+cpu"


def test_a_local_wheel_shows_its_size(tmp_path: Path) -> None:
    wheel = tmp_path / "torch-2.13.0+cpu-cp311-cp311-manylinux_2_28_x86_64.whl"
    wheel.write_bytes(b"x" * 2_500_000)
    progress = PipProgress()
    progress.update(parse_pip_line(f"Processing {wheel}"))  # type: ignore[arg-type]
    assert progress.activity == f"using {wheel.name} (2.5 MB)"
    assert progress.packages == {"torch"}
    assert progress.downloaded_bytes == 0  # nothing came over the network


def test_run_pip_on_a_terminal_rewrites_one_line(tmp_path: Path) -> None:
    out = io.StringIO()
    log = InstallLog(tmp_path / "install.log")
    run_pip(
        _fake_pip(tmp_path, _printing(PIP_OUTPUT)), step="[1/1] x", log=log, status=StatusLine(out, interactive=True)
    )
    log.close()
    shown = out.getvalue()
    assert "\r  [1/1] x " in shown and "resolving tokenizers" in shown
    assert shown.endswith("installed 3 packages, 3.4 MB downloaded\n")


def test_a_failing_pip_names_its_last_lines_and_the_log(tmp_path: Path) -> None:
    failure = PIP_OUTPUT.split("Installing")[0] + "ERROR: No matching distribution found for torch==9.9\n"
    log = InstallLog(tmp_path / "install.log")
    with pytest.raises(PipFailed) as caught:
        run_pip(
            _fake_pip(tmp_path, _printing(failure, exit_code=1)),
            step="[1/2] torch",
            log=log,
            status=StatusLine(io.StringIO(), interactive=False),
        )
    log.close()
    message = str(caught.value)
    assert message.startswith("[1/2] torch: pip failed (exit code 1)")
    assert "  | ERROR: No matching distribution found for torch==9.9" in message
    assert message.endswith(f"The full output is in {tmp_path / 'install.log'}")


def test_a_silent_pip_gets_a_heartbeat_line(tmp_path: Path) -> None:
    out = io.StringIO()
    ticks = itertools.count(0, 40)  # every reading of the clock is 40 s later
    log = InstallLog(tmp_path / "install.log")
    run_pip(
        _fake_pip(tmp_path, _printing("Installing collected packages: torch", pause_s=1.5)),
        step="[1/1] torch",
        log=log,
        status=StatusLine(out, interactive=False),
        clock=lambda: float(next(ticks)),
    )
    log.close()
    beats = [line for line in out.getvalue().splitlines() if "installing 1 package (torch)" in line]
    assert len(beats) >= 2  # the event itself, then at least one heartbeat while pip was silent


def test_the_previous_install_log_is_kept(tmp_path: Path) -> None:
    first = InstallLog(tmp_path / "install.log")
    first.note("first run")
    first.close()
    InstallLog(tmp_path / "install.log").close()
    assert "first run" in (tmp_path / "install.log.1").read_text()
    assert "first run" not in (tmp_path / "install.log").read_text()


def test_pip_version_from_its_dist_info(tmp_path: Path) -> None:
    assert pip_version([tmp_path]) is None
    (tmp_path / "pip-24.1.2.dist-info").mkdir()
    assert pip_version([tmp_path]) == (24, 1)


def test_without_a_terminal_big_local_wheels_get_a_line(tmp_path: Path) -> None:
    wheel = tmp_path / "torch-2.13.0+cpu-cp311-cp311-manylinux_2_28_x86_64.whl"
    wheel.write_bytes(b"x" * 2_500_000)
    small = tmp_path / "idna-3.20-py3-none-any.whl"
    small.write_bytes(b"x" * 1000)
    out = io.StringIO()
    log = InstallLog(tmp_path / "install.log")
    run_pip(
        _fake_pip(tmp_path, _printing(f"Processing {wheel}\nProcessing {small}\n")),
        step="[2/3] torch",
        log=log,
        status=StatusLine(out, interactive=False),
    )
    log.close()
    assert f"using {wheel.name} (2.5 MB), 1 package seen" in out.getvalue()
    assert small.name not in out.getvalue()
