"""The checks of ``python -m engine gpu-check`` (``gpu_check.py`` runs them and writes the report).

Each check takes the shared ``CheckContext`` and returns ``(status, note, details)``; details go to
the JSON output and the report's tables. Everything runs on ``ctx.device``; on a CPU (the dry run
the test suite does) shapes and sets are small and GPU-only checks say SKIP.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from engine.bench.report import REPO_ROOT, versions
from engine.config import DecodeOptions, QuantMode

PASS, FAIL, WARN, SKIP = "PASS", "FAIL", "WARN", "SKIP"
CheckOutcome = tuple[str, str, dict[str, Any]]
# The 8B's linear shapes (out, in): Llama MLP up/down, the lm_head, Whisper's MLP, the unit decoder's MLP.
CUDA_LAYER_SHAPES: tuple[tuple[str, tuple[int, int]], ...] = (
    ("nf4", (14336, 4096)),
    ("nf4", (4096, 14336)),
    ("int8", (128256, 4096)),
    ("int8", (5120, 1280)),
)
CPU_LAYER_SHAPES: tuple[tuple[str, tuple[int, int]], ...] = (("nf4", (256, 128)), ("int8", (512, 128)))
ROWS = (1, 25, 300)  # one token, one token's unit-decoder frames, a speech span
MAX_REL_ERROR = {"nf4": 0.15, "int8": 0.03}
UNIT_SHAPE = (11008, 4096)  # the unit decoder's MLP: 25 rows per token
TIMING_REPEATS = 50
OOM_CAP_BYTES = 3_000_000_000
CHILD_TIMEOUT_S = 300
MIN_COS = {"nf4": 0.9, "int8": 0.9}  # logits vs CPU fp32; float modes: 0.98
EMBED_MIN_COS = 0.98
PARTS_OK_ALLOCATED = 0.02  # bitsandbytes' allocation may exceed the formula by this share


@dataclass(slots=True)
class CheckContext:
    device: str  # "cuda" | "cpu"
    work: Path
    layers: int
    started: float = field(default_factory=time.perf_counter)
    budget_s: float = 450.0
    shared: dict[str, Any] = field(default_factory=dict)  # sets written by one check for the next

    @property
    def cuda(self) -> bool:
        return self.device == "cuda"

    def left_s(self) -> float:
        return self.budget_s - (time.perf_counter() - self.started)


def vowel(seconds: float, f0: float = 140.0) -> np.ndarray:
    t = np.arange(int(16_000 * seconds)) / 16_000
    wave = sum(np.sin(2 * np.pi * f0 * k * t) / k for k in range(1, 8))
    return (0.1 * (1 - np.cos(2 * np.pi * t / t[-1])) * wave).astype(np.float32)


def cos(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(torch.nn.functional.cosine_similarity(a.float().flatten().cpu(), b.float().flatten().cpu(), dim=0))


# ----------------------------------------------------------------------------------- environment


def environment(ctx: CheckContext) -> CheckOutcome:
    import onnxruntime
    import transformers

    info: dict[str, Any] = {
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "torch_cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
        "transformers": transformers.__version__,
        "onnxruntime": onnxruntime.__version__,
        "onnxruntime_providers": onnxruntime.get_available_providers(),
        "onnxruntime_cuda": getattr(onnxruntime, "cuda_version", None),
        "CUDA_DEVICE_ORDER": os.environ.get("CUDA_DEVICE_ORDER"),
        "versions": versions(),
    }
    try:
        import bitsandbytes
        import bitsandbytes.cextension as cext

        info |= {"bitsandbytes": bitsandbytes.__version__, "bitsandbytes_backend": getattr(cext, "BNB_BACKEND", "?")}
    except ImportError:
        info["bitsandbytes"] = None
    from engine.gpu import list_gpus

    info["gpus_nvml"] = [f"{g.index}: {g.name}, {g.free_bytes / 1e9:.1f} of {g.total_bytes / 1e9:.1f} GB free"
                         for g in list_gpus()]
    info["driver"] = _driver_version()
    if not ctx.cuda:
        return PASS, "CPU dry run", info
    if not torch.cuda.is_available():
        return FAIL, "torch.cuda.is_available() is False: a CPU build of torch or a driver too old for it", info
    from engine.model.quant import bf16_native, make_plan, resolve_device

    dev = resolve_device("cuda")
    props = torch.cuda.get_device_properties(dev)
    capability = (props.major, props.minor)
    info |= {
        "gpu": props.name,
        "capability": f"{props.major}.{props.minor}",
        "vram_gb": round(props.total_memory / 1e9, 1),
        "bf16_native": bf16_native(capability),
        "bf16_emulation_counted": torch.cuda.is_bf16_supported(),
        "nf4_compute": make_plan("nf4", dev).parts.compute if info["bitsandbytes"] else None,
    }
    note = (
        f"{props.name} (cc {info['capability']}, {info['vram_gb']} GB), driver {info['driver']}, torch "
        f"{torch.__version__} CUDA {torch.version.cuda}, bitsandbytes {info['bitsandbytes']} "
        f"({info.get('bitsandbytes_backend')}), onnxruntime {onnxruntime.__version__}; nf4 computes in "
        f"{info['nf4_compute']}"
    )
    if info["bitsandbytes"] is None or str(info.get("bitsandbytes_backend")).lower() not in ("cuda", "rocm"):
        return FAIL, note + "; bitsandbytes has no CUDA backend", info
    return PASS, note, info


def _driver_version() -> str | None:
    try:
        import pynvml

        pynvml.nvmlInit()
        try:
            version = pynvml.nvmlSystemGetDriverVersion()
        finally:
            pynvml.nvmlShutdown()
        return version.decode() if isinstance(version, bytes) else str(version)
    except Exception:  # no package, no driver: the report says unknown
        return None


# ----------------------------------------------------------------------------- bitsandbytes layers


def bitsandbytes_layers(ctx: CheckContext) -> CheckOutcome:
    """Our own quantized_linear/assign_tensor at the 8B's shapes: error, dtype, memory, and timing."""
    from torch import nn

    from engine.model.precision import weight_bytes
    from engine.model.quant import assign_tensor, make_plan, quantized_linear, resolve_device

    dev = resolve_device(ctx.device)
    notes, bad, errors = [], [], {}
    for kind, (n_out, n_in) in CUDA_LAYER_SHAPES if ctx.cuda else CPU_LAYER_SHAPES:
        plan = make_plan(kind, dev)
        with torch.device("meta"):
            linear = nn.Linear(n_in, n_out, bias=False)
        layer = quantized_linear(linear, plan, kind)
        weight = (torch.randn(n_out, n_in, generator=torch.Generator().manual_seed(0)) / n_in**0.5).half()
        before = torch.cuda.memory_allocated(dev) if ctx.cuda else 0
        assign_tensor(layer, "weight", weight, dev, plan.compute_dtype)
        if ctx.cuda:
            used, want = torch.cuda.memory_allocated(dev) - before, weight_bytes(n_out * n_in, kind, n_out)
            if not want * 0.9 < used < want * (1 + PARTS_OK_ALLOCATED) + 2**20:
                bad.append(f"{kind} {n_out}x{n_in}: {used} bytes on the GPU, expected ~{want}")
        reference = weight.to(dev).float()
        for rows in ROWS:
            x = torch.randn(rows, n_in, device=dev, dtype=plan.compute_dtype)
            with torch.inference_mode():
                y = layer(x)
            want_y = x.float() @ reference.t()
            rel = float((y.float() - want_y).norm() / want_y.norm())
            errors[f"{kind} {n_out}x{n_in} M={rows}"] = round(rel, 4)
            if y.dtype != plan.compute_dtype or y.shape != (rows, n_out) or not bool(torch.isfinite(y).all()):
                bad.append(f"{kind} {n_out}x{n_in} M={rows}: {y.dtype} {tuple(y.shape)}")
            elif rel > MAX_REL_ERROR[kind]:
                bad.append(f"{kind} {n_out}x{n_in} M={rows}: relative error {rel:.3f}")
        notes.append(f"{kind} {n_out}x{n_in} max error {max(v for k, v in errors.items() if k.startswith(kind)):.3f}")
        del layer, reference
    details: dict[str, Any] = {"relative_error": errors}
    if ctx.cuda:
        details["unit_decoder_shape_us"] = _time_unit_decoder_shapes(dev)
        notes.append(
            "unit-decoder MLP at M=25: "
            + ", ".join(f"{k} {v:.0f} us" for k, v in details["unit_decoder_shape_us"].items())
        )
    return (FAIL if bad else PASS), "; ".join(bad or notes), details


