"""Random-weight model sets for the benchmark, in the official layouts: tiny, mid and full.

    tiny   engine.tiny's test set (Llama 2x64, Whisper 2x128) and the tiny vocoder
    mid    the 8B's layer ratio scaled down: Llama 32x512 (GQA 8/2, vocab 32000), unit decoder
           (2,512,8,1376), a Whisper-base-sized encoder (6x512); official-size vocoder
    full   the real dimensions: Llama-3.1-8B, Whisper-large-v3 encoder, the 425M-parameter unit
           decoder (2,4096,32,11008) and the official-size vocoder. GPU only: ~17 GB of fp16
           shards, written one shard at a time (``write_streamed_omni``) so the writer never
           holds more than one shard in RAM.

``spec_dims`` gives the dimensions the loader will read back from a set written from a spec, so
the full size's memory estimate can be shown on machines that cannot write it.
"""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from safetensors.torch import save_file

from engine.bench.report import millions
from engine.bench.settings import SIZES
from engine.config import (
    WHISPER_LARGE_V3,
    AdapterDims,
    EncoderDims,
    LlmDims,
    OmniDims,
    UnitDecoderDims,
)
from engine.errors import BadInput, DeviceUnavailable, DiskFull
from engine.model.safetensors_io import INDEX_NAME
from engine.tiny import (
    WHISPER_PT_NAME,
    TinyPaths,
    TinySpec,
    omni_tensor_groups,
    whisper_state_dict,
    write_omni_folder,
    write_tiny_set,
    write_whisper_pt,
)
from engine.tiny_tokenizer import build_tiny_tokenizer

logger = logging.getLogger(__name__)

LLAMA3_VOCAB_SIZE = 128_256
MID_ENCODER = EncoderDims(n_mels=128, n_audio_ctx=1500, n_audio_state=512, n_audio_head=8, n_audio_layer=6)
FULL_SPEC = TinySpec(
    hidden=4096,
    n_layers=32,
    n_heads=32,
    n_kv_heads=8,
    intermediate=14336,
    vocab_size=LLAMA3_VOCAB_SIZE,
    adapter_hidden=2048,
    unit_layers=2,
    unit_dim=4096,
    unit_heads=32,
    unit_ffn=11008,
    encoder=WHISPER_LARGE_V3,
    n_shards=4,
)
FULL_SHARD_BYTES = 5_000_000_000  # the release's four ~5 GB shards
FP16_BYTES = 2
# Free disk needed next to the full set's own bytes (the ONNX export of the vocoder, slack).
DISK_MARGIN_BYTES = 2_000_000_000
RMS_NORM_EPS = 1e-5  # what engine.tiny writes into config.json
MAX_POSITIONS = 131072

ProgressFn = Callable[[str], None]


