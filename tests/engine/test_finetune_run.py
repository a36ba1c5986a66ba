"""The training run as a process: resume bit for bit, SIGTERM -> checkpoint + exit 4, bad data ->
report + exit 2, and ``check``'s report and defaults."""

from __future__ import annotations

import io
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from safetensors.torch import load_file

from engine.errors import BadInput, Cancelled
from engine.finetune.checkpoint import load_checkpoint, training_dir
from engine.finetune.plan import TrainOptions
from engine.finetune.trainer import Trainer
from engine.tiny import TinyPaths
from tests.engine.finetune_fixtures import SPOKEN, TYPED, random_units

pytestmark = pytest.mark.usefixtures("one_torch_thread_per_module")
REPO = Path(__file__).resolve().parents[2]
WAIT_S = 120


@pytest.fixture(scope="module")
def small_data(finetune_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """2 spoken pairs + 3 typed pairs with units: enough for both stages, quick to train."""
    folder = tmp_path_factory.mktemp("small-data")
    for name, _q, _a in SPOKEN[:2]:
        for suffix in (".wav", ".txt"):
            shutil.copy(finetune_data / f"{name}{suffix}", folder / f"{name}{suffix}")
    rows = [
        {"id": f"t{i}", "conversations": [{"from": "human", "value": q}, {"from": "gpt", "value": a}],
         "tgt_units": random_units(i)}
        for i, (q, a) in enumerate(TYPED[:3])
    ]  # fmt: skip
    (folder / "typed.json").write_text(json.dumps(rows))
    return folder


def _options(tiny: TinyPaths, data: Path, out: Path, **kw: Any) -> TrainOptions:
    defaults: dict[str, Any] = dict(
        model_dir=tiny.omni, data=data, out=out, device="cpu", stage="both", steps=3, lr=1e-2,
        micro_batch=2, grad_accum=1, checkpoint_every=2, evaluate=False,
    )  # fmt: skip
    return TrainOptions(**(defaults | kw))


def _adapter(folder: Path) -> dict[str, Any]:
    return {f.name: load_file(str(f)) for f in sorted(folder.glob("*.safetensors"))}


def _stop_after(n_steps: int) -> tuple[list[dict[str, Any]], Any]:
    events: list[dict[str, Any]] = []
    return events, lambda: sum(e["event"] == "step" for e in events) >= n_steps


@pytest.mark.parametrize("stop_after", [1, 4])  # mid stage 1; inside stage 2 after a finished stage 1
def test_resume_equals_an_uninterrupted_run(
    tiny_omni_ft: TinyPaths, small_data: Path, tmp_path: Path, stop_after: int
) -> None:
    whole = Trainer(_options(tiny_omni_ft, small_data, tmp_path / "whole"), lambda e: None).run()
    out = tmp_path / "resumed"
    events, should_stop = _stop_after(stop_after)
    with pytest.raises(Cancelled):
        Trainer(_options(tiny_omni_ft, small_data, out), events.append, should_stop).run()
    state = load_checkpoint(training_dir(out))
    assert (state.stage_index, state.step) == ((0, 1) if stop_after == 1 else (1, 1))
    assert events[-1]["event"] == "checkpoint" and not out.exists()
    resumed_events: list[dict[str, Any]] = []
    Trainer(_options(tiny_omni_ft, small_data, out, resume=True), resumed_events.append).run()
    steps = [(e["stage"], e["step"]) for e in resumed_events if e["event"] == "step"]
    assert steps[0] == ((1, 2) if stop_after == 1 else (2, 2))  # continued, not restarted
    first, second = _adapter(whole), _adapter(out)
    assert first.keys() == second.keys() and len(first) == 3
    for name, tensors in first.items():
        assert tensors.keys() == second[name].keys()
        for key, value in tensors.items():
            assert value.equal(second[name][key]), (name, key)  # bit for bit


def test_resume_refuses_a_different_run(tiny_omni_ft: TinyPaths, small_data: Path, tmp_path: Path) -> None:
    out = tmp_path / "a"
    events, should_stop = _stop_after(1)
    with pytest.raises(Cancelled):
        Trainer(_options(tiny_omni_ft, small_data, out), events.append, should_stop).run()
    with pytest.raises(BadInput, match="different training settings"):
        Trainer(_options(tiny_omni_ft, small_data, out, resume=True, steps=5), lambda e: None).run()
    with pytest.raises(BadInput, match="no checkpoint"):
        Trainer(_options(tiny_omni_ft, small_data, tmp_path / "never", resume=True), lambda e: None).run()


def _events(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def test_sigterm_checkpoints_and_exits_4(tiny_omni_ft: TinyPaths, small_data: Path, tmp_path: Path) -> None:
    out = tmp_path / "adapter"
    env = {**os.environ, "OMNITALK_HOME": str(tmp_path / "home"), "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "engine", "finetune", "run", "--model", str(tiny_omni_ft.omni), "--data",
         str(small_data), "--out", str(out), "--steps", "500", "--lr", "1e-3", "--stage", "1", "--no-eval",
         "--device", "cpu", "--checkpoint-every", "1000"],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        lines = []
        for line in proc.stdout:  # wait for training to be under way (a condition, not a sleep)
            lines.append(line)
            if json.loads(line)["event"] == "step":
                break
        proc.send_signal(signal.SIGTERM)
        rest, err = proc.communicate(timeout=WAIT_S)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 4, err[-2000:]
    events = _events("".join(lines) + rest)
    kinds = [e["event"] for e in events]
    assert kinds[-2:] == ["checkpoint", "error"] and events[-1]["kind"] == "cancelled"
    assert "Traceback" not in err and "resume with --resume" in err
    state = load_checkpoint(training_dir(out))
    assert state.stage_index == 0 and state.step == events[-2]["step"] >= 1


def _main(argv: list[str], monkeypatch: pytest.MonkeyPatch) -> tuple[int, list[dict[str, Any]], str]:
    from engine.__main__ import main
    from engine.finetune import cli

    out, err = io.StringIO(), io.StringIO()
    monkeypatch.setattr(cli.sys, "stdout", out)
    monkeypatch.setattr(cli.sys, "stderr", err)
    code = main(argv)
    return code, _events(out.getvalue()), err.getvalue()


def test_malformed_dataset_gives_the_report_and_exit_2(
    tiny_omni_ft: TinyPaths, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = tmp_path / "bad"
    data.mkdir()
    (data / "pairs.jsonl").write_text('{"question": "Hi"}\nnot json\n')
    (data / "lonely.txt").write_text("An answer with no question.")
    for command in (["check"], ["run", "--out", str(tmp_path / "o")]):
        code, events, err = _main(["finetune", *command, "--model", str(tiny_omni_ft.omni), "--data", str(data)],
                                  monkeypatch)  # fmt: skip
        assert code == 2
        report = events[0]
        assert report["event"] == "report" and report["usable"] == 0
        assert {p["code"] for p in report["problems"]} >= {"empty_answer", "bad_row", "missing_question"}
        assert events[-1]["event"] == "error" and events[-1]["kind"] == "bad_input"
        assert "no usable question/answer pairs" in err and "Traceback" not in err


def test_check_shows_the_report_and_the_defaults(
    tiny_omni_ft: TinyPaths, finetune_data: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    code, events, err = _main(["finetune", "check", "--data", str(finetune_data), "--model", str(tiny_omni_ft.omni),
                               "--device", "cpu"], monkeypatch)  # fmt: skip
    assert code == 0
    report, plan = events
    assert report["usable"] == 12 and report["heldout"] == 1 and report["token_limit_checked"]
    assert plan["event"] == "plan" and plan["device"] == "cpu" and plan["precision"]["quant"] == "fp32"
    assert [s["stage"] for s in plan["stages"]] == [1, 2] and plan["stages"][0]["epochs"] == 28
    assert "Split: 11 for training, 1 held out" in err and "Stage 1: 11 pairs" in err
