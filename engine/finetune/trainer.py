"""One fine-tuning run: data -> targets -> plan -> evaluation -> stage 1 -> stage 2 -> evaluation -> adapter.

Stage 1 (question -> answer text) trains the speech adapter fully and LoRA layers on every Llama
linear (QLoRA on an NF4 base on CUDA); stage 2 trains the unit decoder against CTC on the answer's
speech units, everything else frozen, starting from the released decoder: in full, or (on a
quantized base: an 8-12 GB card) LoRA on its layers plus its input/output projections (see
``plan.choose_unit_mode``). ``--stage both`` runs stage 2 only when answer speech (or units) exist.

The loop (``_train_stage``) is nanoGPT-plain: for each optimizer step, the step's examples are a
pure function of (seed, stage, step), micro-batches accumulate gradients normalized by the step's
total answer tokens (stage 1) or target units (stage 2), the gradient norm is clipped to 1, the LR
comes from ``plan.lr_at``, then AdamW steps. ``should_stop()`` is polled before every micro-batch:
a stop saves the state of the last finished step and raises ``Cancelled``.

Events (``emit``; the CLI prints them as JSON lines): report, plan, targets, eval (before/after),
stage, step, checkpoint, done.

Owner: the run owns its model and files; it runs in its own process (the CLI), never in the app's.
"""

from __future__ import annotations

import functools
import logging
import math
import shutil
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from engine.config import ConversationOptions
from engine.errors import BadInput, Cancelled, NotEnoughMemory, Reason
from engine.finetune.checkpoint import (
    START_AGAIN_FIX,
    TrainState,
    check_same_run,
    load_checkpoint,
    restore_rng,
    rng_state,
    save_checkpoint,
    training_dir,
)
from engine.finetune.data import DataItem, DataReport
from engine.finetune.evaluate import evaluate_answers, evaluate_units, forget_check
from engine.finetune.examples import Example, answer_states, build_examples, stage1_loss_sum, stage2_loss_sum
from engine.finetune.inputs import inspect_data, plan_for, unit_targets
from engine.finetune.plan import (
    PRETRAINED_LR_SCALE,
    StagePlan,
    TrainOptions,
    TrainPlan,
    lr_at,
)
from engine.model.adapter import LORA_MARK
from engine.model.adapter_files import AdapterMeta, now_iso, write_adapter
from engine.model.loader import ADAPTER_PREFIX, UNIT_DECODER_PREFIX
from engine.model.lora import PEFT_LLM_PREFIX, LoraSpec, inject_lora, lora_layers, lora_named_parameters
from engine.model.memory import GB, available_memory
from engine.model.prompt import PromptBuilder
from engine.version import __version__

logger = logging.getLogger(__name__)

Emit = Callable[[dict[str, Any]], None]
GRAD_CLIP_NORM = 1.0
DROPOUT_SEED_OFFSET = 500  # the stage's dropout stream, apart from its LoRA initialisation
ETA_SMOOTHING = 0.3  # weight of the newest step time in the ETA's moving average


def peak_memory_mb(device: torch.device) -> float | None:
    """Peak memory so far: allocated VRAM on CUDA, the process's peak RSS elsewhere (None if unknown)."""
    if device.type == "cuda":
        return round(torch.cuda.max_memory_allocated(device) / 1e6, 1)
    try:
        import resource
    except ImportError:  # Windows
        return None
    scale = 1 if sys.platform == "darwin" else 1024  # ru_maxrss: bytes on macOS, KiB on Linux
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale / 1e6, 1)


@functools.lru_cache(maxsize=64)
def _permutation(n: int, seed: int, stage: int, epoch: int) -> tuple[int, ...]:
    gen = torch.Generator().manual_seed(((seed * 1009 + stage) * 1_000_003 + epoch) % (2**63))
    return tuple(torch.randperm(n, generator=gen).tolist())


