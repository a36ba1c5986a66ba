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

Prints a table; ``--append-results`` appends it to bench/RESULTS.md. The measurements live in
``engine.bench`` (``decode``, ``memory``, ``sizes``), which ``python -m engine bench`` also uses.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from engine.bench.decode import MODE_NAMES, PROMPT_POSITIONS, run_decode  # noqa: E402
from engine.bench.memory import measure_load  # noqa: E402
from engine.bench.report import append_section  # noqa: E402
from engine.bench.sizes import mid_spec  # noqa: E402
from engine.model.omni import OmniModel  # noqa: E402
from engine.tiny import write_tiny_set  # noqa: E402

RESULTS = ROOT / "bench" / "RESULTS.md"
LOAD_LABELS = {
    "fp32": "ours, fp32",
    "bf16": "ours, bf16",
    "nf4": "ours, nf4 (bitsandbytes)",
    "naive": "naive: all shards to a dict, then fp32",
}


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
        decode = run_decode(model, args.tokens, args.repeats)
        del model
        loads = {mode: measure_load(paths.omni, mode, threads=args.threads) for mode in LOAD_LABELS}

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
    for mode, name in MODE_NAMES.items():
        lines.append(
            f"| {name} | {decode.per_token_s[mode] * 1e3:.1f} | {decode.unit_s[mode] * 1e3:.1f} | "
            f"{decode.ratio(mode):.2f}x |"
        )
    lines += [
        "",
        f"Peak host RAM while loading from {shard_bytes / 1e6:.0f} MB of fp16 shards (fresh process, VmHWM):",
        "",
        "| load | model in RAM (MB) | RSS before (MB) | peak RSS (MB) | peak - before - model (MB) | load s |",
        "|---|---|---|---|---|---|",
    ]
    for mode, label in LOAD_LABELS.items():
        r = loads[mode]
        lines.append(
            f"| {label} | {r.model_mb:.0f} | {r.base_mb:.0f} | {r.peak_mb:.0f} | {r.above_model_mb:.0f} | "
            f"{r.load_s:.1f} |"
        )
    table = "\n".join(lines)
    print(table)
    if args.append_results:
        command = "python bench/bench_decode.py " + " ".join(sys.argv[1:])
        cpu = platform.processor() or platform.machine()
        append_section(
            RESULTS,
            f"\n## Decode cost of speech units and load memory (bench/bench_decode.py)\n\n"
            f"- Device: {args.device} (host {cpu}, {os.cpu_count()} cores), torch {torch.__version__}\n"
            f"- Date: {datetime.date.today().isoformat()}\n- Command: `{command}`\n\n{table}\n",
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