def _time_unit_decoder_shapes(dev: torch.device) -> dict[str, float]:
    """µs per (25 x 4096) @ (4096 x 11008) product in nf4, int8 and fp16: what the unit decoder's
    precision costs per token on this GPU (its 2 layers run 8 such products, 4 at 4096 x 4096)."""
    from torch import nn

    from engine.model.quant import assign_tensor, make_plan, quantized_linear

    n_out, n_in = UNIT_SHAPE
    weight = (torch.randn(n_out, n_in) / n_in**0.5).half()
    timings = {}
    for kind in ("nf4", "int8", "fp16"):
        plan = make_plan("nf4" if kind == "fp16" else kind, dev)
        layer: nn.Module
        if kind == "fp16":
            layer = nn.Linear(n_in, n_out, bias=False, device=dev, dtype=torch.float16)
            layer.weight.data.copy_(weight.to(dev))
        else:
            with torch.device("meta"):
                layer = quantized_linear(nn.Linear(n_in, n_out, bias=False), plan, kind)
            assign_tensor(layer, "weight", weight, dev, plan.compute_dtype)
        x = torch.randn(25, n_in, device=dev, dtype=torch.float16 if kind != "nf4" else plan.compute_dtype)
        with torch.inference_mode():
            for _ in range(5):
                layer(x)
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            for _ in range(TIMING_REPEATS):
                layer(x)
            end.record()
            end.synchronize()
        timings[kind] = start.elapsed_time(end) * 1e3 / TIMING_REPEATS
        del layer
    return timings


