"""Vocoder benchmark: real-time factor of PyTorch vs onnxruntime on CPU, and streaming SNR.

Uses the official architecture at full size (512 initial channels) with random weights, written by
``engine.vocoder.checkpoint.write_official_size_vocoder`` into a temporary folder: no download.

    python bench/bench_vocoder.py            # prints the tables and appends them to bench/RESULTS.md
    python bench/bench_vocoder.py --no-append

RTF = compute seconds / audio seconds (below 1 is faster than real time), best of a few runs because
the machine may be shared. Streaming rows vocode the
whole utterance through ``StreamingVocoder`` with units pushed one at a time, so they include the
left/right context every chunk recomputes; "first chunk" is the compute time of the push that
returned the first audio (the vocoder's share of the response latency). The measurements live in
``engine.bench.vocoder``, which ``python -m engine bench`` also uses.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
CHUNK_SIZES = (10, 20, 40)
STREAM_LOOKAHEAD = 2
# Best of N: the machine is shared, and an oversubscribed CPU makes single timings swing by 10x.
ONE_PASS_REPEATS = 3
STREAM_REPEATS = 2


def _bootstrap() -> None:
    if str(REPO_ROOT) not in sys.path:
        sys.path.insert(0, str(REPO_ROOT))


def main(argv: list[str] | None = None) -> int:
    _bootstrap()
    import numpy as np
    import onnxruntime
    import torch

    from engine.bench.report import append_section, cpu_name, load_average
    from engine.bench.vocoder import measure_speed, random_units, rtf_table, snr_table, timed
    from engine.events import ChunkingOptions
    from engine.vocoder.api import load_vocoder_runtime
    from engine.vocoder.checkpoint import write_official_size_vocoder
    from engine.vocoder.receptive import exact_lookahead_units, generator_context_frames
    from engine.vocoder.runtime import VocoderRuntime

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--units", type=int, default=100, help="utterance length in units (default %(default)s)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--results", type=Path, default=REPO_ROOT / "bench" / "RESULTS.md")
    parser.add_argument("--no-append", action="store_true", help="print only, do not touch RESULTS.md")
    args = parser.parse_args(argv)

    bench_started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="omnitalk-bench-vocoder-") as tmp:
        work = Path(tmp)
        vocoder_dir = write_official_size_vocoder(work / "vocoder", seed=args.seed)
        export_messages: list[str] = []
        export_seconds = timed(
            lambda: load_vocoder_runtime(
                vocoder_dir, "cpu", lambda f, m: export_messages.append(m), export_dir=work / "onnx", warm_up=False
            ).close()
        )
        runtimes: dict[str, VocoderRuntime] = {
            "PyTorch": load_vocoder_runtime(vocoder_dir, "cpu", backend="torch"),
            "onnxruntime": load_vocoder_runtime(vocoder_dir, "cpu", export_dir=work / "onnx"),
        }
        ort = runtimes["onnxruntime"]
        config = ort.config
        units = random_units(ort, args.units, args.seed)
        whole = ort.synthesize(units)
        parity = float(np.max(np.abs(runtimes["PyTorch"].synthesize(units) - whole)))

        rows = [(f"stream Ω={omega}, look-ahead {STREAM_LOOKAHEAD}", omega) for omega in CHUNK_SIZES]
        speed = measure_speed(
            runtimes,
            units,
            [(label, ChunkingOptions(omega, omega, STREAM_LOOKAHEAD)) for label, omega in rows],
            one_pass_repeats=ONE_PASS_REPEATS,
            stream_repeats=STREAM_REPEATS,
        )
        rtf = rtf_table(speed, list(runtimes), f"one pass ({args.units} units)", [label for label, _ in rows])
        by_omega = {str(omega): label for label, omega in rows}
        snr = snr_table(
            ort,
            units,
            whole,
            [(str(omega), ChunkingOptions(omega, omega, STREAM_LOOKAHEAD)) for omega in CHUNK_SIZES],
            (0, STREAM_LOOKAHEAD, 8, exact_lookahead_units(config)),
            done=lambda omega, la: speed.streams[("onnxruntime", by_omega[omega])] if la == STREAM_LOOKAHEAD else None,
        )
        providers = ", ".join(ort.providers)
        for rt in runtimes.values():
            rt.close()

    bench_seconds = time.perf_counter() - bench_started
    cpu = f"{cpu_name()}, {os.cpu_count()} logical cores, torch threads {torch.get_num_threads()}"
    versions = (
        f"Python {platform.python_version()}, torch {torch.__version__}, onnxruntime {onnxruntime.__version__} "
        f"(providers used: {providers})"
    )
    script_args = sys.argv[1:] if argv is None else argv
    command = "cd /work/main && " + " ".join([Path(sys.executable).as_posix(), "bench/bench_vocoder.py", *script_args])
    section = f"""
## Vocoder: PyTorch vs onnxruntime on CPU, streaming SNR ({datetime.date.today().isoformat()})

- Device: {cpu}; no GPU; 1-minute load average at the end {load_average():.1f} (shared machine).
- Versions: {versions}.
- Model: official unit HiFi-GAN architecture at full size (512 initial channels, hop 320), random weights,
  seed {args.seed}; utterance of {args.units} random units = {speed.audio_s:.2f} s of audio.
- ONNX export (durations.onnx + generator.onnx, first use): {export_seconds:.1f} s including the parity
  check; onnxruntime vs PyTorch max |diff| on this utterance: {parity:.2g}.
- Generator context {generator_context_frames(config)} frames each side; exact look-ahead bound \
{exact_lookahead_units(config)} units.
- Command: `{command}` (took {bench_seconds:.0f} s).

Real-time factor (compute / audio, best of {ONE_PASS_REPEATS} one-pass / {STREAM_REPEATS} streaming runs;
streaming pushes one unit at a time and includes the re-computed context):

{rtf.markdown()}

Streaming vs one-pass synthesis, SNR in dB (onnxruntime; "inf" = bit-identical; * = different length because
chunk-edge durations were predicted without their right neighbours):

{snr.markdown()}
"""
    print(section)
    if not args.no_append:
        append_section(args.results, section)
        print(f"appended to {args.results}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
