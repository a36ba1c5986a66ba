"""What a run starts from, before any weights are loaded: the checked dataset with the model's
tokenizer and dimensions (``inspect_data``, also all that ``check`` needs), and stage 2's target
units (given by a manifest, or extracted from answer speech with mHuBERT + k-means)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.config import OFFICIAL_DIMS, OmniDims
from engine.errors import ModelIncompatible, ModelMissing
from engine.finetune.data import DataItem, DataReport, load_dataset, read_audio
from engine.finetune.examples import units_fit
from engine.finetune.plan import TYPICAL_PROMPT_TOKENS, TrainOptions, TrainPlan, plan_training
from engine.model.dims import read_dims
from engine.model.omni_config import OmniConfig, read_omni_config
from engine.model.tokens import TextTokenizer

UNIT_FILES_FIX = "Download the speech-unit model (python -m engine finetune fetch-units) or pass --hubert and --kmeans."
CHARS_PER_TOKEN = 4  # Llama-3's tokenizer on English, when no tokenizer is at hand


@dataclass(frozen=True, slots=True)
class DataInspection:
    report: DataReport
    config: OmniConfig | None
    dims: OmniDims | None
    tokenizer: TextTokenizer | None

    def text_tokens(self, text: str) -> int:
        if self.tokenizer is None:
            return max(1, len(text) // CHARS_PER_TOKEN)
        return count_tokens(self.tokenizer, text)

    def answer_tokens(self, item: DataItem) -> int:
        """The answer's tokens plus the closing <|eot_id|>."""
        return self.text_tokens(item.answer) + 1


def count_tokens(tokenizer: TextTokenizer, text: str) -> int:
    return len(tokenizer.encode(text.strip(), add_special_tokens=False))


def inspect_data(options: TrainOptions, *, require_model: bool) -> DataInspection:
    """Check the data; with a model folder, count tokens exactly and know its dimensions."""
    config = tokenizer = dims = None
    model_dir = options.model_dir
    if model_dir is not None and (require_model or Path(model_dir).exists()):
        config = read_omni_config(model_dir)
        tokenizer = TextTokenizer.load(
            model_dir,
            config_eos_ids=config.eos_token_ids,
            config_bos_id=config.bos_token_id,
            config_pad_id=config.pad_token_id,
        )
        dims = read_dims(model_dir, options.speech_encoder)
    report = load_dataset(
        options.data,
        count_tokens=(lambda text: count_tokens(tokenizer, text)) if tokenizer is not None else None,
        unit_vocab_size=config.unit_decoder.unit_vocab_size if config else None,
    )
    return DataInspection(report, config, dims, tokenizer)


def sequence_estimate(inspection: DataInspection, n_speech: int) -> tuple[int, int]:
    """(longest example in LLM positions, longest answer in tokens) over the usable items."""
    items = inspection.report.items
    if not items:
        return TYPICAL_PROMPT_TOKENS + n_speech, 1
    question = [n_speech if i.spoken else inspection.text_tokens(i.question_text or "") for i in items]
    answers = [inspection.answer_tokens(i) for i in items]
    return TYPICAL_PROMPT_TOKENS + max(q + a for q, a in zip(question, answers, strict=True)), max(answers)


def plan_for(
    options: TrainOptions,
    inspection: DataInspection,
    dims: OmniDims,
    *,
    device_type: str,
    free_bytes: int | None,
    cuda_bf16: bool,
    n_stage2: int,
    notes: list[str],
) -> TrainPlan:
    """``plan_training`` for this data: ``check`` (before any unit extraction, no weights) and ``run``."""
    seq_len, longest_answer = sequence_estimate(inspection, dims.n_speech_embeddings)
    return plan_training(
        options,
        dims,
        device_type=device_type,
        free_bytes=free_bytes,
        cuda_bf16=cuda_bf16,
        n_stage1=len(inspection.report.train_items) if options.stage in ("1", "both") else 0,
        n_stage2=n_stage2 if options.stage in ("2", "both") else 0,
        seq_len=seq_len,
        answer_tokens=longest_answer,
        notes=tuple(notes),
    )


