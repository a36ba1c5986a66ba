"""How long the setup wizard's "Check the files" (``engine.preflight.check_model_folders``) takes, as
the app runs it: a fresh Python process each time (the first check of a session pays every import).

Sets checked:

- ``tiny``: ``python -m engine make-tiny``'s set (3 MB; Whisper as a separate ``large-v3.pt``);
- ``full``: the official Llama-3.1-8B-Omni layout at full size (Whisper inside the shards, 18 GB of
  tensors): real safetensors headers with the official shapes, on sparse files, so the check sees
  the real header sizes and file lengths while the disk holds almost nothing.

Usage::

    .venv/bin/python bench/bench_folder_check.py [--runs 5] [--code DIR]

``--code DIR`` times another checkout's engine (e.g. the commit before a change) with this
interpreter. Prints a table; results go in bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import statistics
import struct
import subprocess
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

import torch

from engine.bench.sizes import FULL_SPEC, spec_vocab_size
from engine.config import WHISPER_LARGE_V3
from engine.model.encoder_loading import SHARD_ENCODER_PREFIX
from engine.model.safetensors_io import INDEX_NAME
from engine.tiny import WhisperTextDims, omni_tensor_groups, whisper_state_dict, write_omni_folder, write_tiny_set

ROOT = Path(__file__).resolve().parents[1]
SHARD_BYTES = 5_000_000_000
CHECK = """
import json, sys, time
from pathlib import Path
t0 = time.perf_counter()
from engine.preflight import check_model_folders
model, encoder, vocoder = (Path(p) if p else None for p in sys.argv[1:4])
check_model_folders(model, encoder, vocoder)
print(json.dumps({"s": time.perf_counter() - t0, "torch": "torch" in sys.modules}))
"""


class _MetaInit:
    """Stands in for engine.tiny's seeded initialiser: same shapes, no data."""

    def __init__(self, seed: int) -> None:
        pass

    def normal(self, *shape: int, std: float) -> torch.Tensor:
        return torch.empty(*shape, device="meta")

    def linear(self, out_f: int, in_f: int, gain: float = 1.0) -> torch.Tensor:
        return torch.empty(out_f, in_f, device="meta")

    def norm(self, n: int) -> torch.Tensor:
        return torch.empty(n, device="meta")


def write_full_headers(folder: Path) -> Path:
    """The official layout at full size: real headers, sparse data (see the module docstring)."""
    import engine.tiny as tiny

    write_omni_folder(folder, replace(FULL_SPEC, n_layers=0, unit_layers=0, vocab_size=None, n_shards=1), 0)
    for stale in folder.glob("model-*.safetensors"):
        stale.unlink()
    config_path = folder / "config.json"
    config = json.loads(config_path.read_text(encoding="utf-8"))
    config |= {"num_hidden_layers": FULL_SPEC.n_layers, "vocab_size": spec_vocab_size(FULL_SPEC)}
    config["ctc_decoder_config"] = (
        f"({FULL_SPEC.unit_layers},{FULL_SPEC.unit_dim},{FULL_SPEC.unit_heads},{FULL_SPEC.unit_ffn})"
    )
    config_path.write_text(json.dumps(config), encoding="utf-8")
    real_init, tiny._Init = tiny._Init, _MetaInit  # type: ignore[misc]
    try:
        groups = omni_tensor_groups(FULL_SPEC, spec_vocab_size(FULL_SPEC), 0)
        shapes = {k: tuple(t.shape) for group in groups for k, t in group.items()}
        whisper = whisper_state_dict(WHISPER_LARGE_V3, WhisperTextDims(), 0)
    finally:
        tiny._Init = real_init  # type: ignore[misc]
    shapes |= {SHARD_ENCODER_PREFIX + k[len("encoder.") :]: tuple(v.shape) for k, v in whisper.items()
               if k.startswith("encoder.")}
    weight_map: dict[str, str] = {}
    shards: list[dict[str, tuple[int, ...]]] = [{}]
    used = 0
    for key, shape in shapes.items():
        size = 2 * int(torch.Size(shape).numel())
        if used and used + size > SHARD_BYTES:
            shards.append({})
            used = 0
        shards[-1][key] = shape
        used += size
    for i, group in enumerate(shards):
        name = f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors"
        header, offset = {"__metadata__": {"format": "pt"}}, 0
        for key, shape in group.items():
            end = offset + 2 * int(torch.Size(shape).numel())
            header[key] = {"dtype": "F16", "shape": list(shape), "data_offsets": [offset, end]}  # type: ignore[assignment]
            offset = end
        raw = json.dumps(header).encode()
        with (folder / name).open("wb") as f:
            f.write(struct.pack("<Q", len(raw)) + raw)
            f.truncate(8 + len(raw) + offset)  # sparse: the data reads as zeros, takes no disk
        weight_map |= {k: name for k in group}
    (folder / INDEX_NAME).write_text(json.dumps({"weight_map": weight_map}), encoding="utf-8")
    return folder


def time_check(code: Path, paths: tuple[Path, Path | None, Path | None], runs: int) -> tuple[float, float, bool]:
    times, torch_loaded = [], False
    for _ in range(runs):
        args = [str(p) if p else "" for p in paths]
        out = subprocess.run(
            [sys.executable, "-c", CHECK, *args], cwd=code, capture_output=True, text=True, check=True
        ).stdout
        result = json.loads(out.strip().splitlines()[-1])
        times.append(result["s"])
        torch_loaded |= result["torch"]
    return statistics.median(times), max(times), torch_loaded


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--code", type=Path, default=ROOT, help="checkout whose engine is timed")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="omnitalk-check-") as tmp:
        tiny = write_tiny_set(Path(tmp) / "tiny", seed=0)
        full = write_full_headers(Path(tmp) / "full" / "omni")
        sets = {
            "tiny (3 MB, Whisper .pt)": (tiny.omni, None, tiny.vocoder),
            "full size (18 GB, Whisper in shards)": (full, None, None),
        }
        print(f"code: {args.code}   runs: {args.runs} fresh processes each")
        print(f"{'set':40} {'median s':>9} {'max s':>7}  torch imported")
        for name, paths in sets.items():
            median, worst, torch_loaded = time_check(args.code, paths, args.runs)
            print(f"{name:40} {median:9.3f} {worst:7.3f}  {'yes' if torch_loaded else 'no'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
