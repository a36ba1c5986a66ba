"""FinetuneProcess: JSON lines become events, split lines are joined, the last error and the exit
code arrive once; a second start replaces a run still going; stop() is graceful, then kills.

A stand-in "python" (a shell script) plays the child, so these run in milliseconds."""

from __future__ import annotations

import stat
import sys
from pathlib import Path

import pytest
from pytestqt.qtbot import QtBot

from app.finetune_wizard.process import CRASH_EXIT_CODE, FinetuneProcess

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="the stand-in child is a POSIX shell script")


def _child(tmp_path: Path, body: str) -> str:
    script = tmp_path / "fake-python"
    script.write_text("#!/bin/sh\n" + body, encoding="utf-8")
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    return str(script)


def test_events_and_the_last_error(qtbot: QtBot, tmp_path: Path) -> None:
    python = _child(tmp_path, r"""
printf '{"event": "step", "step": 1, "loss": 2.5}\n'
printf '{"event": "st'; sleep 0.1; printf 'ep", "step": 2, "loss": 1.5}\nnot json\n'
echo 'Traceback (most recent call last): words on stderr' >&2
printf '{"event": "error", "kind": "out_of_memory", "message": "Out of memory"}'
exit 3
""")
    process = FinetuneProcess(python=python)
    events: list[dict] = []
    process.received.connect(events.append)
    with qtbot.waitSignal(process.finished, timeout=10_000) as finished:
        process.start(["finetune", "run"])
    code, error = finished.args
    assert code == 3 and error["kind"] == "out_of_memory"
    assert [e["event"] for e in events] == ["step", "step", "error"] and events[1]["step"] == 2
    assert not process.running


def test_a_second_start_replaces_the_first_and_stop_kills_a_stubborn_child(qtbot: QtBot, tmp_path: Path) -> None:
    python = _child(tmp_path, """
trap '' TERM
echo '{"event": "report"}'
sleep 30
""")
    process = FinetuneProcess(python=python)
    finishes: list[int] = []
    process.finished.connect(lambda code, _error: finishes.append(code))
    events: list[dict] = []
    process.received.connect(events.append)
    process.start(["finetune", "check"])
    qtbot.waitUntil(lambda: len(events) == 1, timeout=10_000)
    process.start(["finetune", "check"])  # the first is killed, and says nothing more
    qtbot.waitUntil(lambda: len(events) == 2, timeout=10_000)
    with qtbot.waitSignal(process.finished, timeout=10_000):
        process.stop(grace_ms=200)  # SIGTERM is ignored: killed after the grace time
    assert finishes == [CRASH_EXIT_CODE] and process.stopping


def test_a_child_that_cannot_start_says_so(qtbot: QtBot, tmp_path: Path) -> None:
    process = FinetuneProcess(python=str(tmp_path / "no-such-python"))
    with qtbot.waitSignal(process.finished, timeout=10_000) as finished:
        process.start(["finetune", "run"])
    code, error = finished.args
    assert code == CRASH_EXIT_CODE and "could not be started" in error["message"]


def _train_page(tmp_path: Path, python: str, plan: dict, *, model_on_gpu: bool):  # type: ignore[no-untyped-def]
    from app.finetune_wizard.draft import Draft
    from app.finetune_wizard.state import WizardState
    from app.finetune_wizard.train_page import TrainPage

    state = WizardState(tmp_path / "omni", Draft(tmp_path / "draft"), plan=plan)
    state.out = tmp_path / "adapters" / "run"
    return TrainPage(state, python, model_on_gpu=model_on_gpu)


GPU_PLAN_TOO_BIG = {"device": "cuda:0", "memory_needed_bytes": 9_000_000_000, "memory_free_bytes": 4_000_000_000}


@pytest.mark.parametrize(
    ("plan", "model_on_gpu", "unloads"),
    [
        (GPU_PLAN_TOO_BIG, True, True),
        (GPU_PLAN_TOO_BIG | {"memory_free_bytes": 12_000_000_000}, True, False),  # fits beside it
        (GPU_PLAN_TOO_BIG, False, False),  # the conversation model is not on the GPU
        (GPU_PLAN_TOO_BIG | {"device": "cpu"}, True, False),  # CPU training: nothing to say
    ],
)
def test_the_conversation_model_makes_room_on_the_gpu_only_when_needed(
    qtbot: QtBot, tmp_path: Path, plan: dict, model_on_gpu: bool, unloads: bool
) -> None:
    python = _child(tmp_path, f"""
printf '{{"event": "done", "adapter": "{tmp_path}/adapters/run"}}\\n'
""")
    page = _train_page(tmp_path, python, plan, model_on_gpu=model_on_gpu)
    order: list[str] = []
    page.unloadRequested.connect(lambda: order.append("unload"))
    page.reloadRequested.connect(lambda: order.append("reload"))
    page.process.received.connect(lambda e: order.append(e["event"]))
    with qtbot.waitSignal(page.trainingFinished, timeout=10_000) as finished:
        page.start(resume=False)
        said = page.message_label.text()
    assert finished.args == [True]
    assert order == (["unload", "done", "reload"] if unloads else ["done"])
    assert ("graphics card" in said) == unloads