def check_plan(options: TrainOptions, inspection: DataInspection) -> TrainPlan:
    """The defaults ``run`` would choose, from the data and the free memory, without loading weights
    (nor initialising CUDA: free VRAM comes from NVML). Without a model folder, the released 8B's
    dimensions stand in; bf16 is assumed (a GPU without it, Turing, gets fp16 compute in ``run``)."""
    import torch

    from engine.gpu import list_gpus
    from engine.model.memory import available_memory
    from engine.store import default_unit_model_paths

    dims = inspection.dims or OFFICIAL_DIMS
    device = str(options.device or "auto")
    gpus = list_gpus() if device == "auto" or device.startswith("cuda") else []
    device_type = "cuda" if gpus else "cpu"
    if gpus:
        index = int(device.split(":")[1]) if ":" in device else 0
        free = next((g.free_bytes for g in gpus if g.index == index), None)
    else:
        free = available_memory(torch.device("cpu"))
    train = inspection.report.train_items
    notes = []
    if inspection.dims is None:
        notes.append("no --model given: memory estimated for the released 8B model, token counts approximated")
    n_stage2 = sum(1 for i in train if i.units or i.answer_audio is not None)
    if options.stage in ("2", "both"):
        needs_units = any(i.answer_audio is not None and not i.units for i in train)
        have_units = (options.hubert and options.kmeans) or default_unit_model_paths().complete
        if not n_stage2:
            notes.append("stage 2 skipped: no answer speech (NAME.answer.wav) or units in the data")
        elif needs_units and not have_units:
            notes.append("answer speech needs the speech-unit model: run `python -m engine finetune fetch-units`")
    return plan_for(
        options,
        inspection,
        dims,
        device_type=device_type,
        free_bytes=free,
        cuda_bf16=True,
        n_stage2=n_stage2,
        notes=notes,
    )


def unit_targets(
    options: TrainOptions, inspection: DataInspection, items: list[DataItem], emit: Callable[[dict[str, Any]], None]
) -> tuple[dict[str, list[int]], list[str]]:
    """Stage-2 units per item id, and notes on what stage 2 leaves out and why."""
    if options.stage not in ("2", "both"):
        return {}, []
    assert inspection.config is not None
    decoder = inspection.config.unit_decoder
    notes: list[str] = []
    units: dict[str, list[int]] = {i.id: list(i.units) for i in items if i.units}
    need = [i for i in items if i.units is None and i.answer_audio is not None]
    if need:
        extractor = unit_extractor(options, required=options.stage == "2" and not units)
        if extractor is None:
            notes.append(
                f"{len(need)} answer recordings not turned into units: the speech-unit model is not downloaded "
                f"({UNIT_FILES_FIX})"
            )
        else:
            if extractor.n_units != decoder.unit_vocab_size:
                raise ModelIncompatible(
                    f"The k-means has {extractor.n_units} units; the model's decoder expects "
                    f"{decoder.unit_vocab_size}.",
                    fix=UNIT_FILES_FIX,
                )
            for n, item in enumerate(need, start=1):
                assert item.answer_audio is not None
                audio, rate, _channels = read_audio(item.answer_audio)
                units[item.id] = extractor.units(audio, sample_rate_hz=rate)
                emit({"event": "targets", "done": n, "total": len(need)})
    by_id = {i.id: i for i in items}
    for item_id in list(units):
        n_tokens = inspection.answer_tokens(by_id[item_id])
        if not units_fit(n_tokens, len(units[item_id]), decoder.upsample_factor):
            notes.append(
                f"{item_id}: {len(units[item_id])} speech units do not fit its {n_tokens}-token answer; "
                "stage 2 skips it"
            )
            del units[item_id]
    if not units:
        notes.append("stage 2 skipped: no answer speech or units")
    return units, notes


def unit_extractor(options: TrainOptions, *, required: bool) -> Any:
    """The mHuBERT + k-means extractor from ``--hubert/--kmeans`` or the downloaded files; None if
    they are absent and not ``required`` (stage 2 is then skipped, and the plan says why)."""
    from engine.finetune.units import UnitExtractor
    from engine.model.quant import resolve_device
    from engine.store import default_unit_model_paths

    paths = default_unit_model_paths()
    hubert, kmeans = options.hubert or paths.hubert, options.kmeans or paths.kmeans
    if not (Path(hubert).is_file() and Path(kmeans).is_file()):
        if required or options.hubert or options.kmeans:
            raise ModelMissing("The speech-unit model (mHuBERT + k-means) is missing.", path=hubert, fix=UNIT_FILES_FIX)
        return None
    return UnitExtractor.load(hubert, kmeans, device=resolve_device(options.device))
