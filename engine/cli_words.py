"""The command line's words for engine errors: its own advice where it has an option to name.

The GUI names its buttons in ``app/error_words.py``; the engine's ``fix`` names neither
(``engine/errors.py``). Used by ``python -m engine`` and the fine-tuning subprocess's human output.
"""

from __future__ import annotations

from engine.errors import EngineError, Reason

CLI_FIXES: dict[Reason, str] = {
    Reason.ENCODER_NOT_FOUND: "Pass --speech-encoder PATH (Whisper large-v3.pt or a whisper-large-v3 folder).",
    Reason.CUDA_UNAVAILABLE: "Pass --device cpu (slow), or install the NVIDIA driver and a CUDA build of PyTorch.",
    Reason.GPU_NOT_FOUND: "Pass --device cuda:N with a GPU PyTorch sees (nvidia-smi lists them), or --device cpu.",
    Reason.BF16_UNSUPPORTED: "Pass --quant fp16 or --quant nf4.",
    Reason.MEMORY_SHORT: "Pass --quant nf4 (the smallest), or a smaller --max-new-tokens.",
    Reason.VOCODER_GPU_UNAVAILABLE: "Pass --device cpu.",
    Reason.RESUME_IMPOSSIBLE: "Run again without --resume (it starts from the beginning).",
    Reason.TRAINING_MEMORY_SHORT: "Close other programs, pass --rank 8 --batch 1, or shorten the longest answers.",
    Reason.TRAINING_DISK_FULL: "Free some disk space, then run again with --resume.",
    Reason.TRAINING_DIVERGED: "Pass a lower --lr.",
    Reason.QUANTIZED_UNIT_DECODER: "Pass --unit-decoder lora, or --quant bf16/fp32 with enough memory.",
}


def cli_error_text(exc: EngineError) -> str:
    """``error (kind): message [file: path] Fix: ...`` with the CLI's own advice where it has one."""
    fix = CLI_FIXES.get(exc.reason) if exc.reason is not None else None
    fix = fix or exc.fix
    where = f" [file: {exc.path}]" if exc.path is not None else ""
    return f"error ({exc.kind}): {exc.message}{where}" + (f" Fix: {fix}" if fix else "")


def cli_fix(reason: str | None, fix: str | None) -> str | None:
    """The command line's advice for a reason (as carried in a JSON error event), else ``fix``."""
    try:
        return CLI_FIXES.get(Reason(reason), fix) if reason else fix
    except ValueError:
        return fix
