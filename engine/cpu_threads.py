"""CPU threads for the model and the vocoder, chosen so that a busy PC slows an answer down instead of
stalling it.

PyTorch runs each operator on all its intra-op (OpenMP) threads and waits for the slowest; when
another program holds one of the cores, every operator waits for a time slice, and one answer
token is hundreds of small operators. Measured on 2 cores with one other CPU-bound process
(``python -m engine bench-hear``, bench/RESULTS.md): the tiny model decoded 5-12 tokens/s inside the
app with torch's default of 2 threads, 80-260 tokens/s with 1; the mid-size model's prefill took
16 s instead of 6 s. onnxruntime's intra-op threads spin between runs by default, burning the
core the model needs; the vocoder runs short, regular chunks, so they block instead.

Owner: the engine thread applies its :class:`ThreadPlan` when it loads a model;
:func:`onnx_session_options` configures every onnxruntime session made afterwards. torch's count
holds for the thread that sets it and for threads that run their first torch operator later, not
for threads that already ran one (OpenMP keeps a count per thread): in the app only the engine
thread and, without onnxruntime, the vocoder worker run torch.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

logger = logging.getLogger(__name__)

DEFAULT_ONNX_THREADS = 1  # the vocoder's chunks are small; one thread keeps the others' cores free


@dataclass(frozen=True, slots=True)
class ThreadPlan:
    """Thread counts for the engine; ``None`` leaves the library's own default."""

    torch_threads: int | None = 1  # intra-op threads of the model (encoder, LLM, unit decoder)
    onnx_threads: int | None = DEFAULT_ONNX_THREADS  # intra-op threads of onnxruntime sessions
    onnx_spinning: bool = False  # let onnxruntime's idle threads spin (its default) or block

    def describe(self) -> str:
        torch_part = "torch default" if self.torch_threads is None else f"torch {self.torch_threads}"
        onnx_part = "onnxruntime default" if self.onnx_threads is None else f"onnxruntime {self.onnx_threads}"
        return f"{torch_part}, {onnx_part}{', spinning' if self.onnx_spinning else ''} thread(s)"


_onnx_plan = ThreadPlan()


def apply_onnx(plan: ThreadPlan) -> None:
    """Sessions created from now on use ``plan``'s onnxruntime settings."""
    global _onnx_plan
    _onnx_plan = plan


def apply_torch(plan: ThreadPlan) -> None:
    """Set torch's intra-op thread count (process-wide) if the plan names one."""
    if plan.torch_threads is None:
        return
    import torch

    if torch.get_num_threads() != plan.torch_threads:
        logger.info("torch intra-op threads: %d -> %d", torch.get_num_threads(), plan.torch_threads)
        torch.set_num_threads(plan.torch_threads)


def onnx_session_options(options: Any) -> Any:
    """Apply the current plan to an ``onnxruntime.SessionOptions``; returns it."""
    plan = _onnx_plan
    if plan.onnx_threads is not None:
        options.intra_op_num_threads = plan.onnx_threads
        options.inter_op_num_threads = 1
    if not plan.onnx_spinning:
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.add_session_config_entry("session.inter_op.allow_spinning", "0")
    return options
