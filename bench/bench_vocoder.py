"""Vocoder benchmark: real-time factor of PyTorch vs onnxruntime on CPU, and streaming SNR.

Uses the official architecture at full size (512 initial channels) with random weights, written by
``engine.vocoder.checkpoint.write_official_size_vocoder`` into a temporary folder: no download.

    python bench/bench_vocoder.py            # prints the tables and appends them to bench/RESULTS.md
    python bench/bench_vocoder.py --no-append

RTF = compute seconds / audio seconds (below 1 is faster than real time), best of a few runs because
the machine may be shared. Streaming rows vocode the
whole utterance through ``StreamingVocoder`` with units pushed one at a time, so they include the
left/right context every chunk recomputes; "first chunk" is the compute time of the push that
returned the first audio (the vocoder's share of the response latency).
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
BENCH_DATE = "2026-11-21"
RESULTS_HEADING = "# OmniTalk benchmark results"
CHUNK_SIZES = (10, 20, 40)
STREAM_LOOKAHEAD = 2
# Best of N: the machine is shared, and an oversubscribed CPU makes single timings swing by 10x.
ONE_PASS_REPEATS = 3
STREAM_REPEATS = 2


def _bootstrap() -> None:
    if str(REPO_ROOT) not in sys.path:
        sys.path.insert(0, str(REPO_ROOT))


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _table(headers: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def _timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    _bootstrap()
    import numpy as np
    import onnxruntime
    import torch

    from engine.vocoder.api import load_vocoder_runtime
    from engine.vocoder.checkpoint import write_official_size_vocoder
    from engine.vocoder.quality import reference_chunked_synthesis, snr_db
    from engine.vocoder.receptive import exact_lookahead_units, generator_context_frames
    from engine.vocoder.runtime import VocoderRuntime
    from engine.vocoder.streaming import StreamingVocoder

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--units", type=int, default=100, help="utterance length in units (default %(default)s)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--results", type=Path, default=REPO_ROOT / "bench" / "RESULTS.md")
    parser.add_argument("--no-append", action="store_true", help="print only, do not touch RESULTS.md")
    args = parser.parse_args(argv)

    bench_started = time.perf_counter()
    work = Path(tempfile.mkdtemp(prefix="omnitalk-bench-vocoder-"))
    vocoder_dir = write_official_size_vocoder(work / "vocoder", seed=args.seed)
    export_messages: list[str] = []
    export_seconds = _timed(
        lambda: load_vocoder_runtime(
            vocoder_dir, "cpu", lambda f, m: export_messages.append(m), export_dir=work / "onnx", warm_up=False
        ).close()
    )
    runtimes: dict[str, VocoderRuntime] = {
        "PyTorch": load_vocoder_runtime(vocoder_dir, "cpu", backend="torch"),
        "onnxruntime": load_vocoder_runtime(vocoder_dir, "cpu", export_dir=work / "onnx"),
    }
    config = runtimes["PyTorch"].config
    units = np.random.default_rng(args.seed).integers(0, config.num_embeddings, args.units).tolist()
    whole = runtimes["onnxruntime"].synthesize(units)
    audio_s = whole.size / config.sampling_rate
    parity = float(np.max(np.abs(runtimes["PyTorch"].synthesize(units) - whole)))

    def stream_run(runtime: VocoderRuntime, omega: int, lookahead: int) -> tuple[np.ndarray, float, float]:
        """(wav, total compute s, compute s of the push that produced the first audio)."""
        stream = StreamingVocoder(runtime, chunk_units=omega, lookahead_units=lookahead)
        chunks: list[np.ndarray] = []
        total, first = 0.0, float("nan")
        for unit in [*units, None]:
            start = time.perf_counter()
            got = stream.flush() if unit is None else stream.push([unit])
            elapsed = time.perf_counter() - start
            total += elapsed
            if got and not chunks:
                first = elapsed
            chunks += got
        return np.concatenate(chunks), total, first

    # ------------------------------------------------------------------------------------ RTF table
    rtf_rows: list[list[str]] = []
    one_pass = {
        name: min(_timed(lambda rt=rt: rt.synthesize(units)) for _ in range(ONE_PASS_REPEATS))
        for name, rt in runtimes.items()
    }
    rtf_rows.append(
        [f"one pass ({args.units} units)"]
        + [f"{one_pass[n] / audio_s:.3f}" for n in runtimes]
        + ["-", "-"]
    )
    stream_cache: dict[tuple[str, int, int], tuple[np.ndarray, float, float]] = {}
    for omega in CHUNK_SIZES:
        cells_rtf, cells_first = [], []
        for name, rt in runtimes.items():
            runs = [stream_run(rt, omega, STREAM_LOOKAHEAD) for _ in range(STREAM_REPEATS)]
            result = (runs[0][0], min(r[1] for r in runs), min(r[2] for r in runs))
            stream_cache[(name, omega, STREAM_LOOKAHEAD)] = result
            cells_rtf.append(f"{result[1] / audio_s:.3f}")
            cells_first.append(f"{result[2] * 1000:.0f}")
        rtf_rows.append([f"stream Ω={omega}, look-ahead {STREAM_LOOKAHEAD}"] + cells_rtf + cells_first)
    rtf_table = _table(
        ["mode", "PyTorch RTF", "onnxruntime RTF", "PyTorch first chunk ms", "onnxruntime first chunk ms"],
        rtf_rows,
    )

    # ------------------------------------------------------------------------------------ SNR table
    exact = exact_lookahead_units(config)
    lookaheads = (0, STREAM_LOOKAHEAD, 8, exact)
    snr_rows: list[list[str]] = []
    ort = runtimes["onnxruntime"]
    for omega in CHUNK_SIZES:
        naive = reference_chunked_synthesis(ort, units, omega)
        row = [str(omega), _snr_cell(snr_db(whole, naive), naive.size == whole.size)]
        for lookahead in lookaheads:
            key = ("onnxruntime", omega, lookahead)
            wav = stream_cache[key][0] if key in stream_cache else stream_run(ort, omega, lookahead)[0]
            row.append(_snr_cell(snr_db(whole, wav), wav.size == whole.size))
        snr_rows.append(row)
    snr_table = _table(
        ["Ω (units)", "reference: independent chunks"] + [f"look-ahead {la}" for la in lookaheads],
        snr_rows,
    )

    bench_seconds = time.perf_counter() - bench_started
    cpu = f"{_cpu_name()}, {os.cpu_count()} logical cores, torch threads {torch.get_num_threads()}"
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    versions = (
        f"Python {platform.python_version()}, torch {torch.__version__}, onnxruntime {onnxruntime.__version__} "
        f"(providers used: {', '.join(runtimes['onnxruntime'].providers)})"
    )
    script_args = sys.argv[1:] if argv is None else argv
    command = "cd /work/main && " + " ".join([Path(sys.executable).as_posix(), "bench/bench_vocoder.py", *script_args])
    section = f"""
