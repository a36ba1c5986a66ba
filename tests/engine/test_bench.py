"""``python -m engine bench``: the quick tiny run produces every table with numbers and appends its section.

No timing thresholds here: how fast things are is what the benchmark reports, not what tests assert.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
from safetensors.torch import load_file

from engine.__main__ import main
from engine.bench.latency import RawTurn, analyse, chunkings, first_chunk_step
from engine.bench.probes import StepTiming, VocoderCall
from engine.bench.sizes import full_dims, spec_dims, write_streamed_omni
from engine.events import ChunkingOptions, TurnMetrics
from engine.model.dims import read_dims
from engine.tiny import TinySpec, write_tiny_set

REPO_ROOT = Path(__file__).resolve().parents[2]
EARLIER = "# OmniTalk benchmark results\n\n## An earlier run\n\nkeep me\n"
BENCH_TIMEOUT_S = 300
QUICK_ARGS = ("--device", "cpu", "--size", "tiny", "--quick", "--runs", "1", "--threads", "1", "--out")


def _tables(markdown: str) -> list[list[list[str]]]:
    """Every Markdown table in ``markdown`` as rows of cells (header first, separator dropped)."""
    tables: list[list[list[str]]] = []
    current: list[list[str]] = []
    for line in [*markdown.splitlines(), ""]:
        if line.startswith("|"):
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            if not all(set(c) <= {"-"} for c in cells):
                current.append(cells)
        elif current:
            tables.append(current)
            current = []
    return tables


def _table_with(tables: list[list[list[str]]], header: str) -> list[list[str]]:
    matches = [t for t in tables if header in t[0]]
    assert matches, f"no table with a {header!r} column"
    return matches[0]


def _number(cell: str) -> float:
    value = float(cell.rstrip("x*").replace(",", "")) if cell != "inf" else math.inf
    assert not math.isnan(value)
    return value


@pytest.mark.slow
def test_quick_tiny_bench_prints_the_tables_and_appends_a_section(tmp_path: Path) -> None:
    out = tmp_path / "R.md"
    out.write_text(EARLIER, encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if k != "OMNITALK_HOME"}
    run = subprocess.run(
        # One torch thread: a tiny model gains nothing from more, and a busy 2-core machine makes them spin.
        [sys.executable, "-m", "engine", "bench", *QUICK_ARGS, str(out)],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=BENCH_TIMEOUT_S,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    text = out.read_text(encoding="utf-8")
    assert text.startswith(EARLIER)  # earlier runs are kept, the new one is appended
    section = text[len(EARLIER) :]
    assert section.count("## Engine benchmark: tiny model on cpu") == 1
    assert section.strip() in run.stdout  # the same section was printed
    for heading in (
        "### 1. First audio after key release",
        "### 2. Decode overhead of speech units",
        "### 3. Throughput",
        "### 4. Memory",
        "### 5. Streaming quality",
    ):
        assert heading in section
    assert "- Command: `python -m engine bench --device cpu --size tiny --quick --runs 1 --threads 1 --out" in section
    assert "load average" in section and "Versions: Python" in section and "torch threads 1" in section
    tables = _tables(section)
    labels = [c.label for c in chunkings()]

    latency = _table_with(tables, "first audio median")
    overhead = _table_with(tables, "overhead median")
    per_turn = _table_with(tables, "tokens/s in engine")
    snr = _table_with(tables, "look-ahead 2")
    for table in (latency, overhead, per_turn, snr):
        assert [row[0] for row in table[1:]] == labels
    for row in latency[1:] + overhead[1:]:
        values = [_number(cell) for cell in row[1:]]
        assert all(math.isfinite(v) for v in values)
    for row in latency[1:]:
        first_audio, stages = _number(row[1]), [_number(c) for c in row[3:9]]
        assert 0 <= stages[0] <= first_audio  # the recording stopped (a ms or less) before anything was heard
    assert "Issue #5 target" in section
    for row in per_turn[1:]:
        assert _number(row[1]) >= 1 and _number(row[5]) > 0
    for row in snr[1:]:
        assert all(_number(cell) > 0 for cell in row[1:] if cell != "-")

    decode = _table_with(tables, "decode path")
    assert len(decode) == 4 and decode[1][-1] == "1.00x"
    assert all(_number(cell) > 0 for row in decode[1:] for cell in (row[1], row[3]))
    throughput = _table_with(tables, "LLM decode")
    assert all(_number(row[1]) > 0 for row in throughput[1:])
    rtf = _table_with(tables, "onnxruntime RTF")
    assert len(rtf) == 1 + 1 + len(labels) and all(_number(row[1]) > 0 for row in rtf[1:])
    memory = _table_with(tables, "peak RSS (MB)")
    assert memory[1][0] == "fp32 on cpu" and _number(memory[1][3]) >= _number(memory[1][2]) > 0
    estimates = _table_with(tables, "total on GPU (GB)")
    assert [row[0] for row in estimates[1:]] == ["nf4 (estimate)", "int8 (estimate)", "fp16 (estimate)"]
    assert "VRAM rows need a GPU" in section


def test_full_size_on_cpu_is_refused_before_writing_anything(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "R.md"
    code = main(["bench", "--size", "full", "--device", "cpu", "--out", str(out), "--workdir", str(tmp_path / "w")])
    assert code == 2
    err = capsys.readouterr().err
    assert "--size full" in err and "--device cuda" in err
    assert not out.exists() and not (tmp_path / "w").exists()


def test_the_streamed_writer_writes_the_tiny_writers_tensors_shard_by_shard(tmp_path: Path) -> None:
    spec = TinySpec()
    reference = write_tiny_set(tmp_path / "ref", vocoder=False)
    streamed = write_streamed_omni(tmp_path / "streamed" / "omni", spec, 0, shard_bytes=50_000)
    (tmp_path / "streamed" / "speech_encoder").symlink_to(reference.root / "speech_encoder")
    assert len(list(streamed.glob("model-*-of-*.safetensors"))) > spec.n_shards

    def tensors(folder: Path) -> dict:
        out: dict = {}
        for shard in sorted(folder.glob("*.safetensors")):
            out |= load_file(str(shard))
        return out

    ref, got = tensors(reference.omni), tensors(streamed)
    assert ref.keys() == got.keys() and all(ref[k].equal(got[k]) for k in ref)
    assert (streamed / "config.json").read_text() == (reference.omni / "config.json").read_text()
    assert read_dims(streamed) == read_dims(reference.omni) == spec_dims(spec)


def test_full_dims_are_llama_omni_8b() -> None:
    dims = full_dims()
    assert round(dims.llm.n_params / 1e9, 2) == 8.03  # Llama-3.1-8B
    assert round(dims.unit_decoder.n_params / 1e6) == 426  # the "425M" speech decoder
    assert round(dims.encoder.n_params / 1e6) == 637  # Whisper-large-v3's encoder
    assert dims.n_speech_embeddings == 300


def _turn(units_per_step: list[int], chunking: ChunkingOptions, *, flush: bool = False) -> RawTurn:
    """A synthetic turn: release at 0, features/encoder marks, 10 ms steps with 1 ms engine gaps."""
    steps, t = [], 0.050
    for n in units_per_step:
        steps.append(StepTiming(t, t + 0.010, n))
        t += 0.011
    k = len(steps) - 1 if flush else first_chunk_step(steps, chunking)
    v0 = steps[k].ended + 0.002
    calls = (VocoderCall("durations", v0, v0 + 0.001), VocoderCall("generate", v0 + 0.0015, v0 + 0.006))
    t0 = 0.020
    metrics = TurnMetrics(
        features_ms=10.0,
        encoder_ms=25.0,
        first_token_ms=(steps[0].ended - t0) * 1000,
        first_chunk_ms=(v0 + 0.007 - t0) * 1000,
        first_audio_ms=(v0 + 0.012 - t0) * 1000,
        n_tokens=len(steps),
        n_units=sum(units_per_step),
    )
    return RawTurn(
        released=0.0,
        first_sample_at=v0 + 0.012,
        metrics=metrics,
        started_at=0.049,
        steps=tuple(steps),
        stages={"features": t0 + 0.010, "encoder": t0 + 0.025, "prefill": 0.055},
        vocoder_calls=calls,
        chunking=chunking,
    )


def test_the_overhead_is_first_audio_minus_compute_and_splits_into_its_parts() -> None:
    chunking = ChunkingOptions(first_chunk_units=4, chunk_units=8, lookahead_units=2)
    raw = _turn([1, 3, 0, 2, 5, 1], chunking)
    assert first_chunk_step(raw.steps, chunking) == 3  # 1 + 3 + 0 + 2 = 6 = 4 + 2 units
    result = analyse(raw)
    assert result.tokens_to_first_chunk == 4
    assert result.model_ms == pytest.approx(40.0)  # four 10 ms steps
    assert result.vocoder_ms == pytest.approx(5.5)
    assert result.first_audio_ms == pytest.approx((raw.first_sample_at - raw.released) * 1000)
    assert result.overhead_ms == pytest.approx(result.first_audio_ms - 45.5)
    assert sum(result.parts_ms) == pytest.approx(result.overhead_ms)
    assert result.stop_part_ms == pytest.approx(20.0) and result.stopped_ms == pytest.approx(20.0)
    assert result.turn_start_part_ms == pytest.approx(29.0)
    assert result.between_tokens_part_ms == pytest.approx(4.0)  # 1 ms before the first step + 3 gaps
    assert result.handoff_part_ms == pytest.approx(2.0)
    assert result.vocoder_other_part_ms == pytest.approx(0.5)
    assert result.to_device_part_ms == pytest.approx(6.0)


def test_an_answer_too_short_for_a_chunk_is_timed_up_to_its_last_token() -> None:
    chunking = ChunkingOptions(first_chunk_units=40, chunk_units=40)
    raw = _turn([1, 1, 1], chunking, flush=True)
    result = analyse(raw)
    assert result.tokens_to_first_chunk == 3
    assert sum(result.parts_ms) == pytest.approx(result.overhead_ms)


def test_the_full_size_writer_uses_the_official_dimensions() -> None:
    from engine.bench.sizes import full_dims
    from engine.config import OFFICIAL_DIMS

    assert full_dims() == OFFICIAL_DIMS


def test_the_bench_event_log_fails_fast_where_the_tests_log_waits() -> None:
    from engine.bench.event_log import EventLog
    from engine.bench.latency import BenchError, BenchEventLog
    from engine.events import Failed, Ready, TurnFinished

    plain, bench = EventLog(), BenchEventLog()
    for log in (plain, bench):
        log(Failed("model_corrupt", "bad shard", "Download it again."))
        log(Ready("tiny"))
    assert isinstance(plain.wait_for(Ready, timeout_s=1.0), Ready)  # a test inspects Failed itself
    with pytest.raises(AssertionError, match=r"no TurnFinished within 0.05 s; got \['Failed', 'Ready'\]"):
        plain.wait_for(TurnFinished, timeout_s=0.05)
    with pytest.raises(BenchError, match=r"The engine failed \(model_corrupt\): bad shard"):
        bench.wait_for(Ready, timeout_s=1.0)
    with pytest.raises(BenchError, match="No Ready within 0 s"):
        BenchEventLog().wait_for(Ready, timeout_s=0.01)
