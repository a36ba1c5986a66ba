"""The unit decoder: HF-equivalent layer math, llama3 RoPE, incremental == full recompute, CTC."""

from __future__ import annotations

import pytest
import torch
from transformers import LlamaConfig
from transformers.models.llama.modeling_llama import LlamaDecoderLayer, LlamaRotaryEmbedding

from engine.config import RopeScaling, UnitDecoderDims
from engine.model.rope import rope_cos_sin, rope_inv_freq
from engine.model.unit_decoder import (
    CtcCollapser,
    KvBuffer,
    UnitDecoder,
    UnitDecoderLayer,
    UnitStream,
    ctc_collapse,
    units_offline,
    units_recompute_stream,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")

LLAMA31_ROPE = RopeScaling("llama3", 8.0, 1.0, 4.0, 8192)


def _hf_config(dim: int, heads: int, ffn: int, theta: float = 500000.0) -> LlamaConfig:
    return LlamaConfig(
        hidden_size=dim,
        intermediate_size=ffn,
        num_attention_heads=heads,
        num_key_value_heads=heads,
        num_hidden_layers=1,
        rms_norm_eps=1e-5,
        rope_parameters={
            "rope_type": "llama3",
            "rope_theta": theta,
            "factor": 8.0,
            "low_freq_factor": 1.0,
            "high_freq_factor": 4.0,
            "original_max_position_embeddings": 8192,
        },
        attn_implementation="eager",
    )


def _dims(dim: int = 64, heads: int = 4, ffn: int = 96, layers: int = 2, upsample: int = 5) -> UnitDecoderDims:
    return UnitDecoderDims(layers, dim, heads, ffn, upsample, 50, 48, 1e-5, 500000.0, LLAMA31_ROPE)


def test_llama3_inv_freq_equals_transformers_for_the_real_head_dim() -> None:
    rot = LlamaRotaryEmbedding(_hf_config(4096, 32, 11008))
    ours = rope_inv_freq(128, 500000.0, LLAMA31_ROPE)
    torch.testing.assert_close(ours, rot.inv_freq, rtol=0, atol=0)
    plain = rope_inv_freq(128, 500000.0, None)
    assert not torch.allclose(ours, plain)  # the scaling really changes the low frequencies
    assert torch.equal(ours[:8], plain[:8])  # ... and leaves the high ones alone


def test_our_layer_equals_transformers_llama_decoder_layer() -> None:
    torch.manual_seed(0)
    dims = _dims()
    cfg = _hf_config(dims.dim, dims.n_heads, dims.ffn_dim)
    hf_layer = LlamaDecoderLayer(cfg, layer_idx=0).eval()
    for p in hf_layer.parameters():  # non-trivial norm weights too
        p.data.normal_(0.0, 0.2 if p.ndim == 2 else 1.0)
    ours = UnitDecoderLayer(dims).eval()
    ours.load_state_dict(hf_layer.state_dict())  # same parameter names as the checkpoint
    T, start = 40, 9000  # positions past 8192: where llama3 scaling matters
    x = torch.randn(1, T, dims.dim)
    pos = torch.arange(start, start + T)
    cos_hf, sin_hf = LlamaRotaryEmbedding(cfg)(x, pos[None])
    causal = torch.full((T, T), float("-inf")).triu(1)[None, None]
    with torch.no_grad():
        ref = hf_layer(x, attention_mask=causal, position_embeddings=(cos_hf, sin_hf), position_ids=pos[None])
        cos, sin = rope_cos_sin(rope_inv_freq(dims.head_dim, dims.rope_theta, dims.rope_scaling), pos, x.dtype)
        got = ours(x, cos, sin)
    torch.testing.assert_close(cos, cos_hf[0])
    torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-5)
    # Causality: changing the last frame leaves every earlier output untouched.
    x2 = x.clone()
    x2[:, -1] += 1.0
    with torch.no_grad():
        got2 = ours(x2, cos, sin)
    torch.testing.assert_close(got2[:, :-1], got[:, :-1])
    assert not torch.allclose(got2[:, -1], got[:, -1])


@pytest.mark.parametrize("chunks", [[1] * 9, [2, 3, 1, 3], [9]])
def test_incremental_logits_equal_full_recompute(chunks: list[int]) -> None:
    torch.manual_seed(1)
    dec = UnitDecoder(_dims()).eval()
    states = torch.randn(sum(chunks), 48)
    with torch.no_grad():
        full = dec.forward_full(states)
        cache = dec.new_cache()
        parts, i = [], 0
        for n in chunks:
            parts.append(dec.forward_step(states[i : i + n], cache))
            i += n
    inc = torch.cat(parts)
    assert inc.shape == full.shape == (9 * 5, 51)
    assert cache.n_frames == 45
    torch.testing.assert_close(inc, full, rtol=1e-5, atol=1e-5)


def test_stream_units_equal_offline_and_reference_recompute(tiny_omni_model) -> None:
    dec = tiny_omni_model.unit_decoder
    gen = torch.Generator().manual_seed(3)
    states = torch.randn(12, dec.dims.llm_dim, generator=gen)
    stream = UnitStream(dec, max_tokens=4)  # smaller than the answer: the KV buffers must grow
    per_token = [stream.push(states[i : i + 1]) for i in range(12)]
    offline = units_offline(dec, states)
    reference = units_recompute_stream(dec, states)
    assert len(offline) > 12  # a real unit sequence, not all blanks
    assert [u for step in per_token for u in step] == offline == stream.units
    assert per_token == reference  # same units emitted at the same token steps as the O(N²) streamer
    assert all(0 <= u < dec.dims.unit_vocab_size for u in offline)


def test_ctc_collapse_merges_repeats_and_drops_blank() -> None:
    blank = 9
    assert ctc_collapse([1, 1, 9, 1, 2, 2, 9, 9, 3], blank) == [1, 1, 2, 3]
    assert ctc_collapse([9, 9], blank) == []
    collapser = CtcCollapser(blank)
    # A run of 4 split across token boundaries is still one unit; blank separates true repeats.
    assert collapser.push([4]) + collapser.push([4, 4, 5]) + collapser.push([5, 9, 5]) == [4, 5, 5]


def test_kv_buffer_growth_keeps_contents() -> None:
    buf = KvBuffer(initial_capacity=0)
    ks = [torch.randn(1, 2, n, 4) for n in (100, 200, 300)]
    for k in ks:
        k_all, v_all = buf.append(k, -k)
    expected = torch.cat(ks, dim=2)
    assert buf.length == 600 and buf.k is not None and buf.k.shape[2] >= 600
    assert torch.equal(k_all, expected) and torch.equal(v_all, -expected)
