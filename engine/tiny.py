"""``make-tiny``: random-weight LLaMA-Omni sets in the official file layouts, seeded and deterministic.

    DIR/omni/                      config.json (omni_speech2s_llama), generation_config.json,
                                   model-0000k-of-0000n.safetensors + model.safetensors.index.json,
                                   tokenizer.json, tokenizer_config.json, special_tokens_map.json
    DIR/speech_encoder/large-v3.pt openai-whisper checkpoint {"dims", "model_state_dict"} (encoder+decoder)
    DIR/whisper-large-v3/          optional: the same Whisper in Hugging Face layout
    DIR/vocoder/                   g_00500000 + config.json (engine.vocoder.checkpoint.write_tiny_vocoder)

``encoder_in_shards=True`` also stores the encoder as ``model.speech_encoder.*`` inside the shards,
as the official release does. The same seed gives the same bytes, and the same encoder weights in
every layout. ``TinySpec`` scales the set up for benchmarks.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from safetensors.torch import save_file

from engine.config import EncoderDims, RopeScaling
from engine.model.encoder_loading import SHARD_ENCODER_PREFIX, openai_to_hf_name
from engine.model.omni_config import OMNI_MODEL_TYPE
from engine.model.safetensors_io import INDEX_NAME
from engine.model.tokens import BOS_TEXT, END_OF_TEXT, EOT_TEXT
from engine.model.whisper_encoder import sinusoids
from engine.tiny_tokenizer import EOM_TEXT, build_tiny_tokenizer, write_tokenizer_files

WHISPER_PT_NAME = "large-v3.pt"
REFERENCE_ENCODER_PATH = "models/speech_encoder/large-v3.pt"  # what the official config says


@dataclass(frozen=True, slots=True)
class WhisperTextDims:
    """Decoder half of openai-whisper's ModelDimensions (kept tiny; the engine never runs it)."""

    n_vocab: int = 96
    n_text_ctx: int = 16
    n_text_head: int = 2
    n_text_layer: int = 1


@dataclass(frozen=True, slots=True)
class TinySpec:
    hidden: int = 64
    n_layers: int = 2
    n_heads: int = 4
    n_kv_heads: int = 2
    intermediate: int = 128
    vocab_size: int | None = None  # None: the tokenizer's size
    adapter_hidden: int = 32
    unit_layers: int = 2
    unit_dim: int = 64
    unit_heads: int = 4
    unit_ffn: int = 128
    upsample_factor: int = 25
    unit_vocab_size: int = 1000
    encoder: EncoderDims = field(default_factory=lambda: EncoderDims(128, 1500, 128, 2, 2))
    text: WhisperTextDims = field(default_factory=WhisperTextDims)
    ds_rate: int = 5
    n_shards: int = 3
    model_max_length: int = 2048
    rope: RopeScaling = field(default_factory=RopeScaling)
    rope_theta: float = 500000.0
    # Scale of the encoder's random conv weights. 1: activations O(1). Larger makes the random
    # encoder's output depend more on the audio than on its positional table, as a trained
    # Whisper's does (the fine-tuning tests need spoken questions a tiny model can tell apart).
    encoder_conv_gain: float = 1.0


@dataclass(frozen=True, slots=True)
class TinyPaths:
    root: Path
    omni: Path
    speech_encoder_pt: Path | None
    hf_encoder: Path | None
    vocoder: Path | None


class _Init:
    """Seeded tensors: fan-in scaled normals, so random activations stay O(1).

    ``device``: where the numbers are drawn (a GPU draws an 8B set in seconds; the CPU's stream and
    a GPU's differ for the same seed). Tensors are returned on that device.
    """

    def __init__(self, seed: int, device: str = "cpu") -> None:
        self.device = device
        self.gen = torch.Generator(device=device).manual_seed(seed)

    def normal(self, *shape: int, std: float) -> torch.Tensor:
        return torch.randn(*shape, generator=self.gen, device=self.device) * std

    def linear(self, out_f: int, in_f: int, gain: float = 1.0) -> torch.Tensor:
        return self.normal(out_f, in_f, std=gain / in_f**0.5)

    def norm(self, n: int) -> torch.Tensor:
        return 1.0 + self.normal(n, std=0.1)


def _llama_layer(
    init: _Init, prefix: str, d: int, n_q: int, n_kv: int, head_dim: int, ffn: int
) -> dict[str, torch.Tensor]:
    return {
        f"{prefix}self_attn.q_proj.weight": init.linear(n_q * head_dim, d),
        f"{prefix}self_attn.k_proj.weight": init.linear(n_kv * head_dim, d),
        f"{prefix}self_attn.v_proj.weight": init.linear(n_kv * head_dim, d),
        f"{prefix}self_attn.o_proj.weight": init.linear(d, n_q * head_dim),
        f"{prefix}mlp.gate_proj.weight": init.linear(ffn, d),
        f"{prefix}mlp.up_proj.weight": init.linear(ffn, d),
        f"{prefix}mlp.down_proj.weight": init.linear(d, ffn),
        f"{prefix}input_layernorm.weight": init.norm(d),
        f"{prefix}post_attention_layernorm.weight": init.norm(d),
    }


