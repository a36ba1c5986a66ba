"""One fresh process of the GPU check: load a full-width set, measure it, print one JSON line.

    python -m engine.bench.gpu_child MODE OMNI_DIR SPEECH_ENCODER_PT [--device cuda] [--vocoder DIR]
        [--cap-bytes N] [--quick]

``MODE`` is a quantization. Measured, in this order (a fresh process, so no earlier allocation
or cached block counts):

- load time; peak allocated VRAM after loading; the pre-flight estimate (with and without the
  CUDA context) and what the driver reports this process uses (``cudaMemGetInfo``, context
  included, minus what other processes held at start: ``BASE_USED`` from the parent);
- with ``--vocoder``: the vocoder loaded on the same GPU as the app does (onnxruntime, CUDA
  provider), its providers and the GPU memory it took;
- the encoder (second pass, timed with the GPU synchronised), one spoken turn of 32 tokens;
- ms per token text-only and with units, through the captured CUDA graph and eagerly;
- a 2000-token prefill and the unit decoder's cache for 512 answer tokens (the estimate's worst
  case), then the peak VRAM of the whole run against the estimate and the 6.5 GB goal;
- what an unload leaves reserved before and after ``release_cuda_cache``.

With ``--cap-bytes`` it only caps this process's share of the GPU at that many bytes
(``torch.cuda.set_per_process_memory_fraction``, which the pre-flight cannot see) and loads:
the load must fail with ``NotEnoughMemory`` and leave nothing allocated.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

PREFILL_TOKENS = 2000
UNIT_CACHE_TOKENS = 512
TURN_TOKENS = 32
DECODE_TOKENS = 32
QUICK_TOKENS = 4  # --quick (the CPU dry run): every step runs, on a few tokens
QUICK_PREFILL_TOKENS = 200
AUDIO_S = 3.0
BASE_USED_ENV = "OMNITALK_GPU_BASE_USED"


def _vowel(seconds: float) -> Any:
    import numpy as np

    t = np.arange(int(16_000 * seconds)) / 16_000
    wave = sum(np.sin(2 * np.pi * 140 * k * t) / k for k in range(1, 8))
    return (0.1 * (1 - np.cos(2 * np.pi * t / t[-1])) * wave).astype(np.float32)


def _oom(args: argparse.Namespace) -> dict[str, Any]:
    import torch

    from engine.errors import EngineError
    from engine.model.omni import OmniModel

    torch.cuda.init()
    _, total = torch.cuda.mem_get_info()
    torch.cuda.set_per_process_memory_fraction(min(1.0, args.cap_bytes / total))
    result: dict[str, Any] = {"cap_bytes": args.cap_bytes}
    try:
        OmniModel.load(args.omni, args.speech_encoder, device=args.device, quant=args.mode)
        result["outcome"] = "loaded (the cap was not reached)"
    except EngineError as exc:
        result |= {"outcome": type(exc).__name__, "kind": exc.kind, "message": exc.message, "fix": exc.fix}
    except Exception as exc:  # the check reports what escaped instead of NotEnoughMemory
        result |= {"outcome": f"{type(exc).__module__}.{type(exc).__name__}", "message": str(exc)[:300]}
    gc.collect()
    result["allocated_after"] = torch.cuda.memory_allocated()
    result["reserved_after"] = torch.cuda.memory_reserved()
    return result


def _measure(args: argparse.Namespace) -> dict[str, Any]:
    import torch

    from engine.bench.decode import prompt_ids, time_decode
    from engine.config import DecodeOptions
    from engine.gpu import release_cuda_cache
    from engine.model.omni import OmniModel
    from engine.model.unit_decoder import UnitStream

    cuda = args.device.startswith("cuda")
    turn_tokens, decode_tokens = (QUICK_TOKENS, QUICK_TOKENS) if args.quick else (TURN_TOKENS, DECODE_TOKENS)
    prefill_tokens = QUICK_PREFILL_TOKENS if args.quick else PREFILL_TOKENS
    unit_tokens = QUICK_TOKENS if args.quick else UNIT_CACHE_TOKENS
    r: dict[str, Any] = {"mode": args.mode, "prefill_tokens": prefill_tokens, "unit_cache_tokens": unit_tokens}
    if cuda:
        torch.cuda.init()
        free0, total = torch.cuda.mem_get_info()
        base = int(os.environ.get(BASE_USED_ENV, "0"))
        r["cuda_context"] = total - free0 - base
        torch.cuda.reset_peak_memory_stats()
    started = time.perf_counter()
    model = OmniModel.load(
        args.omni, args.speech_encoder, device=args.device, quant=args.mode, vocoder_on_device=args.vocoder is not None
    )
    r["load_s"] = time.perf_counter() - started
    est = model.memory_estimate
    r |= {
        "estimate": est.total_bytes,
        "estimate_excl_context": est.bytes_excluding_context(),
        "estimate_parts": dict(est.parts),
        "compute_dtype": str(model.plan.compute_dtype).removeprefix("torch."),
        "decode_path": model.decode_path,
        "parameters_bytes": sum(
            t.numel() * t.element_size()
            for m in (model.llm, model.encoder, model.adapter, model.unit_decoder)
            for t in (*m.parameters(), *m.buffers())
            if t.device.type != "cpu"
        ),
    }
    if cuda:
        model.synchronize()
        r["allocated_peak_load"] = torch.cuda.max_memory_allocated()
    vocoder = None
    if args.vocoder is not None:
        from engine.vocoder.api import load_vocoder_runtime

        before = torch.cuda.mem_get_info()[0] if cuda else 0
        started = time.perf_counter()
        vocoder = load_vocoder_runtime(
            args.vocoder, "auto" if cuda else "cpu", backend="onnx", gpu_index=model.device.index or 0
        )
        r["vocoder_load_s"] = time.perf_counter() - started
        r["vocoder_providers"] = list(vocoder.providers)
        r["vocoder_device"] = vocoder.device
        if cuda:
            r["vocoder_gpu_bytes"] = before - torch.cuda.mem_get_info()[0]
    audio = _vowel(AUDIO_S)
    for _ in range(2):  # the second pass is timed
        mel = model.speech_features(audio)
        model.synchronize()
        started = time.perf_counter()
        emb = model.encode_mel(mel)
        model.synchronize()
        r["encoder_ms"] = (time.perf_counter() - started) * 1e3
    assert emb.shape[0] == model.dims.n_speech_embeddings and bool(torch.isfinite(emb).all())
    chat = model.conversation()
    done = list(chat.respond_speech(audio, decode=DecodeOptions(max_new_tokens=turn_tokens)))[-1]
    r["turn"] = {"tokens": done.n_tokens, "units": done.n_units, "ms": done.timings.as_dict()}  # type: ignore[union-attr]
    if vocoder is not None and done.units:  # type: ignore[union-attr]
        wav = vocoder.synthesize(list(done.units))  # type: ignore[union-attr]
        r["turn"]["audio_s"] = round(wav.size / 16_000, 2)
    time_decode(model, QUICK_TOKENS, "units")  # warm-up
    r["ms_token_text"] = time_decode(model, decode_tokens, "text")[0] * 1e3
    per_token, unit_s = time_decode(model, decode_tokens, "units")
    r["ms_token_units"], r["ms_token_unit_decoder"] = per_token * 1e3, unit_s * 1e3
    step = model._step
    if step is not None and step.graph is not None:  # the same loop without the graph
        graph, step.graph = step.graph, None
        r["ms_token_text_eager"] = time_decode(model, decode_tokens, "text")[0] * 1e3
        r["ms_token_units_eager"] = time_decode(model, decode_tokens, "units")[0] * 1e3
        step.graph = graph
    ids = prompt_ids(model.dims.llm.vocab_size, prefill_tokens)
    cache = model.new_cache()
    model.synchronize()
    started = time.perf_counter()
    hidden = model.forward(model.build_embeds(ids), cache)[:, -1]
    model.synchronize()
    r["prefill_ms"] = (time.perf_counter() - started) * 1e3
    UnitStream(model.unit_decoder, max_tokens=unit_tokens).push(hidden)
    if cuda:
        model.synchronize()
        free1, total = torch.cuda.mem_get_info()
        base = int(os.environ.get(BASE_USED_ENV, "0"))
        r |= {
            "allocated_peak": torch.cuda.max_memory_allocated(),
            "reserved_peak": torch.cuda.max_memory_reserved(),
            "driver_used": total - free1 - base,
        }
    del model, chat, cache, hidden, emb, mel, done
    if vocoder is not None:
        vocoder.close()
        del vocoder
    gc.collect()
    if cuda:
        r["reserved_after_unload"] = torch.cuda.memory_reserved()
        release_cuda_cache()
        r["reserved_after_release"] = torch.cuda.memory_reserved()
        r["allocated_after_release"] = torch.cuda.memory_allocated()
    return r


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("mode")
    parser.add_argument("omni", type=Path)
    parser.add_argument("speech_encoder", type=Path)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--vocoder", type=Path, default=None)
    parser.add_argument("--cap-bytes", type=int, default=None)
    parser.add_argument("--quick", action="store_true", help="a few tokens and a short prefill (the CPU dry run)")
    args = parser.parse_args(argv)
    result = _oom(args) if args.cap_bytes is not None else _measure(args)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