# --------------------------------------------------------------------- the tiny model, every precision


def tiny_precisions(ctx: CheckContext) -> CheckOutcome:
    """Every precision through the real loader and conversation on the device vs CPU fp32; on CUDA
    the captured decode graph must give the eager step's tokens."""
    from engine.model.omni import OmniModel
    from engine.model.unit_decoder import UnitStream, units_offline
    from engine.tiny import write_tiny_set

    paths = write_tiny_set(ctx.work / "tiny", 0, vocoder=True)
    ctx.shared["tiny"] = paths
    audio, decode = vowel(2.0), DecodeOptions(max_new_tokens=8)
    ref = OmniModel.load(paths.omni, paths.speech_encoder_pt, device="cpu", quant="fp32")
    ref_emb = ref.encode_speech(audio)
    ref_logits = _first_logits(ref)
    quants: tuple[QuantMode, ...] = ("nf4", "int8", "fp16", "bf16", "fp32") if ctx.cuda else ("nf4",)
    rows, bad = {}, []
    for quant in quants:
        try:
            model = OmniModel.load(paths.omni, paths.speech_encoder_pt, device=ctx.device, quant=quant)
        except Exception as exc:  # e.g. bf16 on a pre-Ampere GPU: reported, not fatal to the others
            rows[quant] = f"not loaded: {type(exc).__name__}: {exc}"
            if not (quant == "bf16" and "bf16" in str(exc)):
                bad.append(quant)
            continue
        on_device = all(
            t.device.type == ctx.device
            for m in (model.encoder, model.adapter, model.unit_decoder)
            for t in (*m.parameters(), *m.buffers())
        )
        e_cos, l_cos = cos(model.encode_speech(audio), ref_emb), cos(_first_logits(model), ref_logits)
        answers = _two_turns(model, audio, decode)
        graph_same = True
        if ctx.cuda and model._step is not None and model._step.graph is not None:
            eager = OmniModel.load(
                paths.omni, paths.speech_encoder_pt, device=ctx.device, quant=quant, cuda_graphs=False
            )
            graph_same = _two_turns(eager, audio, decode) == answers
            del eager
        chat = model.conversation()
        states = model.forward(model.build_embeds(chat.system_ids + chat.prompts.text_turn_ids("units")), None)[0, -12:]
        stream = UnitStream(model.unit_decoder, max_tokens=12)
        incremental = [u for i in range(states.shape[0]) for u in stream.push(states[i : i + 1])]
        units_same = incremental == units_offline(model.unit_decoder, states)
        min_cos = MIN_COS.get(quant, 0.98)
        ok = on_device and e_cos > EMBED_MIN_COS and l_cos > min_cos and graph_same and (units_same or quant != "fp32")
        rows[quant] = (
            f"embedding cos {e_cos:.4f}, logit cos {l_cos:.4f}, decode {model.decode_path}, graph == eager "
            f"{graph_same}, units incremental == offline {units_same}"
        )
        if not ok:
            bad.append(quant)
        del model, chat
    note = f"out of tolerance: {bad}" if bad else f"{len(quants)} precisions within tolerance of CPU fp32"
    return (FAIL if bad else PASS), note, {"precisions": rows}


