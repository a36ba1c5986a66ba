"""``python -m engine gpu-check``: everything that needs a GPU, measured in one run of a few minutes.

    python -m engine gpu-check [--device cuda|cpu] [--layers 32] [--budget-s 420] [--json FILE]
                               [--out bench/RESULTS.md] [--no-append] [--workdir DIR]

``bench/gpu_check.sh`` wraps it for a GPU machine without internet (it installs missing packages
from wheels in ``.whl/`` first; bench/README.md says how to fill that folder). The checks, in
order, each within what is left of the time budget (a check that would not fit says SKIP):

1. environment: GPU, compute capability, driver, torch/CUDA/cuDNN, bitsandbytes and its backend,
   onnxruntime and its providers, the compute dtype the nf4 plan picks for this GPU;
2. bitsandbytes layers built by our loader's code at the 8B's shapes (nf4, int8): error, dtype,
   bytes on the GPU, and the unit decoder's 25-row product timed in nf4 / int8 / fp16;
3. the tiny model in every precision on the GPU against the CPU in fp32, and the captured decode
   graph against the eager step (same tokens);
4. a full-width random set (32 layers at the 8B's widths, Whisper-large-v3, the 425M unit
   decoder, the official-size vocoder), written on the GPU;
5. that set in nf4 in a fresh process (``gpu_child``): load time, encoder ms, ms/token text-only
   and with units (graph and eager), a 2000-token prefill, peak VRAM of the whole stack (vocoder
   included) against the estimate and the 6.5 GB goal, what an unload leaves reserved;
6. a 3 GB memory cap, which the pre-flight cannot see: loading must fail with NotEnoughMemory
   and leave nothing allocated;
7. the vocoder on PyTorch (GPU vs CPU) and onnxruntime, whose provider must really be CUDA;
8. the precision variants' fidelity on the GPU (``engine.bench.fidelity``, fp16 reference);
9. ``python -m engine bench --size mid --quick`` on the GPU: first audio through the whole engine.

A dated section with every result goes to ``bench/RESULTS.md``; ``--json`` keeps all details. The
exit status is 1 when a check failed. ``--device cpu`` is a dry run with small sets (the test
suite runs it, so the script cannot rot); GPU-only checks say SKIP there.
"""

from __future__ import annotations

import argparse
import datetime
import gc
import json
import os
import shlex
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from engine.bench import gpu_probes as probes
from engine.bench.report import Table, append_section, git_revision
from engine.gpu import error_summary, release_cuda_cache
from engine.paths import HOME_ENV

DEFAULT_BUDGET_S = 420.0  # the whole run stays within 8 minutes with start-up and the wrapper's installs
DEFAULT_LAYERS = 32


@dataclass(frozen=True, slots=True)
class Check:
    name: str
    run: Callable[[probes.CheckContext], probes.CheckOutcome]
    need_s: float  # skipped when less time than this is left (GPU estimate; the dry run is faster)
    needs: str | None = None  # a result another check leaves in ctx.shared


CHECKS = (
    Check("environment", probes.environment, 0),
    Check("bitsandbytes layers at the 8B's shapes", probes.bitsandbytes_layers, 10),
    Check("tiny model, every precision, vs CPU fp32", probes.tiny_precisions, 20),
    Check("write the full-width set", probes.write_full_set, 90),
    Check("full-width nf4: load, speed, VRAM vs estimate", probes.full_load, 90, needs="full"),
    Check("out of memory under a 3 GB cap", probes.out_of_memory, 30, needs="full"),
    Check("vocoder: PyTorch and onnxruntime on the device", probes.vocoder, 30, needs="full"),
    Check("fidelity of the precision variants", probes.fidelity, 30),
    Check("engine bench (mid, quick): first audio", probes.engine_bench, 120),
)


@dataclass(frozen=True, slots=True)
class Result:
    name: str
    status: str
    note: str
    seconds: float
    details: dict[str, Any]


def run_checks(ctx: probes.CheckContext, checks: tuple[Check, ...] = CHECKS) -> list[Result]:
    results = []
    for check in checks:
        started = time.perf_counter()
        if check.needs is not None and check.needs not in ctx.shared:
            why = f"needs '{check.needs}', which an earlier check did not make"
            outcome: probes.CheckOutcome = (probes.SKIP, why, {})
        elif ctx.cuda and ctx.left_s() < check.need_s:
            outcome = (probes.SKIP, f"{ctx.left_s():.0f} s left of the budget, needs ~{check.need_s:.0f} s", {})
        else:
            print(f"[gpu-check {time.perf_counter() - ctx.started:5.0f} s] {check.name}", file=sys.stderr, flush=True)
            try:
                outcome = check.run(ctx)
            except Exception as exc:  # a failing check is a result; the next ones still run
                traceback.print_exc()
                outcome = (probes.FAIL, f"{type(exc).__name__}: {error_summary(exc, 400)}", {})
        status, note, details = outcome
        results.append(Result(check.name, status, note, time.perf_counter() - started, details))
        print(f"{status} {check.name}: {note}", file=sys.stderr, flush=True)
        gc.collect()
        release_cuda_cache()
    return results