## Vocoder: PyTorch vs onnxruntime on CPU, streaming SNR ({BENCH_DATE})

- Device: {cpu}; no GPU; 1-minute load average at the end {load:.1f} (shared machine).
- Versions: {versions}.
- Model: official unit HiFi-GAN architecture at full size (512 initial channels, hop 320), random weights,
  seed {args.seed}; utterance of {args.units} random units = {audio_s:.2f} s of audio.
- ONNX export (durations.onnx + generator.onnx, first use): {export_seconds:.1f} s including the parity
  check; onnxruntime vs PyTorch max |diff| on this utterance: {parity:.2g}.
- Generator context {generator_context_frames(config)} frames each side; exact look-ahead bound {exact} units.
- Command: `{command}` (took {bench_seconds:.0f} s).

Real-time factor (compute / audio, best of {ONE_PASS_REPEATS} one-pass / {STREAM_REPEATS} streaming runs;
streaming pushes one unit at a time and includes the re-computed context):

{rtf_table}

Streaming vs one-pass synthesis, SNR in dB (onnxruntime; "inf" = bit-identical; * = different length because
chunk-edge durations were predicted without their right neighbours):

{snr_table}
"""
    print(section)
    if not args.no_append:
        _append(args.results, section)
        print(f"appended to {args.results}")
    for rt in runtimes.values():
        rt.close()
    return 0


def _snr_cell(value: float, same_length: bool) -> str:
    text = "inf" if value == float("inf") else f"{value:.1f}"
    return text if same_length else f"{text}*"


def _append(path: Path, section: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists() or not path.read_text(encoding="utf-8").strip():
        path.write_text(RESULTS_HEADING + "\n", encoding="utf-8")
    with path.open("a", encoding="utf-8") as handle:
        handle.write(section)


if __name__ == "__main__":
    sys.exit(main())