def step_batches(n: int, plan: StagePlan, step: int, seed: int) -> list[list[int]]:
    """Example indices of optimizer step ``step``, as micro-batches: a fresh shuffle every epoch."""
    eff = plan.effective_batch
    flat = []
    for i in range(step * eff, (step + 1) * eff):
        epoch, pos = divmod(i, n)
        flat.append(_permutation(n, seed, plan.stage, epoch)[pos])
    return [flat[k : k + plan.micro_batch] for k in range(0, eff, plan.micro_batch)]


class Trainer:
    def __init__(self, options: TrainOptions, emit: Emit, should_stop: Callable[[], bool] = lambda: False) -> None:
        self.options = options
        self.emit = emit
        self.should_stop = should_stop
        if options.out is None or options.model_dir is None:
            raise BadInput("A training run needs --model and an output folder.")
        self.model_dir: Path = options.model_dir
        self.out = Path(options.out)
        self.train_dir = training_dir(self.out)
        self.model: Any = None  # OmniModel once loaded
        self.plan: TrainPlan | None = None
        self.losses: dict[str, list[float]] = {}
        self._prepared: set[int] = set()

    # ------------------------------------------------------------------------------ the run

    def run(self) -> Path:
        opts = self.options
        inspection = inspect_data(opts, require_model=True)
        report = inspection.report
        self.emit({"event": "report", **report.as_dict()})
        if not report.train_items:
            raise BadInput(
                "The dataset has no usable question/answer pairs.",
                path=opts.data,
                fix="Fix or remove the items listed in the report, then try again.",
            )
        assert inspection.dims is not None and inspection.tokenizer is not None
        from engine.model.quant import resolve_device

        device = resolve_device(opts.device)
        items = list(report.items)
        units, unit_notes = unit_targets(opts, inspection, items, self.emit)
        if device.type == "cuda":
            torch.cuda.empty_cache()  # the unit extractor's mHuBERT is gone; its cached blocks go too
        self._stop_before_training()
        items = [replace(i, units=tuple(units[i.id])) if i.id in units else replace(i, units=None) for i in items]
        train = [i for i in items if i.id not in report.heldout_ids]
        heldout = [i for i in items if i.id in report.heldout_ids]
        n_stage2 = sum(1 for i in train if i.units)
        if opts.stage == "2" and not n_stage2:
            raise BadInput(
                "Stage 2 needs answer speech (or units), and none is usable.",
                path=opts.data,
                fix="Add NAME.answer.wav recordings, or train stage 1.",
            )

        free = available_memory(device)
        plan = plan_for(
            opts,
            inspection,
            inspection.dims,
            device_type=device.type,
            free_bytes=free,
            cuda_bf16=device.type == "cuda" and torch.cuda.is_bf16_supported(),
            n_stage2=n_stage2,
            notes=unit_notes,
        )
        self.plan = plan
        self.emit({"event": "plan", **plan.as_dict()})
        if free is not None and plan.memory_needed_bytes > free:
            raise NotEnoughMemory(
                f"Training needs about {plan.memory_needed_bytes / GB:.1f} GB, {free / GB:.1f} GB is free.",
                fix="Close other programs, use a smaller LoRA rank and batch, or shorten the longest answers.",
                reason=Reason.TRAINING_MEMORY_SHORT,
                facts={"needed_bytes": plan.memory_needed_bytes, "free_bytes": free},
            )

        from engine.model.omni import OmniModel

        model = OmniModel.load(self.model_dir, opts.speech_encoder, device=device, quant=plan.precision.quant)
        self.model = model
        prompts = PromptBuilder(model.tokenizer, self._conversation_options())
        run_id = {
            "data": report.fingerprint(),
            "base": model.base_fingerprint(),
            "plan": _plan_identity(plan),
            "seed": opts.seed,
            "system_prompt": prompts.options.system_prompt,
        }
        self._stop_before_training()
        state = self._resume_state(run_id)
        train_examples = build_examples(model, prompts, train)
        heldout_examples = build_examples(model, prompts, heldout) if opts.evaluate else []
        self._stop_before_training()

        eval_before = state.eval_before if state is not None else None
        if opts.evaluate and eval_before is None:
            eval_before = self._evaluate(heldout, heldout_examples, plan, before=None)
            self.emit({"event": "eval", "when": "before", **eval_before})
        start_stage = state.stage_index if state is not None else 0
        tensors = state.tensors if state is not None else {}
        self.losses = dict(state.losses) if state is not None else {}
        self._park_encoder(True)
        try:
            for index, stage in enumerate(plan.stages):
                if index < start_stage:
                    self._prepare_stage(stage.stage, train=False)
                    continue
                resume = state if (state is not None and index == state.stage_index) else None
                self._train_stage(index, stage, train_examples, run_id, tensors, resume, eval_before)
                tensors = self.adapter_tensors()
                self._freeze()
            if state is not None and start_stage >= len(plan.stages) and tensors:
                self._load_tensors(tensors)
        finally:
            self._park_encoder(False)
        final = self._for_disk(self.adapter_tensors())
        self._restore_inference_dtypes()
        eval_after = None
        if opts.evaluate:
            eval_after = self._evaluate(heldout, heldout_examples, plan, before=eval_before)
            self.emit({"event": "eval", "when": "after", **eval_after})
        meta = self._meta(report, plan, run_id, prompts, eval_before, eval_after)
        path = write_adapter(
            self.out,
            meta,
            llm_lora={k: v for k, v in final.items() if k.startswith(PEFT_LLM_PREFIX)} or None,
            projector={k: v for k, v in final.items() if k.startswith(ADAPTER_PREFIX)} or None,
            generator={k: v for k, v in final.items() if k.startswith(UNIT_DECODER_PREFIX)} or None,
        )
        shutil.rmtree(self.train_dir, ignore_errors=True)
        self.emit({"event": "done", "adapter": str(path), "metrics": meta.metrics})
        return path

    def _stop_before_training(self) -> None:
        """Preparing (unit extraction, loading, encoding) can take minutes: a stop need not wait."""
        if self.should_stop():
            raise Cancelled("Stopped before training started.", path=self.options.data)

    # ------------------------------------------------------------------------------ resume

    def _resume_state(self, run_id: dict[str, Any]) -> TrainState | None:
        if not self.options.resume:
            if self.train_dir.exists():
                logger.info("starting over: removing the previous run's checkpoint %s", self.train_dir)
                shutil.rmtree(self.train_dir, ignore_errors=True)
            return None
        state = load_checkpoint(self.train_dir)
        check_same_run(state.run, run_id, self.train_dir)
        return state

    # ------------------------------------------------------------------------------- stages

    def _conversation_options(self) -> ConversationOptions:
        prompt = self.options.system_prompt
        return ConversationOptions(system_prompt=prompt) if prompt else ConversationOptions()

    def _lora_spec(self) -> LoraSpec:
        assert self.plan is not None
        return LoraSpec(rank=self.plan.rank, alpha=self.plan.alpha, dropout=self.plan.dropout)

    def _prepare_stage(self, stage: int, *, train: bool) -> dict[str, nn.Parameter]:
        """Inject this stage's LoRA, make its trained tensors fp32 masters; -> its parameters."""
        assert self.plan is not None
        m = self.model
        if stage == 1:
            if not lora_layers(m.llm):
                self._inject(m.llm, stage)
            m.adapter.float()
        elif self.plan.unit_mode == "full":
            m.unit_decoder.float()
        else:
            if not lora_layers(m.unit_decoder):
                self._inject(m.unit_decoder, stage)
            m.unit_decoder.input_proj.float()
            m.unit_decoder.output_proj.float()
        self._prepared.add(stage)
        params = self._stage_parameters(stage)
        for p in params.values():
            p.data = p.data.float()
            p.requires_grad_(train)
        return params

    def _stage_parameters(self, stage: int) -> dict[str, nn.Parameter]:
        """A stage's trained parameters under the adapter files' names."""
        assert self.plan is not None
        m = self.model
        if stage == 1:
            projector = {ADAPTER_PREFIX + n: p for n, p in m.adapter.named_parameters()}
            return {**lora_named_parameters(m.llm, PEFT_LLM_PREFIX), **projector}
        decoder = m.unit_decoder
        if self.plan.unit_mode == "full":
            return {UNIT_DECODER_PREFIX + n: p for n, p in decoder.named_parameters()}
        params = lora_named_parameters(decoder, UNIT_DECODER_PREFIX)
        for part in ("input_proj", "output_proj"):
            params |= {f"{UNIT_DECODER_PREFIX}{part}.{n}": p for n, p in getattr(decoder, part).named_parameters()}
        return params

    def _param_groups(self, params: dict[str, nn.Parameter], stage: StagePlan) -> list[dict[str, Any]]:
        """LoRA (and a fully trained decoder) at the stage's rate; pretrained modules fine-tuned next
        to LoRA layers (the speech adapter; the decoder's projections in LoRA mode) at a tenth."""
        assert self.plan is not None
        gentle = stage.stage == 1 or self.plan.unit_mode == "lora"
        slow = [p for k, p in params.items() if gentle and LORA_MARK not in k]
        fast = [p for k, p in params.items() if not (gentle and LORA_MARK not in k)]
        groups = [{"params": fast, "lr": stage.lr, "lr_scale": 1.0}]
        if slow:
            groups.append({"params": slow, "lr": stage.lr * PRETRAINED_LR_SCALE, "lr_scale": PRETRAINED_LR_SCALE})
        return groups

    def _inject(self, root: nn.Module, stage: int) -> None:
        """LoRA with its own seeded initialisation: the global RNG stream (dropout) is not consumed,
        so a resumed run draws exactly what the uninterrupted one did."""
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.options.seed * 1009 + stage)
            inject_lora(root, self._lora_spec(), inference=False)

    def adapter_parameters(self) -> dict[str, nn.Parameter]:
        """Everything trained so far (the stages prepared up to now)."""
        named: dict[str, nn.Parameter] = {}
        for stage in sorted(self._prepared):
            named |= self._stage_parameters(stage)
        return named

    def adapter_tensors(self) -> dict[str, torch.Tensor]:
        """``adapter_parameters`` as fp32 CPU copies."""
        return {k: p.detach().to("cpu", torch.float32).clone() for k, p in self.adapter_parameters().items()}

    def _load_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        named = self.adapter_parameters()
        missing = sorted(set(named) - set(tensors))
        if missing:
            raise BadInput(
                f"The checkpoint lacks {missing[0]}.",
                path=self.train_dir,
                fix=START_AGAIN_FIX,
                reason=Reason.RESUME_IMPOSSIBLE,
            )
        with torch.no_grad():
            for key, param in named.items():
                param.copy_(tensors[key].to(param.device, param.dtype))

    def _freeze(self) -> None:
        for p in self.adapter_parameters().values():
            p.requires_grad_(False)
            p.grad = None

    def _park_encoder(self, park: bool) -> None:
        """On CUDA the frozen Whisper encoder waits in host RAM while training (its outputs are cached)."""
        m = self.model
        if m is None or m.device.type != "cuda":
            return
        m.encoder.to("cpu" if park else m.device)
        if park:
            torch.cuda.empty_cache()

    def _for_disk(self, tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """A fully trained decoder's layers are stored in the model's compute dtype (the base's own
        precision; inference casts to it anyway); everything else stays fp32."""
        dtype = self.model.plan.compute_dtype
        layers = UNIT_DECODER_PREFIX + "layers."
        return {k: (v.to(dtype) if k.startswith(layers) and LORA_MARK not in k else v) for k, v in tensors.items()}

    def _restore_inference_dtypes(self) -> None:
        """The loader's per-part dtypes again (what inference with the written adapter will use)."""
        m = self.model
        plan = m.plan
        m.adapter.to(plan.adapter_dtype)
        if self.plan is not None and self.plan.unit_mode == "full" and 2 in self._prepared:
            m.unit_decoder.to(plan.compute_dtype)
        m.unit_decoder.input_proj.to(plan.compute_dtype)
        m.unit_decoder.output_proj.to(plan.head_dtype)
        m.llm.eval()
        m.unit_decoder.eval()

    def _train_stage(
        self,
        index: int,
        stage: StagePlan,
        examples: list[Example],
        run_id: dict[str, Any],
        tensors: dict[str, torch.Tensor],
        resume: TrainState | None,
        eval_before: dict[str, Any] | None,
    ) -> None:
        assert self.plan is not None
        m = self.model
        params = self._prepare_stage(stage.stage, train=True)
        if tensors:
            self._load_tensors({**self.adapter_tensors(), **tensors})
        optimizer = torch.optim.AdamW(self._param_groups(params, stage), weight_decay=0.0, foreach=False)
        start = 0
        if resume is not None:
            if resume.optimizer is not None:
                optimizer.load_state_dict(resume.optimizer)
            restore_rng(resume.rng)
            start = resume.step
        else:
            torch.manual_seed(self.options.seed * 1009 + stage.stage + DROPOUT_SEED_OFFSET)  # dropout draws
        key = str(stage.stage)
        self.losses.setdefault(key, [])
        del self.losses[key][start:]
        if stage.stage == 1:
            pool = examples
            if self.plan.grad_checkpointing:
                m.llm.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
            m.llm.train()
            m.unit_decoder.eval()
        else:
            m.llm.eval()
            pool = [e for e in examples if e.units]
            states = {e.item_id: answer_states(m, e) for e in pool}
            m.unit_decoder.train()
        self.emit(
            {
                "event": "stage",
                "stage": stage.stage,
                "total_steps": stage.total_steps,
                "start_step": start,
                "examples": len(pool),
            }
        )
        step_time: float | None = None

        def checkpoint(done_steps: int, rng: dict[str, Any]) -> None:
            """The state after ``done_steps`` of this stage; at its end, the start of the next stage."""
            finished = done_steps == stage.total_steps
            state = TrainState(
                run_id,
                index + 1 if finished else index,
                0 if finished else done_steps,
                self.adapter_tensors(),
                None if finished else optimizer.state_dict(),
                rng,
                self.losses,
                eval_before,
            )
            path = save_checkpoint(self.train_dir, state)
            self.emit({"event": "checkpoint", "stage": stage.stage, "step": done_steps, "path": str(path)})

        for step in range(start, stage.total_steps):
            rng = rng_state()
            t0 = time.perf_counter()
            batches = [[pool[i] for i in mb] for mb in step_batches(len(pool), stage, step, self.options.seed)]
            denominator = sum(e.n_answer if stage.stage == 1 else len(e.units or ()) for b in batches for e in b)
            optimizer.zero_grad(set_to_none=True)
            total = 0.0
            for batch in batches:
                if self.should_stop():
                    optimizer.zero_grad(set_to_none=True)
                    checkpoint(step, rng)
                    raise Cancelled(
                        f"Training stopped at stage {stage.stage}, step {step}; resume with --resume.",
                        path=self.train_dir,
                    )
                if stage.stage == 1:
                    loss_sum, _ = stage1_loss_sum(m, batch)
                else:
                    loss_sum = sum(
                        (
                            stage2_loss_sum(m, states[e.item_id], e.units or (), self.plan.grad_checkpointing)
                            for e in batch
                        ),
                        torch.zeros((), device=m.device),
                    )
                (loss_sum / denominator).backward()
                total += float(loss_sum.detach())
            torch.nn.utils.clip_grad_norm_(list(params.values()), GRAD_CLIP_NORM, foreach=False)
            lr = lr_at(step, stage)
            for group in optimizer.param_groups:
                group["lr"] = lr * group["lr_scale"]
            optimizer.step()
            loss = total / max(1, denominator)
            self.losses[key].append(loss)
            elapsed = time.perf_counter() - t0
            step_time = elapsed if step_time is None else (1 - ETA_SMOOTHING) * step_time + ETA_SMOOTHING * elapsed
            self.emit(
                {
                    "event": "step",
                    "stage": stage.stage,
                    "step": step + 1,
                    "total_steps": stage.total_steps,
                    "loss": round(loss, 6),
                    "lr": lr,
                    "samples_per_s": round(stage.effective_batch / max(elapsed, 1e-9), 3),
                    "eta_s": round(step_time * (stage.total_steps - step - 1), 1),
                    "peak_memory_mb": peak_memory_mb(m.device),
                }
            )
            if not math.isfinite(loss):
                raise BadInput(
                    f"The training loss became {loss} at step {step + 1}.",
                    fix="Train again with a lower learning rate.",
                    reason=Reason.TRAINING_DIVERGED,
                    facts={"loss": str(loss), "step": step + 1},
                )
            if step + 1 == stage.total_steps or (step + 1) % stage.checkpoint_every == 0:
                checkpoint(step + 1, rng_state())
        if stage.stage == 1 and self.plan.grad_checkpointing:
            m.llm.gradient_checkpointing_disable()

    # --------------------------------------------------------------------------- evaluation

    def _evaluate(
        self, heldout: Sequence[DataItem], examples: Sequence[Example], plan: TrainPlan, before: dict[str, Any] | None
    ) -> dict[str, Any]:
        m = self.model
        stages = {s.stage for s in plan.stages}
        result: dict[str, Any] = {}
        options = self._conversation_options()
        if heldout and 1 in stages:
            result["answers"] = evaluate_answers(m, heldout, options, self.should_stop)
        if 2 in stages:
            result["units"] = evaluate_units(m, [e for e in examples if e.units], self.should_stop)
        previous = {r["question"]: r["answer"] for r in before["forget"]["questions"]} if before else None
        result["forget"] = forget_check(m, previous, self.should_stop)
        return result

    # ------------------------------------------------------------------------------ output

    def _meta(
        self,
        report: DataReport,
        plan: TrainPlan,
        run_id: dict[str, Any],
        prompts: PromptBuilder,
        before: dict[str, Any] | None,
        after: dict[str, Any] | None,
    ) -> AdapterMeta:
        stages = tuple(s.stage for s in plan.stages)
        spec = self._lora_spec()
        losses = {k: {"first": v[0], "last": v[-1], "steps": len(v)} for k, v in self.losses.items() if v}
        return AdapterMeta(
            base_fingerprint=run_id["base"],
            base_name=self.model_dir.name,
            llm_lora=replace(spec, dropout=0.0) if 1 in stages else None,
            unit_lora=replace(spec, dropout=0.0) if 2 in stages and plan.unit_mode == "lora" else None,
            has_projector=1 in stages,
            has_generator=2 in stages,
            system_prompt=prompts.options.system_prompt,
            stages=stages,
            created=now_iso(),
            engine_version=__version__,
            data=report.summary(),
            metrics={"before": before, "after": after, "loss": losses},
            options={**self.options.as_dict(), "plan": plan.as_dict()},
        )


def _plan_identity(plan: TrainPlan) -> dict[str, Any]:
    """The plan without what may differ between a run and its resume (free memory, notes)."""
    data = plan.as_dict()
    for key in ("memory_free_bytes", "memory_needed_bytes", "notes"):
        data.pop(key, None)
    return data
