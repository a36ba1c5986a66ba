"""``python -m engine bench-audio``: the real-device and busy-machine modes in their short form (one
question each), and the measurement of what the speaker's monitor heard.

No timing thresholds: how fast things are is what the benchmark reports, not what tests assert.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from engine.audio.resample import MODEL_SAMPLE_RATE_HZ
from engine.bench.hear import listen
from engine.bench.report import RESULTS_HEADING
from tests.engine.test_bench import REPO_ROOT, _number, _table_with, _tables
from tests.pulse import PULSE_TOOLS, require_portaudio, require_tools

BENCH_TIMEOUT_S = 600


class RecordedMonitor:
    """What ``listen`` needs from a SpeakerMonitor: a recording whose sample 0 was heard at ``t0``."""

    def __init__(self, audio: np.ndarray, t0: float) -> None:
        self.recorded, self.t0 = audio, t0

    def index_at(self, t: float) -> int:
        return int(min(max(0.0, (t - self.t0) * MODEL_SAMPLE_RATE_HZ), self.recorded.size))

    def time_of(self, index: int) -> float:
        return self.t0 + index / MODEL_SAMPLE_RATE_HZ

    def audio(self, start: int, end: int) -> np.ndarray:
        return self.recorded[start:end]


def _answer(seconds: float, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (0.3 * rng.standard_normal(round(seconds * MODEL_SAMPLE_RATE_HZ))).astype(np.float32)


def test_listen_finds_when_the_answer_was_heard_and_its_gaps() -> None:
    """An earcon, silence, then the answer with a 0.3 s gap in the middle: the answer's start is found
    at its true time (the earcon before it does not count) and the gap is measured."""
    rate = MODEL_SAMPLE_RATE_HZ
    answer = _answer(2.0)
    earcon = (0.2 * np.sin(np.arange(1440) * 2 * np.pi * 800 / rate)).astype(np.float32)
    silence = lambda s: np.zeros(round(s * rate), np.float32)  # noqa: E731
    half = answer.size // 2
    recorded = np.concatenate(
        [silence(0.1), earcon, silence(0.2), answer[:half], silence(0.3), answer[half:], silence(0.5)]
    )
    released = 1000.0
    monitor = RecordedMonitor(recorded, t0=released - 0.05)  # recording started 50 ms before the release
    heard = listen(monitor, released, answer)  # type: ignore[arg-type]
    expected_start = released - 0.05 + (0.1 * rate + earcon.size + 0.2 * rate) / rate
    assert heard.at == pytest.approx(expected_start, abs=1e-3)
    assert heard.correlation > 0.99
    assert heard.gap_s == pytest.approx(0.3, abs=1e-3)
    # Played without a gap: 0.
    clean = np.concatenate([silence(0.3), answer, silence(0.3)])
    assert listen(RecordedMonitor(clean, released - 0.05), released, answer).gap_s == pytest.approx(0.0, abs=1e-3)  # type: ignore[arg-type]


def test_quick_bench_audio_measures_fake_pulseaudio_and_busy_modes(tmp_path: Path) -> None:
    require_tools(*PULSE_TOOLS, "espeak-ng")
    require_portaudio()
    out = tmp_path / "R.md"
    env = {k: v for k, v in os.environ.items() if k not in ("OMNITALK_HOME", "PULSE_SERVER")}
    run = subprocess.run(
        [sys.executable, "-m", "engine", "bench-audio", "--device", "cpu", "--quick", "--busy", "1", "--out", str(out)],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=BENCH_TIMEOUT_S,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    text = out.read_text(encoding="utf-8")
    assert text.startswith(RESULTS_HEADING)
    section = text[len(RESULTS_HEADING) :]
    assert "## What the user hears: tiny model on cpu" in section and section.strip() in run.stdout
    assert "- Command: `python -m engine bench-audio --device cpu --quick --busy 1 --out" in section
    assert "Machine load" in section and "Output latency the host granted: PulseAudio:" in section
    tables = _tables(section)

    first_audio = _table_with(tables, "first audio heard, median")
    assert [row[0] for row in first_audio[1:]] == ["fake device", "PulseAudio"]
    fake, pulse = ([_number(cell) if cell != "-" else math.nan for cell in row[1:]] for row in first_audio[1:])
    # The engine's estimate for the fake device is the heard figure (latency 0); through PulseAudio
    # the monitor heard the answer itself (correlation), after the device's output latency.
    assert fake[0] == fake[2] and fake[7] == 0.0
    assert pulse[9] > 0.9 and pulse[0] >= pulse[6] > 0 and pulse[7] > 0

    accounting = _table_with(tables, "difference")
    stages = {row[0]: row for row in accounting[1:]}
    assert "output latency the host reports" in stages and "first audio heard" in stages
    total = stages["first audio heard"]
    parts = [r for name, r in stages.items() if name != "first audio heard"]
    # The stages add up to first audio heard (medians of each, so within rounding of the runs: one run here).
    assert sum(_number(r[2]) for r in parts) == pytest.approx(_number(total[2]), abs=1.0)

    busy = _table_with(tables, "tokens/s in the app")
    assert [row[0] for row in busy[1:]] == ["fake device", "PulseAudio", "PulseAudio, 1 busy"]
    for row in busy[1:]:
        assert _number(row[2]) > 0 and _number(row[3]) > 0  # decode rate in the app and alone
        assert row[11].endswith("of 1")
    assert busy[3][10] != "-"  # the heard gaps were measured at the PulseAudio monitor
