"""``bench/gpu_check.sh`` / ``python -m engine gpu-check``: the CPU dry run runs every check that does
not need a GPU, says SKIP for the others, and appends its section; the runner's own logic."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from engine.bench import gpu_probes as probes
from engine.bench.gpu_check import CHECKS, Check, compose, run_checks
from engine.bench.gpu_probes import first_audio_table

REPO_ROOT = Path(__file__).resolve().parents[2]
EARLIER = "# OmniTalk benchmark results\n\n## An earlier run\n\nkeep me\n"
DRY_RUN_TIMEOUT_S = 600
GPU_ONLY = {"out of memory under a 3 GB cap", "engine bench (mid, quick): first audio"}


def test_cpu_dry_run_through_the_wrapper(tmp_path: Path) -> None:
    results = tmp_path / "R.md"
    results.write_text(EARLIER, encoding="utf-8")
    out_dir = tmp_path / "out"
    env = {k: v for k, v in os.environ.items() if k != "OMNITALK_HOME"}
    env |= {"PYTHON": sys.executable, "OUT": str(out_dir), "OMP_NUM_THREADS": "1"}
    run = subprocess.run(
        ["bash", "bench/gpu_check.sh", "--device", "cpu", "--out", str(results)],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=DRY_RUN_TIMEOUT_S,
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    text = results.read_text(encoding="utf-8")
    assert text.startswith(EARLIER) and text.count("## GPU check: CPU (dry run)") == 1
    assert (out_dir / "gpu_check.log").read_text(encoding="utf-8").count("## GPU check") == 1
    details = {r["name"]: r for r in json.loads((out_dir / "gpu_check.json").read_text(encoding="utf-8"))}
    assert list(details) == [c.name for c in CHECKS]
    for name, result in details.items():
        assert result["status"] == ("SKIP" if name in GPU_ONLY else "PASS"), (name, result["note"])
        assert f"| {name} | {result['status']} |" in text
    full = details["full-width nf4: load, speed, VRAM vs estimate"]["details"]
    assert full["turn"]["tokens"] >= 1 and full["ms_token_units"] > 0 and full["prefill_ms"] > 0
    assert full["vocoder_providers"] == ["CPUExecutionProvider"] and full["estimate"] > 0
    vocoder = details["vocoder: PyTorch and onnxruntime on the device"]["details"]
    assert vocoder["onnx_providers"] == ["CPUExecutionProvider"] and vocoder["torch_snr_db"] > 30
    assert "| nf4 + int8 lm_head + int8 Whisper (the nf4 policy) |" in text  # the fidelity table


def _ctx(tmp_path: Path, device: str = "cuda", budget_s: float = 100.0) -> probes.CheckContext:
    return probes.CheckContext(device=device, work=tmp_path, layers=2, budget_s=budget_s)


def test_runner_skips_what_does_not_fit_and_keeps_going_after_a_failure(tmp_path: Path) -> None:
    def boom(ctx: probes.CheckContext) -> probes.CheckOutcome:
        raise RuntimeError("CUDA error: device-side assert triggered\nmore")

    def makes(ctx: probes.CheckContext) -> probes.CheckOutcome:
        ctx.shared["thing"] = 1
        return probes.PASS, "made it", {"x": 1}

    checks = (
        Check("fails", boom, 0),
        Check("too long for the budget", makes, 1_000),
        Check("needs the thing", makes, 0, needs="thing"),
        Check("makes the thing", makes, 0),
        Check("needs it now", makes, 0, needs="thing"),
    )
    ctx = _ctx(tmp_path)
    results = run_checks(ctx, checks)
    assert [(r.name, r.status) for r in results] == [
        ("fails", "FAIL"),
        ("too long for the budget", "SKIP"),
        ("needs the thing", "SKIP"),
        ("makes the thing", "PASS"),
        ("needs it now", "PASS"),
    ]
    assert results[0].note == "RuntimeError: CUDA error: device-side assert triggered"
    assert "left of the budget" in results[1].note
    section = compose(ctx, results, "python -m engine gpu-check")
    assert "1 failed" in section and "2 skipped" in section and "| fails | FAIL |" in section


def test_first_audio_table_is_taken_from_the_bench_section() -> None:
    section = "\n".join(
        [
            "## Engine benchmark: mid model on cuda",
            "### 1. First audio after key release",
            "",
            "Some text.",
            "",
            "| chunking | first audio median |",
            "|---|---|",
            "| Ω=10 | 150 |",
            "",
            "| another | table |",
            "### 2. Decode overhead of speech units",
        ]
    )
    assert first_audio_table(section) == "| chunking | first audio median |\n|---|---|\n| Ω=10 | 150 |"
    assert first_audio_table("no such heading") == ""


@pytest.mark.parametrize("device", ["cpu"])
def test_gpu_only_checks_say_why_on_a_cpu(tmp_path: Path, device: str) -> None:
    ctx = _ctx(tmp_path, device)
    assert probes.out_of_memory(ctx)[0] == "SKIP" and probes.engine_bench(ctx)[0] == "SKIP"
