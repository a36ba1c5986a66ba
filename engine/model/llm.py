"""The Llama LLM: transformers' ``LlamaForCausalLM`` built from our dims (no remote code).

The model is created on the meta device (no memory), its linears optionally swapped for
bitsandbytes layers, then filled tensor by tensor by the loader. Non-persistent buffers (RoPE
``inv_freq``) are not in checkpoints, so ``finalize_llm`` rebuilds the rotary module on the device.
"""

from __future__ import annotations

import torch
from transformers import LlamaConfig, LlamaForCausalLM
from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding

from engine.config import LlmDims

ATTN_IMPLEMENTATION = "sdpa"  # works on CPU and every CUDA GPU; flash-attn is not required


def llama_config(dims: LlmDims, *, bos_id: int | None = None, eos_ids: tuple[int, ...] = ()) -> LlamaConfig:
    rope: dict[str, float | int | str] = {"rope_type": "default", "rope_theta": dims.rope_theta}
    if dims.rope_scaling is not None:
        s = dims.rope_scaling
        rope = {
            "rope_type": s.rope_type,
            "rope_theta": dims.rope_theta,
            "factor": s.factor,
            "low_freq_factor": s.low_freq_factor,
            "high_freq_factor": s.high_freq_factor,
            "original_max_position_embeddings": s.original_max_position_embeddings,
        }
    config = LlamaConfig(
        vocab_size=dims.vocab_size,
        hidden_size=dims.hidden_size,
        intermediate_size=dims.intermediate_size,
        num_hidden_layers=dims.n_layers,
        num_attention_heads=dims.n_heads,
        num_key_value_heads=dims.n_kv_heads,
        head_dim=dims.head_dim,
        max_position_embeddings=dims.max_position_embeddings,
        rms_norm_eps=dims.rms_norm_eps,
        rope_parameters=rope,
        tie_word_embeddings=dims.tie_word_embeddings,
        bos_token_id=bos_id,
        eos_token_id=list(eos_ids) or None,
        hidden_act="silu",
        attention_bias=False,
        mlp_bias=False,
    )
    config._attn_implementation = ATTN_IMPLEMENTATION
    return config


def build_meta_llm(config: LlamaConfig) -> LlamaForCausalLM:
    """An empty ``LlamaForCausalLM`` whose tensors live on the meta device."""
    with torch.device("meta"):
        model = LlamaForCausalLM(config)
    return model.eval().requires_grad_(False)


def finalize_llm(model: LlamaForCausalLM, device: torch.device) -> None:
    """Recreate RoPE buffers on ``device`` and re-tie the head if the config ties it."""
    model.model.rotary_emb = LlamaRotaryEmbedding(config=model.config).to(device)
    if model.config.tie_word_embeddings:
        model.lm_head.weight = model.model.embed_tokens.weight
