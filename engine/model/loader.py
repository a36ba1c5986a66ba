"""Load an Omni folder shard by shard straight into the target precision and device.

Order of work, so that every error surfaces before memory is spent:

1. ``config.json`` -> dims; tokenizer -> special ids; shard headers -> truncation/missing checks.
2. Locate the Whisper encoder (``encoder_loading``); dims of every part are now known (``dims``).
3. Pre-flight memory estimate against free (V)RAM (``NotEnoughMemory``).
4. Build every module on the meta device, compare expected names/shapes with the headers
   (missing key, shape mismatch -> ``ModelIncompatible``), swap linears for bitsandbytes ones
   (the layers, lm_head and Whisper's linears, as ``engine.model.precision`` says).
5. Read tensors one at a time (no mmap), convert/quantize onto the device, drop the CPU copy.

Host memory while loading is therefore about one tensor plus whatever the plan keeps on the host.

An allocation failure while loading (the pre-flight cannot see another program taking memory
meanwhile, or a per-process cap) becomes ``NotEnoughMemory`` with advice, after everything the
failed load allocated has been released (``_free_after_failure``).
"""

from __future__ import annotations

import dataclasses
import logging
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from transformers import LlamaForCausalLM

from engine.config import OmniDims
from engine.errors import EngineError, ModelIncompatible, NotEnoughMemory
from engine.gpu import error_summary, is_out_of_memory, release_cuda_cache
from engine.model.dims import ADAPTER_PREFIX, resolve_dims
from engine.model.encoder_loading import SHARD_ENCODER_PREFIX, EncoderCheckpoint, EncoderSource, open_encoder
from engine.model.llm import build_meta_llm, finalize_llm, llama_config
from engine.model.memory import MemoryEstimate, available_memory, check_fits, estimate_memory
from engine.model.omni_config import OmniConfig, read_omni_config
from engine.model.precision import QUANTIZED as QUANTIZED_KINDS
from engine.model.precision import PartPrecision
from engine.model.quant import (
    PrecisionPlan,
    assign_tensor,
    make_plan,
    meta_tensor_names,
    quantize_linears,
    quantized_linear,
    resolve_device,
    use_device,
)
from engine.model.safetensors_io import ShardSet, read_tensor
from engine.model.tokens import TextTokenizer
from engine.model.unit_decoder import UnitDecoder
from engine.model.whisper_encoder import SpeechAdapter, WhisperEncoder
from engine.preflight import default_quant

logger = logging.getLogger(__name__)

ProgressCallback = Callable[[float, str], None]
UNIT_DECODER_PREFIX = "speech_generator."
_PROGRESS_CONFIG = 0.02
_PROGRESS_SHARDS_START = 0.05
_PROGRESS_SHARDS_END = 0.85
_PROGRESS_ENCODER_END = 0.97


@dataclass
class OmniParts:
    """Everything ``OmniModel`` is made of, loaded and on its device."""

    config: OmniConfig
    dims: OmniDims
    plan: PrecisionPlan
    tokenizer: TextTokenizer
    llm: LlamaForCausalLM
    encoder: WhisperEncoder
    adapter: SpeechAdapter
    unit_decoder: UnitDecoder
    encoder_source: EncoderSource
    memory: MemoryEstimate
    context_tokens: int  # the context budget the estimate (and a static KV cache) is sized for
    load_s: float


def _progress(cb: ProgressCallback | None, fraction: float, message: str) -> None:
    logger.debug("load %.0f%%: %s", 100 * fraction, message)
    if cb is not None:
        cb(min(1.0, max(0.0, fraction)), message)


def _shapes(module: nn.Module, prefix: str) -> dict[str, tuple[int, ...]]:
    return {prefix + k: tuple(v.shape) for k, v in module.state_dict().items()}


def _check_encoder_shapes(encoder: WhisperEncoder, ckpt: EncoderCheckpoint) -> None:
    expected = _shapes(encoder, "")
    missing = sorted(set(expected) - set(ckpt.shapes))
    if missing:
        raise ModelIncompatible(
            f"The speech encoder lacks {len(missing)} weights (e.g. {missing[0]}).",
            path=ckpt.source.path,
            fix="Use the complete Whisper large-v3 checkpoint.",
        )
    for key, shape in expected.items():
        if ckpt.shapes[key] != shape:
            raise ModelIncompatible(
                f"Shape mismatch for speech encoder {key}: expected {shape}, found {ckpt.shapes[key]}.",
                path=ckpt.source.path,
                fix="Use Whisper large-v3 (the encoder this model was trained with).",
            )