def _attn(init: _Init, prefix: str, d: int) -> dict[str, torch.Tensor]:
    return {
        f"{prefix}query.weight": init.linear(d, d),
        f"{prefix}query.bias": init.normal(d, std=0.02),
        f"{prefix}key.weight": init.linear(d, d),
        f"{prefix}value.weight": init.linear(d, d),
        f"{prefix}value.bias": init.normal(d, std=0.02),
        f"{prefix}out.weight": init.linear(d, d),
        f"{prefix}out.bias": init.normal(d, std=0.02),
    }


def _ln(init: _Init, prefix: str, d: int) -> dict[str, torch.Tensor]:
    return {f"{prefix}weight": init.norm(d), f"{prefix}bias": init.normal(d, std=0.02)}


def _mlp(init: _Init, prefix: str, d: int) -> dict[str, torch.Tensor]:
    return {
        f"{prefix}mlp.0.weight": init.linear(4 * d, d),
        f"{prefix}mlp.0.bias": init.normal(4 * d, std=0.02),
        f"{prefix}mlp.2.weight": init.linear(d, 4 * d),
        f"{prefix}mlp.2.bias": init.normal(d, std=0.02),
    }


def whisper_state_dict(
    enc: EncoderDims, text: WhisperTextDims, seed: int, conv_gain: float = 1.0, device: str = "cpu"
) -> dict[str, torch.Tensor]:
    """openai-whisper ``model_state_dict`` names (encoder + decoder), float16 on ``device``."""
    init = _Init(seed, device)
    d = enc.n_audio_state
    sd: dict[str, torch.Tensor] = {
        "encoder.conv1.weight": init.linear(d, enc.n_mels * 3, gain=conv_gain).view(d, enc.n_mels, 3),
        "encoder.conv1.bias": init.normal(d, std=0.02),
        "encoder.conv2.weight": init.linear(d, d * 3, gain=conv_gain).view(d, d, 3),
        "encoder.conv2.bias": init.normal(d, std=0.02),
        "encoder.positional_embedding": sinusoids(enc.n_audio_ctx, d).to(device),
    }
    for i in range(enc.n_audio_layer):
        p = f"encoder.blocks.{i}."
        sd |= (
            _attn(init, p + "attn.", d) | _ln(init, p + "attn_ln.", d) | _mlp(init, p, d) | _ln(init, p + "mlp_ln.", d)
        )
    sd |= _ln(init, "encoder.ln_post.", d)
    sd["decoder.token_embedding.weight"] = init.normal(text.n_vocab, d, std=0.02)
    sd["decoder.positional_embedding"] = init.normal(text.n_text_ctx, d, std=0.01)
    for i in range(text.n_text_layer):
        p = f"decoder.blocks.{i}."
        sd |= _attn(init, p + "attn.", d) | _ln(init, p + "attn_ln.", d)
        sd |= _attn(init, p + "cross_attn.", d) | _ln(init, p + "cross_attn_ln.", d)
        sd |= _mlp(init, p, d) | _ln(init, p + "mlp_ln.", d)
    sd |= _ln(init, "decoder.ln.", d)
    return {k: v.to(torch.float16).cpu().contiguous() for k, v in sd.items()}


def write_whisper_pt(path: Path, enc: EncoderDims, text: WhisperTextDims, state: dict[str, torch.Tensor]) -> Path:
    dims = {
        **asdict(enc),
        "n_vocab": text.n_vocab,
        "n_text_ctx": text.n_text_ctx,
        "n_text_state": enc.n_audio_state,
        "n_text_head": text.n_text_head,
        "n_text_layer": text.n_text_layer,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"dims": dims, "model_state_dict": state}, path)
    return path


