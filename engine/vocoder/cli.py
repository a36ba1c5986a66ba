"""``python -m engine export-vocoder`` and ``python -m engine vocode``."""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import numpy as np

from engine.audio.io import save_audio
from engine.errors import BadInput
from engine.vocoder.defaults import DEFAULT_LOOKAHEAD_UNITS, DEFAULT_OPSET

_UNIT_SEPARATORS = re.compile(r"[\s,]+")


def parse_units(text: str) -> list[int]:
    """"12 7 7 993" or "12,7,7,993" -> [12, 7, 7, 993]; BadInput for anything else."""
    tokens = [t for t in _UNIT_SEPARATORS.split(text.strip()) if t]
    if not tokens:
        raise BadInput("No units given.", fix='Pass units like --units "12 7 7 993".')
    try:
        return [int(t) for t in tokens]
    except ValueError as exc:
        raise BadInput(f"Units must be integers: {exc}", fix='Pass units like --units "12 7 7 993".') from exc


def _print_progress(fraction: float, message: str) -> None:
    print(f"[{fraction * 100:5.1f}%] {message}", file=sys.stderr, flush=True)


def _export(args: argparse.Namespace) -> int:
    from engine.vocoder.export_cache import ensure_vocoder_onnx
    from engine.vocoder.onnx_export import export_vocoder_onnx

    if args.out is not None:
        export = export_vocoder_onnx(args.vocoder, args.out, opset=args.opset, on_progress=_print_progress)
    else:
        export = ensure_vocoder_onnx(args.vocoder, opset=args.opset, on_progress=_print_progress, force=args.force)
    print(f"durations graph: {export.durations_path}")
    print(f"generator graph: {export.generator_path}")
    print(f"max |ONNX - PyTorch|: {export.manifest.get('parity_max_abs_diff')}")
    return 0


def _vocode(args: argparse.Namespace) -> int:
    from engine.vocoder.api import load_vocoder_runtime
    from engine.vocoder.streaming import StreamingVocoder

    units = parse_units(args.units)
    progress = _print_progress if args.verbose else None
    with load_vocoder_runtime(args.vocoder, args.device, progress, backend=args.backend) as runtime:
        if args.chunk_units:
            stream = StreamingVocoder(runtime, chunk_units=args.chunk_units, lookahead_units=args.lookahead_units)
            chunks = []
            for unit in units:  # one at a time, like units arriving from the speech generator
                chunks += stream.push([unit])
            chunks += stream.flush()
            wav = np.concatenate(chunks) if chunks else np.zeros(0, dtype=np.float32)
        else:
            wav = runtime.synthesize(units)
        path = save_audio(args.out, wav, runtime.sample_rate_hz)
        print(f"{path}: {wav.size / runtime.sample_rate_hz:.2f} s ({runtime.backend} on {runtime.device})")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    export = subparsers.add_parser(
        "export-vocoder",
        help="export the unit vocoder to ONNX (checked against PyTorch)",
        description="Export g_00500000 + config.json to durations.onnx + generator.onnx with a parity check. "
        "Without --out the export goes to the cache the app uses and is skipped when up to date.",
    )
    export.add_argument("--vocoder", type=Path, required=True, help="folder with g_00500000 and config.json")
    export.add_argument("--out", type=Path, default=None, help="export folder (default: the OmniTalk cache)")
    export.add_argument("--opset", type=int, default=DEFAULT_OPSET, help="ONNX opset (default %(default)s)")
    export.add_argument("--force", action="store_true", help="re-export even if the cached export is current")
    export.set_defaults(func=_export)

    vocode = subparsers.add_parser(
        "vocode",
        help="turn a unit sequence into a WAV file",
        description="Synthesise units (0..999) into 16 kHz speech. --chunk-units streams like the app does.",
    )
    vocode.add_argument("--vocoder", type=Path, required=True, help="folder with g_00500000 and config.json")
    vocode.add_argument("--units", required=True, help='space- or comma-separated unit ids, e.g. "12 7 7 993"')
    vocode.add_argument("--out", type=Path, required=True, help="output WAV path")
    vocode.add_argument("--backend", choices=("auto", "onnx", "torch"), default="auto")
    vocode.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    vocode.add_argument("--chunk-units", type=int, default=0, help="stream in chunks of this many units (0: one pass)")
    vocode.add_argument(
        "--lookahead-units", type=int, default=DEFAULT_LOOKAHEAD_UNITS, help="streaming look-ahead in units"
    )
    vocode.set_defaults(func=_vocode)