def mid_spec(hidden: int = 512, layers: int = 32, encoder: EncoderDims | None = None) -> TinySpec:
    """The 8B model's proportions at width ``hidden``: GQA 4:1, FFN 3.5x, unit FFN 11008/4096 x."""
    heads = hidden // 64
    spec = TinySpec(
        hidden=hidden,
        n_layers=layers,
        n_heads=heads,
        n_kv_heads=max(1, heads // 4),
        intermediate=int(hidden * 3.5),
        vocab_size=32000,
        adapter_hidden=256,
        unit_layers=2,
        unit_dim=hidden,
        unit_heads=heads,
        unit_ffn=int(hidden * 11008 / 4096),
        n_shards=4,
    )
    return spec if encoder is None else replace(spec, encoder=encoder)


def tiny_vocab_size() -> int:
    return build_tiny_tokenizer().get_vocab_size(with_added_tokens=True)


def spec_vocab_size(spec: TinySpec) -> int:
    """The vocabulary engine.tiny writes for ``spec`` (at least the tiny tokenizer's)."""
    return max(tiny_vocab_size(), spec.vocab_size or 0)


def spec_dims(spec: TinySpec, vocab_size: int | None = None) -> OmniDims:
    """What ``engine.model.dims.read_dims`` reads back from a set written from ``spec``."""
    vocab = spec_vocab_size(spec) if vocab_size is None else vocab_size
    rope = spec.rope if spec.rope.rope_type == "llama3" else None
    llm = LlmDims(
        vocab_size=vocab,
        hidden_size=spec.hidden,
        intermediate_size=spec.intermediate,
        n_layers=spec.n_layers,
        n_heads=spec.n_heads,
        n_kv_heads=spec.n_kv_heads,
        head_dim=spec.hidden // spec.n_heads,
        max_position_embeddings=MAX_POSITIONS,
        rms_norm_eps=RMS_NORM_EPS,
        rope_theta=spec.rope_theta,
        rope_scaling=rope,
    )
    unit = UnitDecoderDims(
        n_layers=spec.unit_layers,
        dim=spec.unit_dim,
        n_heads=spec.unit_heads,
        ffn_dim=spec.unit_ffn,
        upsample_factor=spec.upsample_factor,
        unit_vocab_size=spec.unit_vocab_size,
        llm_dim=spec.hidden,
        rms_norm_eps=RMS_NORM_EPS,
        rope_theta=spec.rope_theta,
        rope_scaling=rope,
    )
    adapter = AdapterDims(
        encoder_dim=spec.encoder.n_audio_state,
        ds_rate=spec.ds_rate,
        hidden_dim=spec.adapter_hidden,
        llm_dim=spec.hidden,
    )
    return OmniDims(llm=llm, adapter=adapter, unit_decoder=unit, encoder=spec.encoder)


def full_dims() -> OmniDims:
    """LLaMA-Omni 8B's dimensions (Llama-3.1-8B, Whisper-large-v3, unit decoder (2,4096,32,11008))."""
    return spec_dims(FULL_SPEC, LLAMA3_VOCAB_SIZE)


def spec_for(size: str) -> TinySpec:
    if size == "tiny":
        return TinySpec()
    if size == "mid":
        return mid_spec(encoder=MID_ENCODER)
    if size == "full":
        return FULL_SPEC
    raise BadInput(f"Unknown size {size!r}; choose one of {', '.join(SIZES)}.")


def check_size_device(size: str, device: str) -> None:
    """Refuse what cannot run here before anything is written (full size on CPU, CUDA without a GPU)."""
    if size not in SIZES:
        raise BadInput(f"Unknown size {size!r}; choose one of {', '.join(SIZES)}.")
    if size == "full" and device != "cuda":
        raise BadInput(
            "--size full (Llama-3.1-8B + Whisper-large-v3 + the 425M unit decoder, random weights) runs only "
            "with --device cuda: it writes ~17 GB of shards and would need ~35 GB of RAM in fp32 on the CPU. "
            "On this machine use --size tiny or --size mid.",
            fix="Run `python -m engine bench --device cuda --size full` on an NVIDIA GPU.",
        )
    if device == "cuda" and not torch.cuda.is_available():
        raise DeviceUnavailable(
            "--device cuda was asked for, but PyTorch sees no CUDA GPU.",
            fix="Install the CUDA build of PyTorch and an NVIDIA driver, or use --device cpu.",
        )


# ---------------------------------------------------------------------------------- writing sets


@dataclass(frozen=True, slots=True)
class BenchSet:
    size: str
    paths: TinyPaths
    dims: OmniDims
    vocoder_kind: str  # "tiny" | "official size"
    seed: int

    def describe(self) -> str:
        llm, enc, unit, adapter = self.dims.llm, self.dims.encoder, self.dims.unit_decoder, self.dims.adapter
        return (
            f"Llama {llm.n_layers}x{llm.hidden_size} (GQA {llm.n_heads}/{llm.n_kv_heads}, FFN "
            f"{llm.intermediate_size}, vocab {llm.vocab_size}; {millions(llm.n_params)} params), Whisper encoder "
            f"{enc.n_audio_layer}x{enc.n_audio_state} ({millions(enc.n_params)}), adapter hidden "
            f"{adapter.hidden_dim}, unit decoder ({unit.n_layers},{unit.dim},{unit.n_heads},{unit.ffn_dim}) "
            f"λ={unit.upsample_factor} ({millions(unit.n_params)}); {self.vocoder_kind} unit HiFi-GAN; "
            f"random weights, seed {self.seed}"
        )


def full_set_bytes() -> int:
    """fp16 bytes of the full set's shards plus the Whisper checkpoint (for the disk check)."""
    dims = full_dims()
    llm = dims.llm.n_params + dims.adapter.n_params + dims.unit_decoder.n_params
    return (llm + dims.encoder.n_params) * FP16_BYTES


def write_bench_set(size: str, root: Path, seed: int = 0, progress: ProgressFn | None = None) -> BenchSet:
    """Write the ``size`` set under ``root`` (``omni/``, ``speech_encoder/``, ``vocoder/``)."""
    from engine.vocoder.checkpoint import write_official_size_vocoder

    say = progress or (lambda message: None)
    root = Path(root)
    spec = spec_for(size)
    if size == "tiny":
        say("writing the tiny model set")
        paths = write_tiny_set(root, seed, spec=spec, vocoder=True)
        return BenchSet(size, paths, spec_dims(spec), "tiny", seed)
    if size == "mid":
        say("writing the mid-size model set")
        paths = write_tiny_set(root, seed, spec=spec, vocoder=False)
    else:
        root.mkdir(parents=True, exist_ok=True)
        needed = full_set_bytes() + DISK_MARGIN_BYTES
        free = shutil.disk_usage(root).free
        if free < needed:
            raise DiskFull(
                f"The full-size set needs about {needed / 1e9:.0f} GB in {root}; {free / 1e9:.0f} GB is free.",
                path=root,
                fix="Pass --workdir on a disk with more room.",
            )
        say("writing the Whisper-large-v3-size encoder")
        whisper = whisper_state_dict(spec.encoder, spec.text, seed)
        pt = write_whisper_pt(root / "speech_encoder" / WHISPER_PT_NAME, spec.encoder, spec.text, whisper)
        del whisper
        omni = write_streamed_omni(root / "omni", spec, seed, shard_bytes=FULL_SHARD_BYTES, progress=say)
        paths = TinyPaths(root=root, omni=omni, speech_encoder_pt=pt, hf_encoder=None, vocoder=None)
    say("writing the official-size vocoder")
    vocoder = write_official_size_vocoder(root / "vocoder", seed=seed)
    paths = replace(paths, vocoder=vocoder)
    return BenchSet(size, paths, spec_dims(spec), "official size", seed)


def write_streamed_omni(
    folder: Path,
    spec: TinySpec,
    seed: int,
    *,
    shard_bytes: int,
    progress: ProgressFn | None = None,
    device: str = "cpu",
) -> Path:
    """An Omni folder like ``engine.tiny.write_omni_folder``'s, written a shard at a time.

    The tensors equal ``write_omni_folder``'s for the same spec and seed (the same random stream);
    only the split into shards differs. Peak RAM: one shard plus one float32 tensor. ``device``
    draws the numbers there (a GPU writes the 8B set in seconds; its random stream differs).
    """
    say = progress or (lambda message: None)
    folder = Path(folder)
    # engine.tiny builds config.json together with the whole state dict, which an 8B model cannot
    # hold at once: write the folder for a zero-layer twin, keep its config, tokenizer and
    # generation config, and fix the three fields that depend on the layers and the vocabulary.
    write_omni_folder(folder, replace(spec, n_layers=0, unit_layers=0, vocab_size=None, n_shards=1), seed)
    for stale in folder.glob("model-*.safetensors"):
        stale.unlink()
    (folder / INDEX_NAME).unlink()
    vocab = spec_vocab_size(spec)
    config_path = folder / "config.json"
    config = json.loads(config_path.read_text(encoding="utf-8"))
    config["num_hidden_layers"] = spec.n_layers
    config["ctc_decoder_config"] = f"({spec.unit_layers},{spec.unit_dim},{spec.unit_heads},{spec.unit_ffn})"
    config["vocab_size"] = vocab
    config_path.write_text(json.dumps(config, indent=2, sort_keys=True), encoding="utf-8")

    parts: list[list[str]] = []
    pending: dict[str, torch.Tensor] = {}
    pending_bytes = total = 0

    def flush() -> None:
        nonlocal pending, pending_bytes
        if not pending:
            return
        name = f"part-{len(parts):05d}.safetensors"
        save_file(pending, str(folder / name), metadata={"format": "pt"})
        parts.append(sorted(pending))
        say(f"wrote shard {len(parts)} ({pending_bytes / 1e9:.2f} GB, {total / 1e9:.1f} GB so far)")
        pending, pending_bytes = {}, 0

    for group in omni_tensor_groups(spec, vocab, seed, device):
        for key, tensor in group.items():
            half = tensor.to(torch.float16).cpu().contiguous()
            size = half.numel() * half.element_size()
            if pending and pending_bytes + size > shard_bytes:
                flush()
            pending[key] = half
            pending_bytes += size
            total += size
        del group
    flush()
    weight_map: dict[str, str] = {}
    for i, keys in enumerate(parts):
        name = f"model-{i + 1:05d}-of-{len(parts):05d}.safetensors"
        (folder / f"part-{i:05d}.safetensors").rename(folder / name)
        weight_map |= {k: name for k in keys}
    index = {"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))}
    (folder / INDEX_NAME).write_text(json.dumps(index, indent=2), encoding="utf-8")
    logger.info("wrote %d shards, %.2f GB, in %s", len(parts), total / 1e9, folder)
    return folder
