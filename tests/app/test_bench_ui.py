"""bench/bench_ui.py runs the real window, bridge, engine, model and vocoder and writes its table.

No timing thresholds: the gaps are what the benchmark reports, not what tests assert.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_one_turn_fills_every_row_and_the_answer_is_spoken(tmp_path: Path) -> None:
    results = tmp_path / "RESULTS.md"
    results.write_text("# earlier results\n", encoding="utf-8")
    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen", "OMNITALK_HOME": str(tmp_path / "home")}
    run = subprocess.run(
        [sys.executable, "bench/bench_ui.py", "--turns", "1", "--max-new-tokens", "12", "--train-epochs", "3",
         "--append", "--results", str(results)],
        cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=600,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    text = results.read_text(encoding="utf-8")
    assert text.startswith("# earlier results\n")
    table = [line for line in text.splitlines() if line.startswith("| ") and "---" not in line]
    rows = {line.split("|")[1].strip(): line for line in table}
    assert set(rows) >= {"idle (1 s)", "model loading"}
    turn = next(name for name in rows if name.startswith("1 typed turns"))
    training = next(name for name in rows if name.startswith("fine-tuning in its subprocess"))
    assert training.endswith(", done)")  # the Train page really ran a training to its end
    tokens, spoken = turn.split("(")[1].split(" tokens, ")
    assert 0 < int(tokens) <= 12
    assert float(spoken.split(" s spoken")[0]) > 0.0  # the vocoder and the clocked speaker really ran
    for name in ("idle (1 s)", "model loading", turn, training):
        largest, p99, mean, ticks = (float(c) for c in rows[name].split("|")[2:6])
        assert ticks > 10 and 0 < mean <= p99 <= largest
