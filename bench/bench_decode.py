"""Decode cost of text + units vs text only, and peak host RAM while loading (not a timed test).

    python bench/bench_decode.py [--tokens 64] [--threads 1] [--append-results]

1. Writes a mid-size random LLaMA-Omni (``--hidden/--layers``; default 32 Llama layers of width
   512 with GQA 8/2, vocab 32000, unit decoder "(2,512,8,1376)", λ = 25: the 8B model's layer
   ratio, scaled down) with ``engine.tiny``.
2. Per-token decode time over a ``--tokens`` answer after a speech-sized prompt, three ways:
   text only (LLM step + head); text + units with our incremental unit decoder (KV cache, λ new
   frames per token); text + units with the reference streamer's full recompute per token (O(N²)).
3. Peak host RAM (VmHWM) of a fresh process that loads the model from its shards, per mode, next
   to a naive "read every shard into a dict, then convert" load.

Prints a table; ``--append-results`` appends it to bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from engine.model.omni import OmniModel  # noqa: E402
from engine.model.unit_decoder import UnitStream, units_offline  # noqa: E402
from engine.tiny import TinySpec, write_tiny_set  # noqa: E402

RESULTS = ROOT / "bench" / "RESULTS.md"
RESULTS_HEADING = "# OmniTalk benchmark results"
BENCH_DATE = "2026-11-21"
PROMPT_POSITIONS = 340  # ~ system + speech span (300) + instruction


def mid_spec(hidden: int, layers: int) -> TinySpec:
    heads = hidden // 64
    return TinySpec(
        hidden=hidden,
        n_layers=layers,
        n_heads=heads,
        n_kv_heads=max(1, heads // 4),
        intermediate=int(hidden * 3.5),
        vocab_size=32000,
        adapter_hidden=256,
        unit_layers=2,
        unit_dim=hidden,
        unit_heads=heads,
        unit_ffn=int(hidden * 11008 / 4096),
        n_shards=4,
    )


def _proc_status_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


# ------------------------------------------------------------------------------- decode timing


@torch.inference_mode()
def time_decode(model: OmniModel, n_tokens: int, mode: str) -> tuple[float, float]:
    """(seconds per token, of which unit decoding) for ``n_tokens`` greedy steps after a prompt.

    mode: "text" (no units), "units" (our incremental decoder), "recompute" (reference streamer).
    """
    ids = list(range(1, PROMPT_POSITIONS + 1))
    cache = model.new_cache()
    hidden = model.forward(model.build_embeds(ids), cache)[:, -1]
    stream = UnitStream(model.unit_decoder, max_tokens=n_tokens)
    states: list[torch.Tensor] = []
    unit_s = 0.0
    start = time.perf_counter()
    for _ in range(n_tokens):
        token = int(model.logits(hidden[0]).argmax())
        t_units = time.perf_counter()
        if mode == "units":
            stream.push(hidden)
        elif mode == "recompute":
            states.append(hidden)
            units_offline(model.unit_decoder, torch.cat(states))  # the reference re-runs everything
        unit_s += time.perf_counter() - t_units
        hidden = model.forward(model.embed_ids([token]).unsqueeze(0), cache)[:, -1]
    return (time.perf_counter() - start) / n_tokens, unit_s / n_tokens


# ------------------------------------------------------------------------------- load memory

_LOAD_CHILD = """
import json, sys, time
sys.path.insert(0, {root!r})
import torch
from engine.model.omni import OmniModel
from engine.model.safetensors_io import ShardSet
from bench.bench_decode import _proc_status_kb
mode, folder = sys.argv[1], sys.argv[2]
base = _proc_status_kb("VmRSS")
t0 = time.perf_counter()
if mode == "naive":
    from safetensors.torch import load_file
    state = {{}}
    for shard in ShardSet.open(folder).shards:
        state.update(load_file(str(shard)))
    state = {{k: v.float() for k, v in state.items()}}
    loaded = sum(v.numel() * v.element_size() for v in state.values())
else:
    model = OmniModel.load(folder, device="cpu", quant=mode)
    parts = (model.llm, model.unit_decoder, model.adapter, model.encoder)
    loaded = sum(t.numel() * t.element_size() for m in parts for t in (*m.parameters(), *m.buffers()))
print(json.dumps({{"base_kb": base, "peak_kb": _proc_status_kb("VmHWM"), "loaded_bytes": loaded,
                  "load_s": time.perf_counter() - t0}}))
