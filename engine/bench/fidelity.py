"""Fidelity of the memory savings: each per-part precision variant against a full-precision reference.

    python -m engine bench-fidelity [--device cpu|cuda] [--size tiny|mid] [--tokens 16] [--questions 5]

The same random-weight set is loaded once per variant (``OmniModel.load(parts=...)``); every
variant answers the benchmark's spoken questions (``questions.py``: espeak-ng, or a vowel signal)
greedily, and is compared with the reference (fp32 on the CPU, fp16 on CUDA) on:

- the speech embeddings (encoder + adapter): cosine similarity;
- the first answer token's logits: cosine similarity, and whether the top token is the same;
- the greedy answer: tokens equal to the reference's before the first difference (share of the
  answer), and whole answers identical; units likewise.

Random weights leave the logits' top two close together, so a small error flips a greedy token
far more often than with the trained model: compare variants with each other, not with zero.
"""

from __future__ import annotations

import argparse
import datetime
import gc
import shlex
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from engine.bench.questions import Question, make_questions
from engine.bench.report import Table, append_section, device_description, fmt, versions
from engine.bench.sizes import spec_for
from engine.config import DecodeOptions, QuantMode
from engine.gpu import error_summary
from engine.model.omni import OmniModel
from engine.model.precision import PartPrecision, part_precisions
from engine.tiny import write_tiny_set


@dataclass(frozen=True, slots=True)
class Variant:
    name: str
    quant: QuantMode
    parts: Callable[[PartPrecision], PartPrecision]  # from the policy's choice for ``quant``


def _same(p: PartPrecision) -> PartPrecision:
    return p


VARIANTS = (
    Variant("nf4 layers; lm_head, Whisper, adapter in 16/32 bit (before)", "nf4",
            lambda p: replace(p, head=p.compute, encoder_linears=p.encoder, adapter="fp32")),
    Variant("nf4 + int8 lm_head", "nf4", lambda p: replace(p, encoder_linears=p.encoder)),
    Variant("nf4 + int8 Whisper", "nf4", lambda p: replace(p, head=p.compute)),
    Variant("nf4 + int8 lm_head + int8 Whisper (the nf4 policy)", "nf4", _same),
    Variant("nf4 + nf4 lm_head + int8 Whisper", "nf4", lambda p: replace(p, head="nf4")),
    Variant("nf4 + int8 lm_head + nf4 Whisper", "nf4", lambda p: replace(p, encoder_linears="nf4")),
    Variant("int8 (the int8 policy)", "int8", _same),
)


@dataclass(frozen=True, slots=True)
class Answer:
    embedding: torch.Tensor  # (n_speech, llm_dim) float32 on the CPU
    first_logits: torch.Tensor  # (vocab,) float32 on the CPU
    tokens: tuple[int, ...]
    units: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class Row:
    name: str
    embedding_cos: float
    logit_cos: float
    top1_same: float  # share of questions
    token_prefix: float  # mean share of the answer equal to the reference before the first difference
    answers_same: float  # share of questions with the whole answer identical
    units_prefix: float
    load_s: float
    error: str | None = None  # the variant could not run here (the table says why)


def answer_all(model: OmniModel, questions: list[Question], n_tokens: int) -> list[Answer]:
    decode = DecodeOptions(max_new_tokens=n_tokens)
    answers = []
    for question in questions:
        chat = model.conversation()
        embedding = model.encode_speech(question.audio)
        ids = chat.system_ids + chat.prompts.speech_turn_ids()
        hidden = model.forward(model.build_embeds(ids, [embedding]), None)[0, -1]
        first = model.logits(hidden)
        done = list(chat.respond_speech(question.audio, decode=decode))[-1]
        answers.append(
            Answer(embedding.float().cpu(), first.float().cpu(), tuple(done.token_ids), tuple(done.units))  # type: ignore[union-attr]
        )
    return answers