def _two_turns(model: Any, audio: np.ndarray, decode: DecodeOptions) -> list[tuple[int, ...]]:
    """Token ids of a spoken turn and a typed follow-up in one conversation."""
    chat = model.conversation()
    spoken = list(chat.respond_speech(audio, decode=decode))[-1]
    typed = list(chat.respond_text("And then?", decode=decode))[-1]
    return [spoken.token_ids, typed.token_ids]


def _first_logits(model: Any) -> torch.Tensor:
    chat = model.conversation()
    ids = chat.system_ids + chat.prompts.text_turn_ids("Hello")
    return model.logits(model.forward(model.build_embeds(ids), None)[0, -1])


# -------------------------------------------------------------------------- the full-width set


def write_full_set(ctx: CheckContext) -> CheckOutcome:
    """The 8B's widths (Llama-3.1-8B, Whisper-large-v3, the 425M unit decoder) with ``ctx.layers``
    Llama layers, random numbers drawn on the GPU; the CPU dry run writes a tiny set instead."""
    import engine.tiny as tiny
    from engine.bench.sizes import FULL_SHARD_BYTES, FULL_SPEC, write_streamed_omni
    from engine.vocoder.checkpoint import write_official_size_vocoder, write_tiny_vocoder

    root = ctx.work / "full"
    started = time.perf_counter()
    if ctx.cuda:
        spec = replace(FULL_SPEC, n_layers=ctx.layers)
        pt = tiny.write_whisper_pt(
            root / "speech_encoder" / tiny.WHISPER_PT_NAME,
            spec.encoder,
            spec.text,
            tiny.whisper_state_dict(spec.encoder, spec.text, 0, device="cuda"),
        )
        omni = write_streamed_omni(root / "omni", spec, 0, shard_bytes=FULL_SHARD_BYTES, device="cuda")
        vocoder = write_official_size_vocoder(root / "vocoder", seed=0)
    else:
        paths = tiny.write_tiny_set(root, 0, vocoder=False)
        assert paths.speech_encoder_pt is not None
        omni, pt = paths.omni, paths.speech_encoder_pt
        vocoder = write_tiny_vocoder(root / "vocoder")
    ctx.shared["full"] = (omni, pt, vocoder)
    size = sum(f.stat().st_size for f in root.rglob("*") if f.is_file())
    what = f"{ctx.layers} Llama layers at the 8B's widths" if ctx.cuda else "tiny set (CPU dry run)"
    return PASS, f"{what}: {size / 1e9:.2f} GB in {time.perf_counter() - started:.0f} s", {"bytes": size}


