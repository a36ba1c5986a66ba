"""Training options, and the defaults chosen from the data size and the free (V)RAM.

Every decision here is a pure function of plain numbers (device type, free bytes, bf16 support,
dataset size, model dimensions), so the CUDA choices are tested on machines without a GPU.

Defaults (``plan_training``):

- precision: CUDA -> QLoRA (NF4 base with double quantization, bf16 compute if the GPU has it,
  else fp16); CPU -> LoRA on the fp32 base (``--quant bf16`` halves the memory). Trainable tensors
  (LoRA, the speech adapter, the unit decoder) are fp32 master copies.
- unit decoder (stage 2): trained in full, as the paper's stage 2 does, when its weights are not
  quantized and its fp32 training state fits; otherwise (NF4/int8 bases, i.e. 8-12 GB cards: the
  425M-parameter decoder's Adam state alone is 6.8 GB) LoRA on its layers plus its input and
  output projections in full.
- micro-batch: 1 below 16 GB free (padding to the longest pair wastes memory on small cards),
  2 below 32 GB, else 4; CPU 1 (compute-bound). Gradient accumulation up to an effective batch of
  8 (never more than the training pairs).
- gradient checkpointing: on CUDA whenever free memory is under 40 GB; off on CPU (speed).
- epochs: enough passes for a few dozen pairs to be learnt (``TARGET_EXAMPLE_PASSES`` example
  visits), between 3 and 30; ``--steps`` overrides.
- schedule: linear warmup over 3 % of the steps (at least 1), then cosine decay to 0 (the
  LLaMA-Omni paper's schedule); peak LR 2e-4 for both stages (QLoRA's usual LoRA rate; the
  paper's stage-2 rate). Pretrained modules trained in full next to LoRA layers (the speech
  adapter, the decoder's projections in LoRA mode) get a tenth of it: 2e-5 is the paper's
  stage-1 full fine-tuning rate, and at the LoRA rate they destabilise training.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from engine.config import OmniDims, QuantMode
from engine.errors import BadInput, Reason
from engine.model.memory import CUDA_CONTEXT_BYTES, GB, estimate_memory

StageChoice = Literal["1", "2", "both"]
UnitMode = Literal["full", "lora"]
UNIT_MODES: tuple[UnitMode, ...] = ("full", "lora")
STAGE_CHOICES: tuple[StageChoice, ...] = ("1", "2", "both")
TRAIN_QUANTS: tuple[QuantMode, ...] = ("nf4", "int8", "bf16", "fp32")
DEFAULT_RANK = 16
LORA_ALPHA_PER_RANK = 2.0
LORA_DROPOUT = 0.05
DEFAULT_LR = 2e-4
PRETRAINED_LR_SCALE = 0.1
WARMUP_FRACTION = 0.03
EFFECTIVE_BATCH = 8
TARGET_EXAMPLE_PASSES = 300
MIN_EPOCHS, MAX_EPOCHS = 3, 30
CHECKPOINT_TARGET = 10  # about this many checkpoints per stage
MAX_CHECKPOINT_EVERY = 50
GRAD_CKPT_BELOW_BYTES = 40 * GB
MICRO_BATCH_STEPS = ((16 * GB, 1), (32 * GB, 2))  # free bytes below -> micro-batch; else 4
LARGE_MICRO_BATCH = 4
TRAIN_STATE_FP32_COPIES = 4  # param + grad + Adam's two moments, fp32
SPEECH_POSITIONS_FALLBACK = 300
TYPICAL_PROMPT_TOKENS = 64  # system prefix + headers + instruction, Llama-3 tokenizer
CUDA_SLACK_BYTES = 300 * 1_000_000  # allocator fragmentation, cuBLAS workspaces


@dataclass(frozen=True, slots=True)
class TrainOptions:
    """What the user asked for (the CLI's flags); None means "choose a default"."""

    model_dir: Path | None
    data: Path
    out: Path | None  # the adapter folder (run only)
    speech_encoder: Path | None = None
    device: str | None = None
    quant: QuantMode | None = None
    stage: StageChoice = "both"
    epochs: int | None = None
    steps: int | None = None
    lr: float | None = None
    rank: int = DEFAULT_RANK
    micro_batch: int | None = None
    grad_accum: int | None = None
    grad_checkpointing: bool | None = None
    seed: int = 0
    resume: bool = False
    checkpoint_every: int | None = None
    hubert: Path | None = None
    kmeans: Path | None = None
    system_prompt: str | None = None
    evaluate: bool = True
    unit_mode: UnitMode | None = None

    def as_dict(self) -> dict[str, Any]:
        return {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(self).items()}


@dataclass(frozen=True, slots=True)
class Precision:
    quant: QuantMode
    qlora: bool  # LoRA over a 4-/8-bit quantized base
    compute_dtype: str  # "bfloat16" | "float16" | "float32"


def choose_precision(device_type: str, requested: QuantMode | None, cuda_bf16: bool) -> Precision:
    """QLoRA on CUDA by default, LoRA on fp32 on the CPU; an explicit ``--quant`` wins."""
    quant: QuantMode = requested or ("nf4" if device_type == "cuda" else "fp32")
    if quant in ("nf4", "int8"):
        compute = ("bfloat16" if cuda_bf16 else "float16") if device_type == "cuda" else "float32"
        if quant == "int8" and device_type == "cuda":
            compute = "float16"
        return Precision(quant, True, compute)
    return Precision(quant, False, {"bf16": "bfloat16", "fp16": "float16", "fp32": "float32"}[quant])


@dataclass(frozen=True, slots=True)
class StagePlan:
    stage: int  # 1: speech/typed question -> text; 2: unit decoder (CTC)
    n_examples: int
    micro_batch: int
    grad_accum: int
    epochs: float  # fractional when --steps decides
    total_steps: int
    lr: float
    warmup_steps: int
    checkpoint_every: int

    @property
    def effective_batch(self) -> int:
        return self.micro_batch * self.grad_accum


@dataclass(frozen=True, slots=True)
class TrainPlan:
    device: str
    precision: Precision
    grad_checkpointing: bool
    unit_mode: UnitMode
    rank: int
    alpha: float
    dropout: float
    stages: tuple[StagePlan, ...]
    memory_needed_bytes: int
    memory_free_bytes: int | None
    notes: tuple[str, ...] = field(default=())

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["stages"] = [asdict(s) | {"effective_batch": s.effective_batch} for s in self.stages]
        return data

    def text(self) -> str:
        p = self.precision
        free = (
            f"{self.memory_free_bytes / GB:.1f} GB free"
            if self.memory_free_bytes is not None
            else "free memory unknown"
        )
        lines = [
            f"Training plan on {self.device}: {'QLoRA' if p.qlora else 'LoRA'} "
            f"(base {p.quant}, compute {p.compute_dtype}), "
            f"rank {self.rank}, gradient checkpointing {'on' if self.grad_checkpointing else 'off'}, "
            f"unit decoder {'in full' if self.unit_mode == 'full' else 'with LoRA'}.",
            f"  Memory: about {size_text(self.memory_needed_bytes)} needed, {free}.",
        ]
        for s in self.stages:
            lines.append(
                f"  Stage {s.stage}: {s.n_examples} pairs, batch {s.micro_batch} x {s.grad_accum} accumulation, "
                f"{s.epochs:g} epochs = {s.total_steps} steps, peak LR {s.lr:g} (cosine, {s.warmup_steps} warmup), "
                f"checkpoint every {s.checkpoint_every} steps."
            )
        if self.memory_free_bytes is not None and self.memory_needed_bytes > self.memory_free_bytes:
            lines.append(
                "  This does not fit: close other programs, use a smaller --rank or --batch 1, or train on a GPU."
            )
        lines += [f"  Note: {n}" for n in self.notes]
        return "\n".join(lines)


def size_text(n_bytes: int) -> str:
    return f"{n_bytes / GB:.1f} GB" if n_bytes >= GB / 10 else f"{n_bytes / 1e6:.0f} MB"


def choose_micro_batch(device_type: str, free_bytes: int | None) -> int:
    if device_type != "cuda" or free_bytes is None:
        return 1
    for below, batch in MICRO_BATCH_STEPS:
        if free_bytes < below:
            return batch
    return LARGE_MICRO_BATCH


def choose_grad_checkpointing(device_type: str, free_bytes: int | None) -> bool:
    return device_type == "cuda" and (free_bytes is None or free_bytes < GRAD_CKPT_BELOW_BYTES)


def choose_unit_mode(precision: Precision, free_bytes: int | None, lora_bytes: int, full_bytes: int) -> UnitMode:
    """Full decoder training unless its weights are quantized or only the LoRA variant fits."""
    if precision.qlora:
        return "lora"
    if free_bytes is not None and full_bytes > free_bytes and lora_bytes <= free_bytes:
        return "lora"
    return "full"


def choose_epochs(n_examples: int) -> int:
    return max(MIN_EPOCHS, min(MAX_EPOCHS, math.ceil(TARGET_EXAMPLE_PASSES / max(1, n_examples))))


def stage_plan(
    stage: int,
    n_examples: int,
    *,
    micro_batch: int,
    grad_accum: int | None,
    epochs: int | None,
    steps: int | None,
    lr: float | None,
    checkpoint_every: int | None,
) -> StagePlan:
    micro_batch = max(1, min(micro_batch, n_examples))
    accum = grad_accum or max(1, min(EFFECTIVE_BATCH, n_examples) // micro_batch)
    effective = micro_batch * accum
    if steps is not None:
        total = max(1, steps)
        n_epochs = total * effective / max(1, n_examples)
    else:
        n_epochs = epochs or choose_epochs(n_examples)
        total = max(1, math.ceil(n_epochs * n_examples / effective))
    every = checkpoint_every or max(1, min(MAX_CHECKPOINT_EVERY, total // CHECKPOINT_TARGET))
    return StagePlan(
        stage=stage,
        n_examples=n_examples,
        micro_batch=micro_batch,
        grad_accum=accum,
        epochs=round(float(n_epochs), 3),
        total_steps=total,
        lr=lr or DEFAULT_LR,
        warmup_steps=max(1, round(total * WARMUP_FRACTION)),
        checkpoint_every=every,
    )


def lr_at(step: int, plan: StagePlan) -> float:
    """LR for optimizer step ``step`` (0-based): linear warmup, then cosine to 0 at ``total_steps``."""
    if step < plan.warmup_steps:
        return plan.lr * (step + 1) / plan.warmup_steps
    span = max(1, plan.total_steps - plan.warmup_steps)
    progress = min(1.0, (step - plan.warmup_steps) / span)
    return plan.lr * 0.5 * (1.0 + math.cos(math.pi * progress))


def _lora_params(dims: OmniDims, rank: int, stage: int) -> int:
    """LoRA parameters on every attention/MLP linear of the LLM (stage 1) or unit decoder (stage 2)."""
    if stage == 1:
        llm = dims.llm
        q, kv = llm.n_heads * llm.head_dim, llm.n_kv_heads * llm.head_dim
        h, i = llm.hidden_size, llm.intermediate_size
        per_layer = (h + q) + 2 * (h + kv) + (q + h) + 2 * (h + i) + (i + h)
        return rank * per_layer * llm.n_layers
    unit = dims.unit_decoder
    d, f = unit.dim, unit.ffn_dim
    return rank * (4 * 2 * d + 2 * (d + f) + (f + d)) * unit.n_layers


def estimate_training_bytes(
    dims: OmniDims,
    quant: QuantMode,
    *,
    device_type: str,
    stage: int,
    micro_batch: int,
    seq_len: int,
    answer_tokens: int,
    rank: int,
    grad_checkpointing: bool,
    unit_mode: UnitMode = "lora",
) -> int:
    """Device bytes for one stage: frozen weights + trainable fp32 state + activations (+ CUDA context)."""
    weights = estimate_memory(dims, quant, device_type=device_type, context_tokens=1, max_new_tokens=1).weight_bytes
    if device_type == "cuda":
        weights -= dims.encoder.n_params * 2  # the encoder is parked in host RAM while training
    trainable = _lora_params(dims, rank, stage)
    if stage == 1:
        trainable += dims.adapter.n_params
    elif unit_mode == "full":
        trainable = dims.unit_decoder.n_params
    else:
        unit = dims.unit_decoder
        trainable += unit.llm_dim * unit.dim + unit.dim * (unit.unit_vocab_size + 1)
    state = trainable * 4 * TRAIN_STATE_FP32_COPIES
    act_bytes = 2 if device_type == "cuda" else (2 if quant == "bf16" else 4)
    if stage == 1:
        llm = dims.llm
        tokens = micro_batch * seq_len
        layer_full = tokens * (10 * llm.hidden_size + 3 * llm.intermediate_size) * act_bytes
        kept = llm.n_layers * tokens * llm.hidden_size * act_bytes if grad_checkpointing else llm.n_layers * layer_full
        activations = kept + layer_full + micro_batch * answer_tokens * llm.vocab_size * 4 * 2
    else:
        unit = dims.unit_decoder
        frames = micro_batch * answer_tokens * unit.upsample_factor
        layer_full = frames * (10 * unit.dim + 3 * unit.ffn_dim) * act_bytes
        kept = unit.n_layers * frames * unit.dim * act_bytes if grad_checkpointing else unit.n_layers * layer_full
        activations = kept + layer_full + frames * (unit.unit_vocab_size + 1) * 4 * 3
    extra = CUDA_CONTEXT_BYTES + CUDA_SLACK_BYTES if device_type == "cuda" else 0
    return weights + state + activations + extra


def plan_training(
    options: TrainOptions,
    dims: OmniDims,
    *,
    device_type: str,
    free_bytes: int | None,
    cuda_bf16: bool,
    n_stage1: int,
    n_stage2: int,
    seq_len: int,
    answer_tokens: int,
    notes: tuple[str, ...] = (),
) -> TrainPlan:
    """Resolve every default (module docstring) for the stages that have data."""
    precision = choose_precision(device_type, options.quant, cuda_bf16)
    if options.unit_mode == "full" and precision.qlora:
        raise BadInput(
            f"The unit decoder cannot be trained in full on a {precision.quant} base (its weights are quantized).",
            fix="Train the unit decoder with LoRA, or use a 16- or 32-bit base with enough memory.",
            reason=Reason.QUANTIZED_UNIT_DECODER,
            facts={"quant": precision.quant},
        )
    grad_ckpt = (
        options.grad_checkpointing
        if options.grad_checkpointing is not None
        else choose_grad_checkpointing(device_type, free_bytes)
    )
    micro = options.micro_batch or choose_micro_batch(device_type, free_bytes)
    common = dict(
        micro_batch=micro,
        grad_accum=options.grad_accum,
        epochs=options.epochs,
        steps=options.steps,
        lr=options.lr,
        checkpoint_every=options.checkpoint_every,
    )
    stages = []
    if options.stage in ("1", "both") and n_stage1:
        stages.append(stage_plan(1, n_stage1, **common))  # type: ignore[arg-type]
    if options.stage in ("2", "both") and n_stage2:
        stages.append(stage_plan(2, n_stage2, **common))  # type: ignore[arg-type]

    def needed(stage: StagePlan, mode: UnitMode) -> int:
        return estimate_training_bytes(
            dims,
            precision.quant,
            device_type=device_type,
            stage=stage.stage,
            micro_batch=stage.micro_batch,
            seq_len=seq_len,
            answer_tokens=answer_tokens,
            rank=options.rank,
            grad_checkpointing=grad_ckpt,
            unit_mode=mode,
        )

    unit_mode: UnitMode = options.unit_mode or "lora"
    stage2 = next((s for s in stages if s.stage == 2), None)
    if options.unit_mode is None and stage2 is not None:
        unit_mode = choose_unit_mode(precision, free_bytes, needed(stage2, "lora"), needed(stage2, "full"))
    elif options.unit_mode is None:
        unit_mode = "lora" if precision.qlora else "full"
    total = max((needed(s, unit_mode) for s in stages), default=0)
    return TrainPlan(
        device=device_type,
        precision=precision,
        grad_checkpointing=grad_ckpt,
        unit_mode=unit_mode,
        rank=options.rank,
        alpha=options.rank * LORA_ALPHA_PER_RANK,
        dropout=LORA_DROPOUT,
        stages=tuple(stages),
        memory_needed_bytes=total,
        memory_free_bytes=free_bytes,
        notes=notes,
    )