def _cos(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(torch.nn.functional.cosine_similarity(a.flatten(), b.flatten(), dim=0))


def _prefix_share(got: tuple[int, ...], ref: tuple[int, ...]) -> float:
    n = 0
    for a, b in zip(got, ref, strict=False):
        if a != b:
            break
        n += 1
    return n / max(1, len(ref))


def compare(name: str, answers: list[Answer], reference: list[Answer], load_s: float) -> Row:
    pairs = list(zip(answers, reference, strict=True))
    return Row(
        name=name,
        embedding_cos=float(np.mean([_cos(a.embedding, r.embedding) for a, r in pairs])),
        logit_cos=float(np.mean([_cos(a.first_logits, r.first_logits) for a, r in pairs])),
        top1_same=float(np.mean([int(a.first_logits.argmax() == r.first_logits.argmax()) for a, r in pairs])),
        token_prefix=float(np.mean([_prefix_share(a.tokens, r.tokens) for a, r in pairs])),
        answers_same=float(np.mean([a.tokens == r.tokens for a, r in pairs])),
        units_prefix=float(np.mean([_prefix_share(a.units, r.units) for a, r in pairs])),
        load_s=load_s,
    )


def measure(
    omni: Path,
    speech_encoder: Path | None,
    questions: list[Question],
    *,
    device: str,
    n_tokens: int,
    variants: tuple[Variant, ...] = VARIANTS,
    say: Callable[[str], None] = lambda message: None,
) -> tuple[str, list[Row]]:
    """(reference name, one row per variant). Each model is released before the next loads."""
    cuda = device.startswith("cuda")
    reference_quant: QuantMode = "fp16" if cuda else "fp32"
    say(f"reference: {reference_quant}")
    ref_model = OmniModel.load(omni, speech_encoder, device=device, quant=reference_quant)
    reference = answer_all(ref_model, questions, n_tokens)
    del ref_model
    rows = []
    for variant in variants:
        say(f"variant: {variant.name}")
        policy = part_precisions(variant.quant, cuda=cuda, compute=_compute_name(variant.quant, device))
        started = time.perf_counter()
        try:
            model = OmniModel.load(
                omni, speech_encoder, device=device, quant=variant.quant, parts=variant.parts(policy)
            )
            load_s = time.perf_counter() - started
            rows.append(compare(variant.name, answer_all(model, questions, n_tokens), reference, load_s))
            del model
        except (RuntimeError, AssertionError, ValueError) as exc:  # e.g. bitsandbytes' CPU kernels and odd shapes
            rows.append(Row(variant.name, *(float("nan"),) * 6, load_s=0.0, error=error_summary(exc, 200)))
        gc.collect()
        if cuda:
            torch.cuda.empty_cache()
    return reference_quant, rows


def _compute_name(quant: QuantMode, device: str) -> str | None:
    """The compute dtype ``make_plan`` would choose, by name."""
    from engine.model.quant import make_plan, resolve_device

    plan = make_plan(quant, resolve_device(device))
    return plan.parts.compute


def fidelity_table(rows: list[Row]) -> Table:
    table = Table(
        [
            "variant",
            "speech embedding cos",
            "first-token logit cos",
            "top-1 same",
            "greedy tokens equal (share of answer)",
            "answers identical",
            "units equal (share)",
        ]
    )
    for row in rows:
        if row.error is not None:
            table.add(row.name, f"could not run here: {row.error}", *("-",) * 5)
            continue
        table.add(
            row.name,
            fmt(row.embedding_cos, 4),
            fmt(row.logit_cos, 4),
            f"{row.top1_same:.0%}",
            f"{row.token_prefix:.0%}",
            f"{row.answers_same:.0%}",
            f"{row.units_prefix:.0%}",
        )
    return table


def _command(args: argparse.Namespace) -> str:
    """The command as typed, or rebuilt from the parsed arguments."""
    if "bench-fidelity" in sys.argv:
        return "python -m engine " + shlex.join(sys.argv[1:])
    threads = f" --threads {args.threads}" if args.threads is not None else ""
    return (
        f"python -m engine bench-fidelity --device {args.device} --size {args.size} --tokens {args.tokens} "
        f"--questions {args.questions}{threads}"
    )


def run_fidelity(args: argparse.Namespace) -> int:
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="omnitalk-fidelity-") as tmp:
        spec = spec_for(args.size)
        paths = write_tiny_set(Path(tmp) / "set", args.seed, spec=spec, vocoder=False)
        questions, note = make_questions(Path(tmp) / "questions", args.questions)
        reference, rows = measure(
            paths.omni,
            paths.speech_encoder_pt,
            questions,
            device=device,
            n_tokens=args.tokens,
            say=lambda message: print(f"[fidelity] {message}", flush=True),
        )
    section = f"""
## Fidelity of the per-part precisions: {args.size} model on {device} ({datetime.date.today().isoformat()})

- Command: `{_command(args)}` (took {time.perf_counter() - started:.0f} s)
- Device: {device_description(device, torch.get_num_threads())}
- Versions: {versions()}
- Reference: {reference}; every variant answers the same {len(questions)} questions ({note}) greedily,
  {args.tokens} tokens; random weights, seed {args.seed}. Shares are means over the questions.

{fidelity_table(rows).markdown()}
"""
    print(section)
    if not args.no_append:
        append_section(args.out, section)
        print(f"appended to {args.out}")
    return 0