def write_hf_whisper_folder(
    folder: Path, enc: EncoderDims, text: WhisperTextDims, state: dict[str, torch.Tensor]
) -> Path:
    """Hugging Face ``openai/whisper-*`` layout: config.json + model.safetensors with HF names."""
    folder.mkdir(parents=True, exist_ok=True)
    config = {
        "architectures": ["WhisperForConditionalGeneration"],
        "model_type": "whisper",
        "num_mel_bins": enc.n_mels,
        "max_source_positions": enc.n_audio_ctx,
        "d_model": enc.n_audio_state,
        "encoder_attention_heads": enc.n_audio_head,
        "encoder_layers": enc.n_audio_layer,
        "encoder_ffn_dim": 4 * enc.n_audio_state,
        "decoder_attention_heads": text.n_text_head,
        "decoder_layers": text.n_text_layer,
        "decoder_ffn_dim": 4 * enc.n_audio_state,
        "vocab_size": text.n_vocab,
        "max_target_positions": text.n_text_ctx,
        "activation_function": "gelu",
        "scale_embedding": False,
        "pad_token_id": 0,
        "bos_token_id": 1,
        "eos_token_id": 1,
        "decoder_start_token_id": 2,
        "begin_suppress_tokens": None,
        "suppress_tokens": None,
        "torch_dtype": "float16",
    }
    (folder / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True), encoding="utf-8")
    save_file(
        {openai_to_hf_name(k): v for k, v in state.items()},
        str(folder / "model.safetensors"),
        metadata={"format": "pt"},
    )
    return folder


def omni_tensor_groups(
    spec: TinySpec, vocab_size: int, seed: int, device: str = "cpu"
) -> Iterator[dict[str, torch.Tensor]]:
    """Llama + adapter + unit decoder under the official key names (float32 on ``device``), a layer
    at a time.

    The one definition of the random weights: ``omni_state_dict`` collects the groups, and the
    benchmark's full-size writer (``engine.bench.sizes``) streams them to shards without holding
    the whole model in memory; both give the same tensors for the same spec, seed and device.
    """
    init = _Init(seed + 1, device)
    d, head_dim = spec.hidden, spec.hidden // spec.n_heads
    yield {"model.embed_tokens.weight": init.normal(vocab_size, d, std=1.0)}
    for i in range(spec.n_layers):
        yield _llama_layer(init, f"model.layers.{i}.", d, spec.n_heads, spec.n_kv_heads, head_dim, spec.intermediate)
    yield {"model.norm.weight": init.norm(d)}
    yield {"lm_head.weight": init.linear(vocab_size, d, gain=3.0)}  # decisive logits: stable greedy picks
    enc_in = spec.encoder.n_audio_state * spec.ds_rate
    yield {
        "model.speech_projector.linear1.weight": init.linear(spec.adapter_hidden, enc_in),
        "model.speech_projector.linear1.bias": init.normal(spec.adapter_hidden, std=0.02),
        "model.speech_projector.linear2.weight": init.linear(d, spec.adapter_hidden),
        "model.speech_projector.linear2.bias": init.normal(d, std=0.02),
        "speech_generator.input_proj.weight": init.linear(spec.unit_dim, d),
        "speech_generator.input_proj.bias": init.normal(spec.unit_dim, std=0.02),
    }
    u_head = spec.unit_dim // spec.unit_heads
    for i in range(spec.unit_layers):
        yield _llama_layer(
            init,
            f"speech_generator.layers.{i}.",
            spec.unit_dim,
            spec.unit_heads,
            spec.unit_heads,
            u_head,
            spec.unit_ffn,
        )
    yield {
        "speech_generator.output_proj.weight": init.linear(spec.unit_vocab_size + 1, spec.unit_dim, gain=3.0),
        "speech_generator.output_proj.bias": init.normal(spec.unit_vocab_size + 1, std=0.1),
    }


def omni_state_dict(spec: TinySpec, vocab_size: int, seed: int) -> dict[str, torch.Tensor]:
    """Llama + adapter + unit decoder under the official key names, float16."""
    return {
        key: tensor.to(torch.float16).contiguous()
        for group in omni_tensor_groups(spec, vocab_size, seed)
        for key, tensor in group.items()
    }


