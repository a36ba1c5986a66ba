"""Memory: peak host RAM while loading, peak VRAM per quantization, and the pre-flight estimates.

Each load runs in a fresh process (``engine.bench.load_child``), so one measurement's allocator
state cannot leak into the next and VmHWM (the kernel's peak resident set) belongs to that load.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from engine.bench.report import REPO_ROOT, Table, fmt
from engine.config import OmniDims, QuantMode
from engine.model.memory import GB, estimate_memory

CUDA_QUANTS: tuple[QuantMode, ...] = ("nf4", "int8", "fp16")
CPU_QUANTS: tuple[QuantMode, ...] = ("fp32", "bf16", "nf4")
CHILD_TIMEOUT_S = 1800
KB = 1024
MB = 1_000_000


@dataclass(frozen=True, slots=True)
class LoadMemory:
    mode: str
    device: str
    base_mb: float  # RSS with torch and the engine imported, before loading
    peak_mb: float  # VmHWM after loading
    model_mb: float  # bytes of the loaded parameters and buffers (host or device)
    load_s: float
    estimate_mb: float | None = None  # engine.model.memory's pre-flight estimate for this load
    cuda_alloc_load_mb: float | None = None
    cuda_reserved_load_mb: float | None = None
    cuda_alloc_turn_mb: float | None = None
    cuda_reserved_turn_mb: float | None = None
    cuda_used_driver_mb: float | None = None

    @property
    def above_model_mb(self) -> float:
        """Peak host RAM beyond the baseline and the loaded model (CPU: what loading costs on top)."""
        return self.peak_mb - self.base_mb - (self.model_mb if self.device == "cpu" else 0.0)


def _mb(raw: dict[str, float], key: str, scale: float = 1.0) -> float | None:
    return raw[key] * scale / MB if key in raw else None


def measure_load(
    folder: Path,
    mode: str,
    *,
    device: str = "cpu",
    threads: int | None = None,
    speech_encoder: Path | None = None,
    turn: bool = False,
) -> LoadMemory:
    """Load ``folder`` in ``mode`` in a fresh process and return what it reported."""
    env = dict(os.environ)
    if threads is not None:
        env["OMP_NUM_THREADS"] = str(threads)
    command = [sys.executable, "-m", "engine.bench.load_child", mode, str(folder), "--device", device]
    if speech_encoder is not None:
        command += ["--speech-encoder", str(speech_encoder)]
    if turn:
        command.append("--turn")
    out = subprocess.run(
        command, capture_output=True, text=True, check=False, env=env, cwd=REPO_ROOT, timeout=CHILD_TIMEOUT_S
    )
    if out.returncode != 0:
        raise RuntimeError(f"loading in {mode} failed:\n{out.stderr[-4000:]}")
    raw = json.loads(out.stdout.strip().splitlines()[-1])
    return LoadMemory(
        mode=mode,
        device=device,
        base_mb=raw["base_kb"] * KB / MB,
        peak_mb=raw["peak_kb"] * KB / MB,
        model_mb=raw["loaded_bytes"] / MB,
        load_s=raw["load_s"],
        estimate_mb=_mb(raw, "estimate_bytes"),
        cuda_alloc_load_mb=_mb(raw, "cuda_alloc_load"),
        cuda_reserved_load_mb=_mb(raw, "cuda_reserved_load"),
        cuda_alloc_turn_mb=_mb(raw, "cuda_alloc_turn"),
        cuda_reserved_turn_mb=_mb(raw, "cuda_reserved_turn"),
        cuda_used_driver_mb=_mb(raw, "cuda_used_driver"),
    )


def host_table(loads: list[LoadMemory]) -> Table:
    table = Table(["load", "model (MB)", "RSS before (MB)", "peak RSS (MB)", "peak - before - model (MB)", "load s"])
    for load in loads:
        on_host = load.device == "cpu"
        table.add(
            f"{load.mode} on {load.device}",
            fmt(load.model_mb) + ("" if on_host else " (on GPU)"),
            fmt(load.base_mb),
            fmt(load.peak_mb),
            fmt(load.above_model_mb) if on_host else f"{fmt(load.peak_mb - load.base_mb)} (peak - before)",
            fmt(load.load_s, 1),
        )
    return table


def vram_table(loads: list[LoadMemory]) -> Table:
    table = Table(
        [
            "quantization",
            "weights on GPU (MB)",
            "peak allocated, load (MB)",
            "peak allocated, after a 32-token answer (MB)",
            "peak reserved (MB)",
            "GPU used, driver (MB)",
            "estimate (MB)",
        ]
    )
    for load in loads:
        table.add(
            load.mode,
            fmt(load.model_mb),
            fmt(load.cuda_alloc_load_mb),
            fmt(load.cuda_alloc_turn_mb),
            fmt(load.cuda_reserved_turn_mb),
            fmt(load.cuda_used_driver_mb),
            fmt(load.estimate_mb),
        )
    return table


def estimate_table(dims: OmniDims, quants: tuple[QuantMode, ...] = CUDA_QUANTS) -> Table:
    """``engine.model.memory.estimate_memory`` on CUDA for ``dims`` (labelled as estimates)."""
    table = Table(
        [
            "quantization",
            "weights (GB)",
            "KV caches, activations, CUDA context (GB)",
            "total on GPU (GB)",
            "host RAM (GB)",
        ]
    )
    for quant in quants:
        est = estimate_memory(dims, quant, device_type="cuda")
        table.add(
            f"{quant} (estimate)",
            fmt(est.weight_bytes / GB, 2),
            fmt((est.total_bytes - est.weight_bytes) / GB, 2),
            fmt(est.total_bytes / GB, 2),
            fmt(est.host_bytes / GB, 2),
        )
    return table