def compose(ctx: probes.CheckContext, results: list[Result], command: str) -> str:
    env = next((r.details for r in results if r.name == "environment"), {})
    table = Table(["check", "result", "s", "what was measured"])
    for r in results:
        table.add(r.name, r.status, f"{r.seconds:.0f}", r.note.replace("|", "/"))
    counts = {s: sum(r.status == s for r in results) for s in (probes.PASS, probes.WARN, probes.FAIL, probes.SKIP)}
    where = env.get("gpu", "CPU (dry run)") if ctx.cuda else "CPU (dry run)"
    revision = git_revision()
    lines = [
        "",
        f"## GPU check: {where} ({datetime.date.today().isoformat()})",
        "",
        f"- Command: `{command}` (took {time.perf_counter() - ctx.started:.0f} s; budget {ctx.budget_s:.0f} s)",
        f"- Device: {where}; driver {env.get('driver')}; compute capability {env.get('capability', '-')}; "
        f"CUDA_DEVICE_ORDER={env.get('CUDA_DEVICE_ORDER')}",
        f"- Versions: {env.get('versions')}; CUDA {env.get('torch_cuda')}, cuDNN {env.get('cudnn')}; bitsandbytes "
        f"backend {env.get('bitsandbytes_backend')}; onnxruntime providers {env.get('onnxruntime_providers')}"
        + (f"; git {revision}" if revision else ""),
        f"- Result: {counts['PASS']} passed, {counts['WARN']} warnings, {counts['FAIL']} failed, "
        f"{counts['SKIP']} skipped",
        "",
        table.markdown(),
        "",
    ]
    lines += _detail_tables(results)
    return "\n".join(lines)


def _detail_tables(results: list[Result]) -> list[str]:
    by_name = {r.name: r for r in results}
    out: list[str] = []
    full = by_name.get("full-width nf4: load, speed, VRAM vs estimate")
    if full is not None and "allocated_peak" in full.details:
        d, gb = full.details, 1e9
        memory = Table(["what", "GB"])
        for name, value in d["estimate_parts"].items():
            memory.add(f"estimate: {name}", f"{value / gb:.2f}")
        memory.add("estimate, total", f"{d['estimate'] / gb:.2f}")
        memory.add("measured: peak allocated by PyTorch (no context, no vocoder)", f"{d['allocated_peak'] / gb:.2f}")
        memory.add("measured: peak reserved by PyTorch", f"{d['reserved_peak'] / gb:.2f}")
        memory.add("measured: the vocoder (onnxruntime)", f"{d.get('vocoder_gpu_bytes', 0) / gb:.2f}")
        memory.add("measured: CUDA context", f"{d['cuda_context'] / gb:.2f}")
        memory.add("measured: this process on the GPU (driver), all of the above", f"{d['driver_used'] / gb:.2f}")
        memory.add("reserved after unloading, before / after release_cuda_cache", (
            f"{d['reserved_after_unload'] / gb:.2f} / {d['reserved_after_release'] / gb:.2f}"
        ))
        speed = Table(["decode", "ms / token", "vs text only"])
        speed.add("text only (CUDA graph)", f"{d['ms_token_text']:.2f}", "1.00x")
        ratio = d["ms_token_units"] / d["ms_token_text"]
        speed.add("text + units (CUDA graph)", f"{d['ms_token_units']:.2f}", f"{ratio:.2f}x")
        if "ms_token_text_eager" in d:
            speed.add("text only, eager", f"{d['ms_token_text_eager']:.2f}", "-")
            speed.add("text + units, eager", f"{d['ms_token_units_eager']:.2f}", "-")
        out += [
            f"Full-width nf4 stack in a fresh process (2048-token context; {d['prefill_tokens']}-token prefill plus "
            f"the unit decoder's cache for {d['unit_cache_tokens']} answer tokens; vocoder on the same GPU):",
            "",
            memory.markdown(),
            "",
            speed.markdown(),
            "",
            f"Encoder {d['encoder_ms']:.1f} ms; prefill of {d['prefill_tokens']} tokens {d['prefill_ms']:.0f} ms; load "
            f"{d['load_s']:.1f} s; decode path: {d['decode_path']}; spoken turn: {d['turn']}.",
            "",
        ]
    layers = by_name.get("bitsandbytes layers at the 8B's shapes")
    if layers is not None and layers.details.get("unit_decoder_shape_us"):
        timing = Table(["unit decoder MLP product, 25 x 4096 @ 4096 x 11008", "µs"])
        for kind, us in layers.details["unit_decoder_shape_us"].items():
            timing.add(kind, f"{us:.0f}")
        out += [timing.markdown(), ""]
    fid = by_name.get("fidelity of the precision variants")
    if fid is not None and fid.details.get("table"):
        out += [
            f"Fidelity ({fid.details['size']} set, reference {fid.details['reference']}; {fid.details['questions']}):",
            "",
            fid.details["table"],
            "",
        ]
    bench = by_name.get("engine bench (mid, quick): first audio")
    if bench is not None and bench.details.get("first_audio_table"):
        out += ["First audio after key release, `python -m engine bench --size mid --quick` (ms):", "",
                bench.details["first_audio_table"], ""]
    return out


def run_gpu_check(args: argparse.Namespace) -> int:
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    typed = "gpu-check" in sys.argv
    command = "python -m engine " + (shlex.join(sys.argv[1:]) if typed else "gpu-check")
    home_before = os.environ.get(HOME_ENV)
    with tempfile.TemporaryDirectory(prefix="omnitalk-gpu-check-", dir=args.workdir) as tmp:
        ctx = probes.CheckContext(device=device, work=Path(tmp), layers=args.layers, budget_s=args.budget_s)
        os.environ[HOME_ENV] = str(Path(tmp) / "home")  # ONNX exports stay out of the user's cache
        try:
            results = run_checks(ctx)
        finally:
            if home_before is None:
                os.environ.pop(HOME_ENV, None)
            else:
                os.environ[HOME_ENV] = home_before
        section = compose(ctx, results, command)
    print(section)
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(
            json.dumps([{"name": r.name, "status": r.status, "note": r.note, "seconds": r.seconds,
                         "details": r.details} for r in results], indent=1, default=str),
            encoding="utf-8",
        )
    if not args.no_append:
        append_section(args.out, section)
        print(f"appended to {args.out}")
    return 1 if any(r.status == probes.FAIL for r in results) else 0