def write_shards(folder: Path, state: dict[str, torch.Tensor], n_shards: int) -> None:
    """Split by bytes into ``model-0000k-of-0000n.safetensors`` + ``model.safetensors.index.json``."""
    keys = sorted(state)
    total = sum(state[k].numel() * state[k].element_size() for k in keys)
    per_shard = total / n_shards
    groups: list[list[str]] = [[] for _ in range(n_shards)]
    acc = 0
    for key in keys:
        groups[min(int(acc // per_shard), n_shards - 1)].append(key)
        acc += state[key].numel() * state[key].element_size()
    weight_map: dict[str, str] = {}
    for i, group in enumerate(g for g in groups if g):
        name = f"model-{i + 1:05d}-of-{n_shards:05d}.safetensors"
        save_file({k: state[k] for k in group}, str(folder / name), metadata={"format": "pt"})
        weight_map |= {k: name for k in group}
    index = {"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))}
    (folder / INDEX_NAME).write_text(json.dumps(index, indent=2), encoding="utf-8")


def write_omni_folder(
    folder: Path, spec: TinySpec, seed: int, encoder_state: dict[str, torch.Tensor] | None = None
) -> Path:
    """The Omni folder; ``encoder_state`` (openai names) is stored as ``model.speech_encoder.*`` if given."""
    folder.mkdir(parents=True, exist_ok=True)
    tok = build_tiny_tokenizer()
    write_tokenizer_files(folder, tok)
    vocab = max(tok.get_vocab_size(with_added_tokens=True), spec.vocab_size or 0)
    eos = [tok.token_to_id(t) for t in (END_OF_TEXT, EOM_TEXT, EOT_TEXT)]
    bos = tok.token_to_id(BOS_TEXT)
    state = omni_state_dict(spec, vocab, seed)
    if encoder_state is not None:
        state |= {
            SHARD_ENCODER_PREFIX + k[len("encoder.") :]: v for k, v in encoder_state.items() if k.startswith("encoder.")
        }
    write_shards(folder, state, spec.n_shards)
    rope = spec.rope
    config = {
        "_name_or_path": "tiny-omni",
        "architectures": ["OmniSpeech2SLlamaForCausalLM"],
        "attention_bias": False,
        "attention_dropout": 0.0,
        "bos_token_id": bos,
        "ctc_decoder_config": f"({spec.unit_layers},{spec.unit_dim},{spec.unit_heads},{spec.unit_ffn})",
        "ctc_loss_weight": 1.0,
        "ctc_upsample_factor": spec.upsample_factor,
        "eos_token_id": eos,
        "freeze_speech_projector": False,
        "hidden_act": "silu",
        "hidden_size": spec.hidden,
        "initializer_range": 0.02,
        "intermediate_size": spec.intermediate,
        "max_position_embeddings": 131072,
        "mlp_bias": False,
        "model_type": OMNI_MODEL_TYPE,
        "num_attention_heads": spec.n_heads,
        "num_hidden_layers": spec.n_layers,
        "num_key_value_heads": spec.n_kv_heads,
        "pretraining_tp": 1,
        "rms_norm_eps": 1e-05,
        "rope_scaling": {
            "factor": rope.factor,
            "high_freq_factor": rope.high_freq_factor,
            "low_freq_factor": rope.low_freq_factor,
            "original_max_position_embeddings": rope.original_max_position_embeddings,
            "rope_type": rope.rope_type,
        },
        "rope_theta": spec.rope_theta,
        "speech_encoder": REFERENCE_ENCODER_PATH,
        "speech_encoder_ds_rate": spec.ds_rate,
        "speech_encoder_hidden_size": spec.encoder.n_audio_state,
        "speech_encoder_type": "whisper",
        "speech_generator_type": "ctc",
        "speech_normalize": False,
        "speech_projector_lr": None,
        "speech_projector_type": "linear",
        "tie_word_embeddings": False,
        "tokenizer_model_max_length": spec.model_max_length,
        "tokenizer_padding_side": "right",
        "torch_dtype": "float16",
        "transformers_version": "4.43.4",
        "tune_speech_projector": False,
        "unit_vocab_size": spec.unit_vocab_size,
        "use_cache": True,
        "vocab_size": vocab,
    }
    generation = {
        "bos_token_id": bos,
        "do_sample": True,
        "eos_token_id": eos,
        "temperature": 0.6,
        "top_p": 0.9,
        "transformers_version": "4.43.4",
    }
    (folder / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True), encoding="utf-8")
    (folder / "generation_config.json").write_text(json.dumps(generation, indent=2, sort_keys=True), encoding="utf-8")
    return folder


def write_tiny_set(
    out_dir: str | Path,
    seed: int = 0,
    *,
    spec: TinySpec | None = None,
    encoder_in_shards: bool = False,
    pt_encoder: bool = True,
    hf_encoder: bool = False,
    vocoder: bool = True,
) -> TinyPaths:
    """Write a complete set under ``out_dir`` (see the module docstring for the layout)."""
    root = Path(out_dir)
    spec = spec or TinySpec()
    whisper = whisper_state_dict(spec.encoder, spec.text, seed, spec.encoder_conv_gain)
    omni = write_omni_folder(root / "omni", spec, seed, whisper if encoder_in_shards else None)
    pt = (
        write_whisper_pt(root / "speech_encoder" / WHISPER_PT_NAME, spec.encoder, spec.text, whisper)
        if pt_encoder
        else None
    )
    hf = write_hf_whisper_folder(root / "whisper-large-v3", spec.encoder, spec.text, whisper) if hf_encoder else None
    voc = None
    if vocoder:
        from engine.vocoder.checkpoint import write_tiny_vocoder

        voc = root / "vocoder"
        voc.mkdir(parents=True, exist_ok=True)
        write_tiny_vocoder(voc, seed=seed)
    return TinyPaths(root=root, omni=omni, speech_encoder_pt=pt, hf_encoder=hf, vocoder=voc)
