"""Training defaults and CUDA-only decisions, through the decision functions (no GPU here)."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
import torch

from engine.config import OFFICIAL_DIMS
from engine.errors import BadInput, Cancelled, ModelCorrupt, NotEnoughMemory
from engine.finetune import cli
from engine.finetune.plan import (
    TrainOptions,
    choose_precision,
    estimate_training_bytes,
    lr_at,
    plan_training,
    stage_plan,
)
from engine.model.memory import GB

OPTS = TrainOptions(model_dir=Path("m"), data=Path("d"), out=Path("o"))
SEQ, ANSWER = 420, 64  # a 30 s speech question and a long spoken-style answer, in positions/tokens


def _plan(device: str, free: float | None, n: int = 100, n2: int = 100, **kw):  # type: ignore[no-untyped-def]
    from dataclasses import replace

    return plan_training(
        replace(OPTS, **kw),
        OFFICIAL_DIMS,
        device_type=device,
        free_bytes=None if free is None else int(free * GB),
        cuda_bf16=True,
        n_stage1=n,
        n_stage2=n2,
        seq_len=SEQ,
        answer_tokens=ANSWER,
    )


def test_qlora_on_cuda_lora_on_cpu() -> None:
    cuda = choose_precision("cuda", None, cuda_bf16=True)
    assert (cuda.quant, cuda.qlora, cuda.compute_dtype) == ("nf4", True, "bfloat16")
    assert choose_precision("cuda", None, cuda_bf16=False).compute_dtype == "float16"  # Turing cards
    cpu = choose_precision("cpu", None, cuda_bf16=False)
    assert (cpu.quant, cpu.qlora, cpu.compute_dtype) == ("fp32", False, "float32")
    assert choose_precision("cpu", "bf16", cuda_bf16=False).compute_dtype == "bfloat16"


def test_an_8_gb_card_gets_batch_1_checkpointing_and_a_lora_decoder() -> None:
    plan = _plan("cuda", 7.6)
    assert plan.precision.qlora and plan.grad_checkpointing and plan.unit_mode == "lora"
    assert [s.micro_batch for s in plan.stages] == [1, 1] and plan.stages[0].grad_accum == 8
    # The documented budget: rank 16, batch 1, checkpointing, the 8B in NF4 fits under 8 GB.
    assert plan.memory_needed_bytes < 7.6 * GB, plan.text()
    # Without checkpointing the same run would not fit.
    no_ckpt = estimate_training_bytes(OFFICIAL_DIMS, "nf4", device_type="cuda", stage=1, micro_batch=1,
                                      seq_len=SEQ, answer_tokens=ANSWER, rank=16, grad_checkpointing=False)  # fmt: skip
    assert no_ckpt > plan.memory_needed_bytes


def test_bigger_cards_get_bigger_batches() -> None:
    assert _plan("cuda", 20).stages[0].micro_batch == 2
    big = _plan("cuda", 80)
    assert big.stages[0].micro_batch == 4 and big.stages[0].grad_accum == 2 and not big.grad_checkpointing
    assert _plan("cpu", 20).stages[0].micro_batch == 1 and not _plan("cpu", 20).grad_checkpointing


def test_unit_decoder_in_full_unless_quantized_or_short_of_memory() -> None:
    assert _plan("cpu", 64).unit_mode == "full"
    assert _plan("cuda", 80, quant="bf16").unit_mode == "full"
    assert _plan("cuda", 22, quant="bf16").unit_mode == "lora"  # 22 GB: the full decoder's Adam state does not fit
    assert _plan("cuda", 80).unit_mode == "lora"  # NF4 decoder weights cannot be trained in full
    with pytest.raises(BadInput):
        _plan("cuda", 80, unit_mode="full")


def test_epochs_follow_the_data_size_and_steps_override() -> None:
    assert _plan("cpu", 20, n=12).stages[0].epochs == 25
    assert _plan("cpu", 20, n=100).stages[0].epochs == 3
    assert _plan("cpu", 20, n=5000).stages[0].epochs == 3
    small = _plan("cpu", 20, n=12, n2=0)
    assert [s.stage for s in small.stages] == [1]
    assert small.stages[0].total_steps == 38  # ceil(25 * 12 / 8)
    fixed = _plan("cpu", 20, n=12, steps=10)
    assert fixed.stages[0].total_steps == 10 and fixed.stages[0].epochs == pytest.approx(10 * 8 / 12, abs=1e-3)


def test_cosine_schedule_with_warmup() -> None:
    plan = stage_plan(1, 100, micro_batch=1, grad_accum=1, epochs=None, steps=200, lr=1e-3, checkpoint_every=None)
    assert plan.warmup_steps == 6 and plan.checkpoint_every == 20
    lrs = [lr_at(s, plan) for s in range(200)]
    assert lrs[0] == pytest.approx(1e-3 / 6) and max(lrs) == pytest.approx(1e-3)
    assert all(a <= b for a, b in zip(lrs[:6], lrs[1:6], strict=False))
    assert all(a >= b for a, b in zip(lrs[6:], lrs[7:], strict=False)) and lrs[-1] < 1e-6


def test_plan_text_shows_the_defaults() -> None:
    text = _plan("cuda", 7.6).text()
    assert "QLoRA" in text and "gradient checkpointing on" in text and "Stage 2" in text
    json.dumps(_plan("cuda", 7.6).as_dict())


# ----------------------------------------------------------------------------- exit codes


def test_out_of_memory_is_recognised_however_it_is_spelled() -> None:
    assert cli.is_out_of_memory(torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"))
    assert cli.is_out_of_memory(RuntimeError("CUDA error: out of memory"))
    assert cli.is_out_of_memory(MemoryError())
    assert cli.is_out_of_memory(NotEnoughMemory("needs 9 GB"))
    assert not cli.is_out_of_memory(RuntimeError("shape mismatch"))
    assert cli.exit_code_for(torch.cuda.OutOfMemoryError("x")) == cli.EXIT_OUT_OF_MEMORY
    assert cli.exit_code_for(Cancelled("stop")) == cli.EXIT_CANCELLED
    assert cli.exit_code_for(ModelCorrupt("bad")) == cli.EXIT_BAD_INPUT
    assert cli.exit_code_for(ValueError("bug")) == cli.EXIT_INTERNAL


def test_a_fake_oom_exits_3_with_advice_and_no_traceback(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from engine.finetune import trainer

    def run(self: object) -> None:
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 1.95 GiB (GPU 0; 8.00 GiB total)")

    monkeypatch.setattr(trainer.Trainer, "run", run)
    out, err = io.StringIO(), io.StringIO()
    monkeypatch.setattr(cli.sys, "stdout", out)
    monkeypatch.setattr(cli.sys, "stderr", err)
    from engine.__main__ import main

    code = main(["finetune", "run", "--model", str(tmp_path), "--data", str(tmp_path), "--out", str(tmp_path / "a")])
    assert code == 3
    (line,) = out.getvalue().splitlines()
    event = json.loads(line)
    assert event["event"] == "error" and event["kind"] == "out_of_memory" and event["exit_code"] == 3
    assert "--batch 1" in event["fix"] and "Traceback" not in err.getvalue()
