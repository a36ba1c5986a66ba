"""Fine-tuning speed and memory, the decode cost of an unmerged LoRA, and a GPU time estimate.

    python bench/bench_finetune.py [--sizes tiny,mid] [--steps 6] [--threads 2] [--append-results]

1. Training throughput and peak memory per size (tiny: engine.tiny's test set; mid: the 8B's layer
   ratio at width 512, 142M Llama parameters, a Whisper-base-sized encoder). Each size trains both
   stages through the real subprocess (``python -m engine finetune run --stage both --batch 1
   --grad-accum 2 --no-eval``) on 4 espeak-ng spoken + 4 typed pairs with target units;
   pairs/s is the median over the steps after the first of each stage; peak RSS is the child's
   ``ru_maxrss`` (the whole process: model, data, training state).
2. Decode cost of the unmerged LoRA: ms per answer token (text + units, the app's decode path)
   with no adapter and with the adapter the run wrote (rank 16 on every Llama linear), switched in
   and out of the same loaded model between interleaved runs; best of ``--repeats``.
3. Estimated minutes for 100 pairs x 3 epochs on an 8 GB GPU in NF4: training FLOPs per pair from
   the formula below, checked against the CPU measurements (the formula's predicted step time vs
   the measured one gives the CPU's achieved FLOP/s), divided by an assumed effective GPU rate.

   Stage 1, per pair:  6 * N_layers * T + 6 * V * H * A   (forward 2NT; backward through frozen
                       weights 2NT, no weight gradients; recompute under gradient checkpointing
                       2NT; the output head only at the answer positions)
   Stage 2, per pair:  2 * N_layers * T (the states, once) + 6 * N_unit * lambda * A
   with T = prompt + speech (300) + answer positions, A = answer tokens, lambda = 25, N_layers the
   Llama decoder layers' parameters (the embedding table is a lookup, not a matmul).

Prints the tables; ``--append-results`` appends them to bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from engine.bench.decode import run_decode  # noqa: E402
from engine.bench.report import append_section  # noqa: E402
from engine.bench.sizes import mid_spec  # noqa: E402
from engine.config import OFFICIAL_DIMS, OmniDims  # noqa: E402
from engine.model.omni import OmniModel  # noqa: E402
from engine.tiny import TinySpec, write_tiny_set  # noqa: E402
from tests.engine.finetune_fixtures import SPOKEN, TYPED, espeak, random_units  # noqa: E402

RESULTS = ROOT / "bench" / "RESULTS.md"
N_SPOKEN = N_TYPED = 4
SPEECH_POSITIONS = 300
PROMPT_TOKENS = 64  # system prefix + headers + instruction with the Llama-3 tokenizer
ANSWER_TOKENS = 40  # a spoken-style answer
LAMBDA = 25
GPU_PAIRS, GPU_EPOCHS = 100, 3
# An 8 GB card (RTX 4060 / 3060 Ti class): ~60-65 dense fp16 tensor TFLOP/s on paper. bitsandbytes
# dequantizes each NF4 matrix to bf16 before the GEMM and LoRA adds small kernels; 25 % of peak is
# what QLoRA-style training typically reaches at batch 1 with checkpointing.
GPU_PEAK_TFLOPS = 60.0
GPU_UTILIZATION = 0.25
DECODE_TOKENS = 64


def write_data(folder: Path) -> Path:
    for name, question, answer in SPOKEN[:N_SPOKEN]:
        espeak(question, folder / f"{name}.wav")
        (folder / f"{name}.txt").write_text(answer)
    rows = [
        {"id": f"t{i}", "conversations": [{"from": "human", "value": q}, {"from": "gpt", "value": a}],
         "tgt_units": random_units(i)}
        for i, (q, a) in enumerate(TYPED[:N_TYPED])
    ]  # fmt: skip
    (folder / "typed.json").write_text(json.dumps(rows))
    return folder


def train(model_dir: Path, data: Path, out: Path, steps: int, threads: int) -> dict[str, object]:
    """One ``finetune run`` child; its events and peak RSS (via a wrapper that waits for it)."""
    cli = [sys.executable, "-m", "engine", "finetune", "run", "--model", str(model_dir), "--data", str(data),
           "--out", str(out), "--stage", "both", "--steps", str(steps), "--batch", "1", "--grad-accum", "2",
           "--no-eval", "--device", "cpu", "--lr", "1e-3"]  # fmt: skip
    wrapper = (
        "import resource, subprocess, sys; r = subprocess.run(sys.argv[1:]); "
        "print('RUSAGE', resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss); sys.exit(r.returncode)"
    )
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "OMNITALK_HOME": str(out.parent / "home")}
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", wrapper, *cli], capture_output=True, text=True, env=env, cwd=ROOT)
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(done.stderr[-3000:])
    lines = done.stdout.splitlines()
    events = [json.loads(line) for line in lines if line.startswith("{")]
    peak_kb = int(next(line for line in lines if line.startswith("RUSAGE")).split()[1])
    rates: dict[int, float] = {}
    for stage in (1, 2):
        steps_seen = [e for e in events if e["event"] == "step" and e["stage"] == stage]
        rates[stage] = statistics.median(e["samples_per_s"] for e in steps_seen[1:] or steps_seen)
    return {"rates": rates, "peak_mb": peak_kb * 1024 / 1e6, "wall_s": wall, "events": events}


def layer_params(dims: OmniDims) -> int:
    llm = dims.llm
    return llm.n_params - llm.vocab_size * llm.hidden_size * (1 if llm.tie_word_embeddings else 2) - llm.hidden_size


def stage1_flops(dims: OmniDims, spoken: bool) -> float:
    question = SPEECH_POSITIONS if spoken else 12
    head = 6.0 * dims.llm.vocab_size * dims.llm.hidden_size * ANSWER_TOKENS
    return 6.0 * layer_params(dims) * (PROMPT_TOKENS + question + ANSWER_TOKENS) + head


def stage2_flops(dims: OmniDims) -> float:
    states = 2.0 * layer_params(dims) * (PROMPT_TOKENS + SPEECH_POSITIONS + ANSWER_TOKENS)
    return states + 6.0 * dims.unit_decoder.n_params * LAMBDA * ANSWER_TOKENS


def decode_cost(model_dir: Path, adapter: Path, quant: str, threads: int, repeats: int) -> tuple[float, float, float]:
    """(best ms/token without, best with the adapter, median of the per-repeat ratios).

    One loaded model; each repeat times both, in alternating order, right after each other, so a
    shared machine's slow phases hit both sides of a ratio alike.
    """
    torch.set_num_threads(threads)
    model = OmniModel.load(model_dir, device="cpu", quant=quant)
    run_decode(model, DECODE_TOKENS, 1, modes=("units",))  # warm caches and bnb's CPU repacking
    plain, tuned = [], []
    for i in range(repeats):
        for with_adapter in (False, True) if i % 2 == 0 else (True, False):
            model.use_adapter(adapter if with_adapter else None)
            seconds = run_decode(model, DECODE_TOKENS, 1, modes=("units",)).per_token_s["units"]
            (tuned if with_adapter else plain).append(seconds)
    ratios = [t / p for p, t in zip(plain, tuned, strict=True)]
    return min(plain) * 1e3, min(tuned) * 1e3, statistics.median(ratios)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="tiny,mid")
    parser.add_argument("--steps", type=int, default=6, help="optimizer steps per stage (2 pairs each)")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--append-results", action="store_true")
    args = parser.parse_args()
    sizes = args.sizes.split(",")
    train_rows, decode_rows, flops_check = [], [], []
    with tempfile.TemporaryDirectory(prefix="omni-ft-bench-") as tmp:
        root = Path(tmp)
        data = write_data(root / "data")
        for size in sizes:
            spec = TinySpec() if size == "tiny" else mid_spec()
            paths = write_tiny_set(root / size, seed=0, spec=spec, vocoder=False)
            model = OmniModel.load(paths.omni, device="cpu", quant="fp32")
            dims = model.dims
            del model
            result = train(paths.omni, data, root / "adapters" / size, args.steps, args.threads)
            rates = result["rates"]
            train_rows.append(
                f"| {size} | {dims.llm.n_params / 1e6:.1f}M + {dims.unit_decoder.n_params / 1e6:.1f}M | "
                f"{rates[1]:.2f} | {rates[2]:.2f} | {result['peak_mb']:.0f} | {result['wall_s']:.0f} |"  # type: ignore[index]
            )
            mean_flops = (stage1_flops(dims, True) + stage1_flops(dims, False)) / 2
            flops_check.append((size, mean_flops * rates[1] / 1e9))  # type: ignore[index]
            for quant in ("fp32", "nf4") if size == "tiny" else ("fp32",):
                base_ms, lora_ms, ratio = decode_cost(
                    paths.omni, root / "adapters" / size, quant, args.threads, args.repeats
                )
                decode_rows.append(f"| {size} | {quant} | {base_ms:.1f} | {lora_ms:.1f} | {ratio:.2f}x |")
    gpu_rate = GPU_PEAK_TFLOPS * GPU_UTILIZATION * 1e12
    per_pair_1 = (stage1_flops(OFFICIAL_DIMS, True) + stage1_flops(OFFICIAL_DIMS, False)) / 2
    minutes_1 = GPU_PAIRS * GPU_EPOCHS * per_pair_1 / gpu_rate / 60
    minutes_2 = GPU_PAIRS * GPU_EPOCHS * stage2_flops(OFFICIAL_DIMS) / gpu_rate / 60
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    lines = [
        f"Training on CPU (fp32 base, LoRA rank 16 + speech adapter; stage 2: unit decoder in full), "
        f"{args.threads} thread(s), {args.steps} steps per stage of 2 pairs ({N_SPOKEN} spoken + {N_TYPED} typed):",
        "",
        "| size | LLM + unit decoder params | stage 1 pairs/s | stage 2 pairs/s | peak RSS (MB) | run wall s |",
        "|---|---|---|---|---|---|",
        *train_rows,
        "",
        "Achieved CPU rate implied by the stage-1 formula (6 N T per pair, half spoken half typed): "
        + ", ".join(f"{size} {gflops:.1f} GFLOP/s" for size, gflops in flops_check)
        + ". The tiny model is all overhead (Python, small kernels); the mid model's figure is the CPU's "
        "real rate for this workload.",
        "",
        f"Decode with the unmerged LoRA (text + units, {DECODE_TOKENS}-token answers; best of {args.repeats}, "
        "cost = median of the paired ratios):",
        "",
        "| size | base precision | ms / token, no adapter | ms / token, with adapter | cost (with / without) |",
        "|---|---|---|---|---|",
        *decode_rows,
        "",
        f"Estimate, 8 GB GPU in NF4 (not measured: no GPU here): {GPU_PAIRS} pairs x {GPU_EPOCHS} epochs, "
        f"half spoken: stage 1 {per_pair_1 / 1e12:.1f} TFLOP per pair, stage 2 "
        f"{stage2_flops(OFFICIAL_DIMS) / 1e12:.1f} TFLOP per pair, at {GPU_PEAK_TFLOPS * GPU_UTILIZATION:.0f} "
        f"effective TFLOP/s ({GPU_UTILIZATION:.0%} of ~{GPU_PEAK_TFLOPS:.0f}): stage 1 about {minutes_1:.0f} min, "
        f"stage 2 about {minutes_2:.0f} min, {minutes_1 + minutes_2:.0f} min in all (plus loading, unit "
        f"extraction and evaluation). Memory at batch 1, rank 16, checkpointing: see tests/engine/"
        f"test_finetune_plan.py (estimate_training_bytes, under 8 GB).",
        "",
        f"Machine load average (1 min) at the end: {load:.1f}.",
    ]
    table = "\n".join(lines)
    print(table)
    if args.append_results:
        command = "python bench/bench_finetune.py " + " ".join(sys.argv[1:])
        cpu = platform.processor() or platform.machine()
        append_section(
            RESULTS,
            f"\n## Fine-tuning: CPU training speed and memory, LoRA decode cost, GPU estimate "
            f"(bench/bench_finetune.py)\n\n"
            f"- Device: cpu (host {cpu}, {os.cpu_count()} cores), torch {torch.__version__}; no GPU\n"
            f"- Date: {datetime.date.today().isoformat()}\n- Command: `{command}`\n\n{table}\n",
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
