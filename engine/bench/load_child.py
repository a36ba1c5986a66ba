"""A fresh process that loads one model and reports its memory as one JSON line (see ``memory.py``).

    python -m engine.bench.load_child MODE MODEL_DIR [--device cpu|cuda] [--speech-encoder PT] [--turn]

MODE is a quantization (fp32, bf16, nf4, int8, fp16) or "naive" (read every shard into one dict,
then convert to fp32: what a loader without streaming does). Host figures come from
/proc/self/status (VmRSS before loading, VmHWM = the peak); on CUDA the peak allocated/reserved
bytes are read after loading and, with ``--turn``, after a short answer (KV caches, activations).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

TURN_TEXT = "Tell me about the moon."
TURN_TOKENS = 32


def proc_status_kb(field: str) -> int:
    """A ``kB`` field of /proc/self/status (VmRSS, VmHWM, ...)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("mode")
    parser.add_argument("model_dir", type=Path)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--speech-encoder", type=Path, default=None)
    parser.add_argument("--turn", action="store_true", help="also answer a short typed question")
    args = parser.parse_args(argv)

    import torch

    from engine.config import DecodeOptions
    from engine.model.omni import OmniModel
    from engine.model.safetensors_io import ShardSet

    cuda = args.device.startswith("cuda")
    if cuda:
        torch.cuda.init()
        torch.cuda.reset_peak_memory_stats()
    base_kb = proc_status_kb("VmRSS")
    result: dict[str, float | int | str] = {"base_kb": base_kb}
    started = time.perf_counter()
    if args.mode == "naive":
        from safetensors.torch import load_file

        state: dict[str, torch.Tensor] = {}
        for shard in ShardSet.open(args.model_dir).shards:
            state.update(load_file(str(shard)))
        state = {k: v.float() for k, v in state.items()}
        loaded = sum(v.numel() * v.element_size() for v in state.values())
    else:
        model = OmniModel.load(args.model_dir, args.speech_encoder, device=args.device, quant=args.mode)
        parts = (model.llm, model.unit_decoder, model.adapter, model.encoder)
        loaded = sum(t.numel() * t.element_size() for m in parts for t in (*m.parameters(), *m.buffers()))
        result["estimate_bytes"] = model.memory_estimate.total_bytes
        result["estimate_host_bytes"] = model.memory_estimate.host_bytes
        result["quant"] = model.plan.quant
    model_ready = time.perf_counter()
    result |= {"peak_kb": proc_status_kb("VmHWM"), "loaded_bytes": loaded, "load_s": model_ready - started}
    if cuda:
        torch.cuda.synchronize()
        result["cuda_alloc_load"] = torch.cuda.max_memory_allocated()
        result["cuda_reserved_load"] = torch.cuda.max_memory_reserved()
    if args.turn and args.mode != "naive":
        chat = model.conversation()
        for _event in chat.respond_text(TURN_TEXT, decode=DecodeOptions(max_new_tokens=TURN_TOKENS)):
            pass
        if cuda:
            torch.cuda.synchronize()
            result["cuda_alloc_turn"] = torch.cuda.max_memory_allocated()
            result["cuda_reserved_turn"] = torch.cuda.max_memory_reserved()
            free, total = torch.cuda.mem_get_info()
            result["cuda_used_driver"] = total - free
        result["peak_kb_turn"] = proc_status_kb("VmHWM")
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