def _check_special_ids(tokenizer: TextTokenizer, vocab_size: int, path: Path) -> None:
    s = tokenizer.special
    for name, token_id in (("bos", s.bos_id), ("eot", s.eot_id), ("pad", s.pad_id), *(("eos", e) for e in s.eos_ids)):
        if not 0 <= token_id < vocab_size:
            raise ModelIncompatible(
                f"The {name} token id {token_id} is outside the model's vocabulary ({vocab_size}).",
                path=path,
                fix="Use the tokenizer that came with the model.",
            )


def load_parts(
    model_dir: str | Path,
    speech_encoder: str | Path | None = None,
    *,
    device: str | torch.device | None = None,
    quant: str | None = None,
    on_progress: ProgressCallback | None = None,
    context_tokens: int | None = None,
    max_new_tokens: int = 512,
    parts: PartPrecision | None = None,
    vocoder_on_device: bool = True,
) -> OmniParts:
    """Load a model folder (see the module docstring). ``parts`` overrides the per-part precision
    policy; ``vocoder_on_device``: the pre-flight counts the vocoder on the same GPU."""
    dev = resolve_device(device)
    use_device(dev)
    try:
        return _load_parts(
            Path(model_dir),
            speech_encoder,
            dev,
            quant,
            on_progress,
            context_tokens,
            max_new_tokens,
            parts,
            vocoder_on_device,
        )
    except Exception as exc:
        if isinstance(exc, EngineError) or not is_out_of_memory(exc):
            raise
        detail = error_summary(exc)
        # The traceback holds the frames that hold the half-built model: drop them first.
        traceback.clear_frames(exc.__traceback__)
    _free_after_failure()
    where = "GPU memory" if dev.type == "cuda" else "RAM"
    raise NotEnoughMemory(
        f"Loading the model ran out of {where} ({detail}).",
        path=model_dir,
        fix="Close other programs that use the GPU, choose a smaller precision (nf4), or shorten the answer length.",
    )


def _free_after_failure() -> None:
    """Return what a failed load allocated: its objects are unreachable now, the CUDA cache is not."""
    release_cuda_cache()