def _child(ctx: CheckContext, *args: str) -> dict[str, Any]:
    from engine.bench.gpu_child import BASE_USED_ENV

    env = dict(os.environ)
    if ctx.cuda:  # what other processes (and this one) hold: the child reports only its own use
        free, total = torch.cuda.mem_get_info()
        env[BASE_USED_ENV] = str(total - free)
    out = subprocess.run(
        [sys.executable, "-m", "engine.bench.gpu_child", *args],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        env=env,
        timeout=max(30.0, min(CHILD_TIMEOUT_S, ctx.left_s())),
    )
    if out.returncode != 0:
        raise RuntimeError(out.stderr[-3000:])
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def full_load(ctx: CheckContext) -> CheckOutcome:
    from engine.model.memory import TARGET_NF4_BYTES

    omni, pt, vocoder = ctx.shared["full"]
    # The dry run loads in fp32 (bitsandbytes on a CPU is far too slow for a test) with few tokens.
    mode, extra = ("nf4", []) if ctx.cuda else ("fp32", ["--quick"])
    r = _child(ctx, mode, str(omni), str(pt), "--device", ctx.device, "--vocoder", str(vocoder), *extra)
    gb = 1e9
    ratio = r["ms_token_units"] / r["ms_token_text"]
    note = (
        f"load {r['load_s']:.1f} s; encoder {r['encoder_ms']:.1f} ms; {r['ms_token_text']:.2f} ms/token text, "
        f"{r['ms_token_units']:.2f} with units ({ratio:.2f}x); decode: {r['decode_path']}; "
        f"prefill({r['prefill_tokens']}) {r['prefill_ms']:.0f} ms"
    )
    if not ctx.cuda:
        return PASS, f"{mode}: {note} (CPU dry run: no VRAM figures)", r
    if "ms_token_text_eager" in r:
        note += f"; eager {r['ms_token_text_eager']:.2f} / {r['ms_token_units_eager']:.2f} ms/token"
    note += (
        f"; VRAM peak allocated by PyTorch {r['allocated_peak'] / gb:.2f} GB vs its part of the estimate "
        f"{(r['estimate_excl_context'] - r['estimate_parts'].get('vocoder', 0)) / gb:.2f}; "
        f"driver-level use (context, vocoder included) {r['driver_used'] / gb:.2f} GB vs estimate "
        f"{r['estimate'] / gb:.2f} and goal {TARGET_NF4_BYTES / gb:.1f}; CUDA context {r['cuda_context'] / gb:.2f} GB; "
        f"vocoder {r.get('vocoder_gpu_bytes', 0) / gb:.2f} GB on {r.get('vocoder_providers')}; reserved after "
        f"unload {r['reserved_after_unload'] / gb:.2f} GB, after release {r['reserved_after_release'] / gb:.2f} GB"
    )
    # PyTorch's allocator holds neither the vocoder (onnxruntime) nor the CUDA context.
    torch_estimate = r["estimate_excl_context"] - r["estimate_parts"].get("vocoder", 0)
    honest = r["allocated_peak"] <= torch_estimate and r["driver_used"] <= r["estimate"]
    if not honest:
        return FAIL, note + " (the estimate is too low)", r
    if ctx.layers == 32 and r["driver_used"] > TARGET_NF4_BYTES:
        return WARN, note + " (over the 6.5 GB goal)", r
    if r["reserved_after_release"] > 0:
        return WARN, note + " (memory stays reserved after the release)", r
    return PASS, note, r


def out_of_memory(ctx: CheckContext) -> CheckOutcome:
    if not ctx.cuda:
        return SKIP, "needs a GPU (torch.cuda.set_per_process_memory_fraction)", {}
    omni, pt, _ = ctx.shared["full"]
    r = _child(ctx, "nf4", str(omni), str(pt), "--device", "cuda", "--cap-bytes", str(OOM_CAP_BYTES))
    note = (
        f"{OOM_CAP_BYTES / 1e9:.0f} GB cap -> {r['outcome']} ({r.get('kind')}): {r.get('message', '')[:160]}; "
        f"{r['allocated_after'] / 1e6:.0f} MB still allocated after the failure"
    )
    ok = r.get("kind") == "not_enough_memory" and r["allocated_after"] < 64e6
    return (PASS if ok else FAIL), note, r


# -------------------------------------------------------------------------------------- the vocoder


def vocoder(ctx: CheckContext) -> CheckOutcome:
    """The vocoder on PyTorch (device vs CPU) and onnxruntime: which provider really runs it."""
    import onnxruntime

    from engine.vocoder.api import load_vocoder_runtime
    from engine.vocoder.checkpoint import load_torch_vocoder
    from engine.vocoder.runtime_onnx import CUDA_PROVIDER
    from engine.vocoder.runtime_torch import TorchVocoderRuntime

    _, _, vocoder_dir = ctx.shared["full"]
    n_units = 100 if ctx.cuda else 20
    units = np.random.default_rng(0).integers(0, 1000, n_units)
    reference = TorchVocoderRuntime(load_torch_vocoder(vocoder_dir), "cpu").synthesize(units)
    on_device = TorchVocoderRuntime(load_torch_vocoder(vocoder_dir), ctx.device)
    on_device.synthesize(units)
    started = time.perf_counter()
    wav = on_device.synthesize(units)
    torch_ms = (time.perf_counter() - started) * 1e3
    on_device.close()
    snr = _snr_db(reference, wav)
    free_before = torch.cuda.mem_get_info()[0] if ctx.cuda else 0
    ort = load_vocoder_runtime(vocoder_dir, "auto" if ctx.cuda else "cpu", backend="onnx")
    gpu_bytes = free_before - torch.cuda.mem_get_info()[0] if ctx.cuda else 0
    ort.synthesize(units)
    started = time.perf_counter()
    ort_wav = ort.synthesize(units)
    ort_ms = (time.perf_counter() - started) * 1e3
    ort_snr = _snr_db(reference, ort_wav)
    details = {
        "torch_ms": torch_ms, "torch_snr_db": snr, "onnx_ms": ort_ms, "onnx_snr_db": ort_snr,
        "onnx_providers": list(ort.providers), "onnx_reason": getattr(ort, "cpu_reason", None),
        "onnx_gpu_bytes": gpu_bytes, "available_providers": onnxruntime.get_available_providers(),
    }
    ort.close()
    note = (
        f"torch {ctx.device} {torch_ms:.0f} ms for {n_units} units (SNR vs CPU {snr:.0f} dB); onnxruntime "
        f"{ort_ms:.0f} ms on {list(details['onnx_providers'])} (SNR {ort_snr:.0f} dB)"
    )
    if ctx.cuda:
        note += f", {gpu_bytes / 1e6:.0f} MB of GPU memory"
    if wav.shape != reference.shape or snr < 30 or ort_snr < 30:
        return FAIL, note, details
    if ctx.cuda and CUDA_PROVIDER not in details["onnx_providers"]:
        return WARN, note + f"; CUDA provider not used: {details['onnx_reason']}", details
    return PASS, note, details