"""


def measure_load(folder: Path, mode: str, threads: int) -> dict[str, float]:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    out = subprocess.run(
        [sys.executable, "-c", _LOAD_CHILD.format(root=str(ROOT)), mode, str(folder)],
        capture_output=True,
        text=True,
        check=True,
        env=env,
        cwd=ROOT,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


# ------------------------------------------------------------------------------------- main


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tokens", type=int, default=64, help="answer length for the decode timing")
    parser.add_argument("--hidden", type=int, default=512)
    parser.add_argument("--layers", type=int, default=32)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--repeats", type=int, default=5, help="best of N for each decode timing")
    parser.add_argument("--device", default="cpu", help="cpu | cuda (decode timing; the load test is CPU)")
    parser.add_argument("--quant", default=None, help="decode-timing precision (default: fp32 on CPU, nf4 on CUDA)")
    parser.add_argument("--append-results", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    with tempfile.TemporaryDirectory(prefix="omni-bench-") as tmp:
        spec = mid_spec(args.hidden, args.layers)
        paths = write_tiny_set(Path(tmp), seed=0, spec=spec, vocoder=False)
        shard_bytes = sum(p.stat().st_size for p in paths.omni.glob("*.safetensors"))
        model = OmniModel.load(paths.omni, device=args.device, quant=args.quant)
        dims = model.dims
        model_desc = f"{model.plan.quant} on {model.device}, {args.threads} CPU thread(s)"
        time_decode(model, 4, "units")  # warm-up
        runs: dict[str, list[tuple[float, float]]] = {"text": [], "units": [], "recompute": []}
        for _ in range(args.repeats):  # interleaved, so slow drifts of a shared machine hit all modes
            for mode in runs:
                runs[mode].append(time_decode(model, args.tokens, mode))
        per_token = {mode: min(r[0] for r in results) for mode, results in runs.items()}
        unit_part = {mode: min(r[1] for r in results) for mode, results in runs.items()}
        del model
        loads = {mode: measure_load(paths.omni, mode, args.threads) for mode in ("fp32", "bf16", "nf4", "naive")}

    llm_m = dims.llm.n_params / 1e6
    unit_m = dims.unit_decoder.n_params / 1e6
    lines = [
        f"Model: Llama {dims.llm.n_layers}x{dims.llm.hidden_size} (GQA {dims.llm.n_heads}/{dims.llm.n_kv_heads}, "
        f"vocab {dims.llm.vocab_size}, {llm_m:.0f}M params), unit decoder "
        f"({dims.unit_decoder.n_layers},{dims.unit_decoder.dim},{dims.unit_decoder.n_heads},"
        f"{dims.unit_decoder.ffn_dim}) λ={dims.unit_decoder.upsample_factor} ({unit_m:.1f}M params); "
        f"{model_desc}; prompt {PROMPT_POSITIONS} positions, answer {args.tokens} tokens, "
        f"best of {args.repeats}.",
        "",
        "| decode path | ms / token | of which unit decoder | vs text only |",
        "|---|---|---|---|",
    ]
    names = {
        "text": "text only (LLM step + head)",
        "units": "text + units, incremental unit decoder (ours, O(N))",
        "recompute": "text + units, full recompute per token (reference streamer, O(N²))",
    }
    for mode, name in names.items():
        lines.append(
            f"| {name} | {per_token[mode] * 1e3:.1f} | {unit_part[mode] * 1e3:.1f} | "
            f"{per_token[mode] / per_token['text']:.2f}x |"
        )
    lines += [
        "",
        f"Peak host RAM while loading from {shard_bytes / 1e6:.0f} MB of fp16 shards (fresh process, VmHWM):",
        "",
        "| load | model in RAM (MB) | RSS before (MB) | peak RSS (MB) | peak - before - model (MB) | load s |",
        "|---|---|---|---|---|---|",
    ]
    labels = {
        "fp32": "ours, fp32",
        "bf16": "ours, bf16",
        "nf4": "ours, nf4 (bitsandbytes)",
        "naive": "naive: all shards to a dict, then fp32",
    }
    for mode, label in labels.items():
        r = loads[mode]
        model_mb = r["loaded_bytes"] / 1e6
        base_mb, peak_mb = r["base_kb"] * 1024 / 1e6, r["peak_kb"] * 1024 / 1e6
        lines.append(
            f"| {label} | {model_mb:.0f} | {base_mb:.0f} | {peak_mb:.0f} | {peak_mb - base_mb - model_mb:.0f} | "
            f"{r['load_s']:.1f} |"
        )
    table = "\n".join(lines)
    print(table)
    if args.append_results:
        command = "python bench/bench_decode.py " + " ".join(sys.argv[1:])
        cpu = platform.processor() or platform.machine()
        section = (
            f"\n## Decode cost of speech units and load memory (bench/bench_decode.py)\n\n"
            f"- Device: {args.device} (host {cpu}, {os.cpu_count()} cores), torch {torch.__version__}\n"
            f"- Date: {BENCH_DATE}\n- Command: `{command}`\n\n{table}\n"
        )
        if not RESULTS.exists():
            RESULTS.write_text(RESULTS_HEADING + "\n", encoding="utf-8")
        with RESULTS.open("a", encoding="utf-8") as f:
            f.write(section)
    return 0


if __name__ == "__main__":
    sys.exit(main())