def _load_parts(
    model_dir: Path,
    speech_encoder: str | Path | None,
    dev: torch.device,
    quant: str | None,
    on_progress: ProgressCallback | None,
    context_tokens: int | None,
    max_new_tokens: int,
    parts: PartPrecision | None,
    vocoder_on_device: bool,
) -> OmniParts:
    t0 = time.perf_counter()
    _progress(on_progress, 0.0, "Reading the model configuration")
    config = read_omni_config(model_dir)
    if quant is not None:
        make_plan(quant, dev, parts)  # an unknown or unsupported precision fails before the files are read
    tokenizer = TextTokenizer.load(
        model_dir,
        config_eos_ids=config.eos_token_ids,
        config_bos_id=config.bos_token_id,
        config_pad_id=config.pad_token_id,
    )
    _check_special_ids(tokenizer, config.llm.vocab_size, model_dir)
    _progress(on_progress, _PROGRESS_CONFIG, "Checking the weight files")
    shards = ShardSet.open(model_dir)
    enc_ckpt = open_encoder(model_dir, shards, config.speech_encoder, speech_encoder)
    dims = resolve_dims(config, shards, enc_ckpt.source)
    context_tokens = context_tokens or config.model_max_length
    free = available_memory(dev)
    if quant is None:  # the precision the app and the wizard call "recommended": one rule
        quant = default_quant(dims, dev.type, free, max_new_tokens=max_new_tokens, context_tokens=context_tokens)
        logger.info("precision %s chosen for %s (%s free)", quant, dev, free)
    plan = make_plan(quant, dev, parts)
    if config.llm.tie_word_embeddings:
        # The head shares the embedding table: it stays on the device, in the compute dtype.
        tied = dataclasses.replace(plan.parts, head=plan.parts.compute)
        plan = dataclasses.replace(plan, parts=tied, embed_on_host=False)

    memory = estimate_memory(
        dims,
        plan.quant,
        device_type=dev.type,
        context_tokens=context_tokens,
        max_new_tokens=max_new_tokens,
        parts=plan.parts,
        vocoder_on_device=vocoder_on_device,
    )
    check_fits(memory, free, context_allocated=dev.type == "cuda")

    llm = build_meta_llm(
        llama_config(config.llm, bos_id=tokenizer.special.bos_id, eos_ids=tuple(tokenizer.special.eos_ids))
    )
    with torch.device("meta"):
        adapter = SpeechAdapter(
            dims.adapter.encoder_dim, dims.adapter.ds_rate, dims.adapter.hidden_dim, dims.adapter.llm_dim
        )
        unit_decoder = UnitDecoder(dims.unit_decoder)
        encoder = WhisperEncoder(dims.encoder)
    expected = {**_shapes(llm, ""), **_shapes(adapter, ADAPTER_PREFIX), **_shapes(unit_decoder, UNIT_DECODER_PREFIX)}
    optional = frozenset({"lm_head.weight"}) if config.llm.tie_word_embeddings else frozenset()
    shards.check_expected(expected, optional=optional)
    _check_encoder_shapes(encoder, enc_ckpt)
    unexpected = [k for k in shards.entries if k not in expected and not k.startswith(SHARD_ENCODER_PREFIX)]
    if unexpected:
        logger.warning("ignoring %d unknown checkpoint keys, e.g. %s", len(unexpected), unexpected[0])

    quantize_linears(llm.model.layers, plan)
    quantize_linears(unit_decoder.layers, plan)
    quantize_linears(encoder.blocks, plan, plan.parts.encoder_linears)
    if plan.parts.head in QUANTIZED_KINDS:
        llm.lm_head = quantized_linear(llm.lm_head, plan, plan.parts.head)

    def placement(key: str) -> tuple[nn.Module, str, torch.device, torch.dtype]:
        if key.startswith(ADAPTER_PREFIX):
            return adapter, key[len(ADAPTER_PREFIX) :], dev, plan.adapter_dtype
        if key.startswith(UNIT_DECODER_PREFIX):
            return unit_decoder, key[len(UNIT_DECODER_PREFIX) :], dev, plan.compute_dtype
        if key == "model.embed_tokens.weight":
            return llm, key, plan.embed_device, plan.compute_dtype
        if key == "lm_head.weight":
            return llm, key, dev, plan.head_dtype
        return llm, key, dev, plan.compute_dtype

    wanted = set(expected) & set(shards.entries)
    total = max(1, sum(shards.entries[k].n_bytes for k in wanted))
    done = 0
    for shard, entries in shards.iter_shards(wanted):
        _progress(
            on_progress,
            _PROGRESS_SHARDS_START + (_PROGRESS_SHARDS_END - _PROGRESS_SHARDS_START) * done / total,
            f"Loading {shard.name}",
        )
        with shard.open("rb") as handle:
            for entry in entries:
                module, local, where, dtype = placement(entry.key)
                assign_tensor(module, local, read_tensor(entry, handle), where, dtype)
                done += entry.n_bytes
    finalize_llm(llm, dev)

    _progress(on_progress, _PROGRESS_SHARDS_END, f"Loading the speech encoder ({enc_ckpt.source.kind})")
    encoder_keys = set(encoder.state_dict())
    for name, tensor in enc_ckpt.iter_tensors():
        if name in encoder_keys:
            assign_tensor(encoder, name, tensor, dev, plan.encoder_dtype)
    _progress(on_progress, _PROGRESS_ENCODER_END, "Finishing")

    for part_name, part in (("llm", llm), ("adapter", adapter), ("unit decoder", unit_decoder), ("encoder", encoder)):
        left = meta_tensor_names(part)
        if left:
            raise ModelIncompatible(f"The {part_name} weights {left[:3]} were never loaded.", path=model_dir)
        part.eval().requires_grad_(False)

    load_s = time.perf_counter() - t0
    _progress(on_progress, 1.0, f"Loaded in {load_s:.1f} s ({plan.quant} on {dev})")
    return OmniParts(
        config=config,
        dims=dims,
        plan=plan,
        tokenizer=tokenizer,
        llm=llm,
        encoder=encoder,
        adapter=adapter,
        unit_decoder=unit_decoder,
        encoder_source=enc_ckpt.source,
        memory=memory,
        context_tokens=context_tokens,
        load_s=load_s,
    )