def _snr_db(reference: np.ndarray, other: np.ndarray) -> float:
    if other.shape != reference.shape:
        return float("-inf")
    noise = max(float(np.sum((reference - other) ** 2)), 1e-30)
    return float(10 * np.log10(float(np.sum(reference**2)) / noise))


# -------------------------------------------------------------------------------------- fidelity


def fidelity(ctx: CheckContext) -> CheckOutcome:
    """``engine.bench.fidelity`` on the device: each precision variant vs the fp16 reference."""
    from engine.bench.fidelity import VARIANTS, fidelity_table, measure
    from engine.bench.questions import make_questions
    from engine.bench.sizes import spec_for
    from engine.tiny import write_tiny_set

    size = "mid" if ctx.cuda else "tiny"
    paths = write_tiny_set(ctx.work / f"fidelity-{size}", 0, spec=spec_for(size), vocoder=False)
    questions, note = make_questions(ctx.work / "questions", 5 if ctx.cuda else 1)
    variants = VARIANTS if ctx.cuda else (VARIANTS[0], VARIANTS[3])
    reference, rows = measure(
        paths.omni, paths.speech_encoder_pt, questions, device=ctx.device, n_tokens=16 if ctx.cuda else 4,
        variants=variants,
    )
    table = fidelity_table(rows).markdown()
    failed = [row.name for row in rows if row.error is not None]
    details = {"reference": reference, "size": size, "questions": note, "table": table}
    return (WARN if failed else PASS), f"{size} set vs {reference}; {len(rows)} variants" + (
        f"; could not run: {failed}" if failed else ""
    ), details


# ---------------------------------------------------------------------------------- the engine bench


def engine_bench(ctx: CheckContext) -> CheckOutcome:
    """``python -m engine bench --size mid --quick`` on the device: first audio through the whole engine."""
    if not ctx.cuda:
        return SKIP, "GPU only here (tests/engine/test_bench.py runs the CPU bench)", {}
    out = subprocess.run(
        [sys.executable, "-m", "engine", "bench", "--device", "cuda", "--size", "mid", "--quick", "--no-append",
         "--workdir", str(ctx.work / "bench")],
        capture_output=True, text=True, cwd=REPO_ROOT, timeout=max(30.0, ctx.left_s() - 5),
    )
    table = first_audio_table(out.stdout)
    details = {"returncode": out.returncode, "first_audio_table": table, "stderr_tail": out.stderr[-2000:]}
    if out.returncode != 0:
        last = out.stderr.strip().splitlines()[-1] if out.stderr.strip() else ""
        return FAIL, f"rc={out.returncode}: {last}", details
    return PASS, "first audio per chunking: see the table below", details


def first_audio_table(section: str) -> str:
    """The first Markdown table under the bench section's "### 1." heading ("" when absent)."""
    lines = section.splitlines()
    try:
        start = next(i for i, line in enumerate(lines) if line.startswith("### 1."))
    except StopIteration:
        return ""
    table: list[str] = []
    for line in lines[start + 1 :]:
        if line.startswith("|"):
            table.append(line)
        elif table:
            break
    return "\n".join(table)

