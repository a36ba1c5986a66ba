"""LLaMA-Omni's CTC unit decoder (``SpeechGeneratorCTC``), run incrementally with its own KV cache.

Reference math (``speech_generator.py::predict``): hidden states (N, llm_dim) -> repeat each λ
times -> ``input_proj`` -> ``n_layers`` causal Llama decoder layers (RMSNorm, MHA with Llama-3.1
RoPE at positions 0..λN-1, SwiGLU MLP; no final norm) -> ``output_proj`` over units + blank ->
argmax -> CTC collapse (merge repeats, drop blank = ``unit_vocab_size``).

The layers are causal, so frame t never sees later frames: feeding λ new frames per text token
against a KV cache gives exactly the logits of a full recompute (``forward_full``) at O(N) cost
per answer instead of the reference streamer's O(N²). ``UnitStream`` keeps that cache plus the
CTC "previous label" so units that repeat across a token boundary are merged exactly as a
collapse over the whole sequence would.

Parameter names equal the checkpoint's ``speech_generator.*`` names.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
import torch.utils.checkpoint
from torch import nn

from engine.config import UnitDecoderDims
from engine.model.rope import apply_rope, rope_cos_sin, rope_inv_freq

MIN_CACHE_FRAMES = 256


class RMSNorm(nn.Module):
    """Llama RMSNorm (fp32 statistics, weight applied in the input dtype)."""

    def __init__(self, dim: int, eps: float) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dtype = x.dtype
        x32 = x.to(torch.float32)
        x32 = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * x32.to(dtype)


class KvBuffer:
    """Growable (B, H, capacity, head_dim) key/value storage; doubling keeps appends amortized O(1)."""

    def __init__(self, initial_capacity: int = MIN_CACHE_FRAMES) -> None:
        self.k: torch.Tensor | None = None
        self.v: torch.Tensor | None = None
        self.length = 0
        self.initial_capacity = max(MIN_CACHE_FRAMES, initial_capacity)

    def append(self, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """k, v: (B, H, T, head_dim) -> all keys/values so far (views, (B, H, length, head_dim))."""
        n_new = k.shape[2]
        needed = self.length + n_new
        if self.k is None or self.v is None or needed > self.k.shape[2]:
            capacity = max(self.initial_capacity, needed, 2 * (self.k.shape[2] if self.k is not None else 0))
            shape = (k.shape[0], k.shape[1], capacity, k.shape[3])
            new_k = k.new_empty(shape)
            new_v = v.new_empty(shape)
            if self.k is not None and self.v is not None and self.length:
                new_k[:, :, : self.length] = self.k[:, :, : self.length]
                new_v[:, :, : self.length] = self.v[:, :, : self.length]
            self.k, self.v = new_k, new_v
        self.k[:, :, self.length : needed] = k
        self.v[:, :, self.length : needed] = v
        self.length = needed
        return self.k[:, :, :needed], self.v[:, :, :needed]


class UnitAttention(nn.Module):
    def __init__(self, dim: int, n_heads: int) -> None:
        super().__init__()
        self.n_heads = n_heads
        self.q_proj = nn.Linear(dim, dim, bias=False)
        self.k_proj = nn.Linear(dim, dim, bias=False)
        self.v_proj = nn.Linear(dim, dim, bias=False)
        self.o_proj = nn.Linear(dim, dim, bias=False)

    def forward(
        self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, kv: KvBuffer | None = None
    ) -> torch.Tensor:
        """x: (B, T, dim) new frames; cos/sin: (T, head_dim) at their positions -> (B, T, dim)."""
        B, T, C = x.shape
        shape = (B, T, self.n_heads, C // self.n_heads)
        q = apply_rope(self.q_proj(x).view(shape).transpose(1, 2), cos, sin)
        k = apply_rope(self.k_proj(x).view(shape).transpose(1, 2), cos, sin)
        v = self.v_proj(x).view(shape).transpose(1, 2)
        past = kv.length if kv is not None else 0
        if kv is not None:
            k, v = kv.append(k, v)
        if past == 0:
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        else:
            # is_causal aligns the mask top-left; with a cache the queries sit at the end.
            q_pos = torch.arange(past, past + T, device=x.device)
            mask = torch.arange(past + T, device=x.device)[None, :] <= q_pos[:, None]
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        return self.o_proj(y.transpose(1, 2).reshape(B, T, C))


class UnitMLP(nn.Module):
    def __init__(self, dim: int, ffn_dim: int) -> None:
        super().__init__()
        self.gate_proj = nn.Linear(dim, ffn_dim, bias=False)
        self.up_proj = nn.Linear(dim, ffn_dim, bias=False)
        self.down_proj = nn.Linear(ffn_dim, dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class UnitDecoderLayer(nn.Module):
    """A Llama decoder layer (pre-norm attention + SwiGLU), the math of HF ``LlamaDecoderLayer``."""

    def __init__(self, dims: UnitDecoderDims) -> None:
        super().__init__()
        self.self_attn = UnitAttention(dims.dim, dims.n_heads)
        self.mlp = UnitMLP(dims.dim, dims.ffn_dim)
        self.input_layernorm = RMSNorm(dims.dim, dims.rms_norm_eps)
        self.post_attention_layernorm = RMSNorm(dims.dim, dims.rms_norm_eps)

    def forward(
        self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, kv: KvBuffer | None = None
    ) -> torch.Tensor:
        x = x + self.self_attn(self.input_layernorm(x), cos, sin, kv)
        return x + self.mlp(self.post_attention_layernorm(x))


@dataclass
class UnitDecoderCache:
    """Per-layer KV of the frames decoded so far in this answer."""

    layers: list[KvBuffer]
    n_frames: int = 0


class UnitDecoder(nn.Module):
    def __init__(self, dims: UnitDecoderDims) -> None:
        super().__init__()
        self.dims = dims
        self.input_proj = nn.Linear(dims.llm_dim, dims.dim)
        self.layers = nn.ModuleList(UnitDecoderLayer(dims) for _ in range(dims.n_layers))
        self.output_proj = nn.Linear(dims.dim, dims.unit_vocab_size + 1)
        self._inv_freq: torch.Tensor | None = None  # built on first use (the module may start on meta)

    def _rope(self, start: int, n: int, device: torch.device, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        if self._inv_freq is None or self._inv_freq.device != device:
            self._inv_freq = rope_inv_freq(self.dims.head_dim, self.dims.rope_theta, self.dims.rope_scaling).to(device)
        return rope_cos_sin(self._inv_freq, torch.arange(start, start + n, device=device), dtype)

    def _frames(self, states: torch.Tensor) -> torch.Tensor:
        """states: (N, llm_dim) -> (1, N * λ, dim). Projecting before repeating is the same per frame."""
        x = self.input_proj(states.to(self.input_proj.weight.dtype))
        first: UnitDecoderLayer = self.layers[0]  # type: ignore[assignment]
        x = x.to(first.input_layernorm.weight.dtype)  # fine-tuning keeps input_proj in fp32
        return x.repeat_interleave(self.dims.upsample_factor, dim=0).unsqueeze(0)

    def _head(self, x: torch.Tensor) -> torch.Tensor:
        return self.output_proj(x[0].to(self.output_proj.weight.dtype)).float()

    def new_cache(self, max_tokens: int = 0) -> UnitDecoderCache:
        """``max_tokens``: expected answer length, so the KV buffers are allocated once."""
        frames = max_tokens * self.dims.upsample_factor
        return UnitDecoderCache(layers=[KvBuffer(frames) for _ in self.layers])

    def forward_full(self, states: torch.Tensor, *, checkpoint_layers: bool = False) -> torch.Tensor:
        """Reference ``predict`` (no cache): states (N, llm_dim) -> float32 logits (N * λ, units + 1).

        ``checkpoint_layers`` (training): recompute each layer's activations in the backward pass.
        """
        x = self._frames(states)
        cos, sin = self._rope(0, x.shape[1], x.device, x.dtype)
        for layer in self.layers:
            if checkpoint_layers and torch.is_grad_enabled():
                x = torch.utils.checkpoint.checkpoint(layer, x, cos, sin, use_reentrant=False)
            else:
                x = layer(x, cos, sin)
        return self._head(x)

    def forward_step(self, states: torch.Tensor, cache: UnitDecoderCache) -> torch.Tensor:
        """The next n text tokens' states (n, llm_dim) -> float32 logits of their n * λ new frames."""
        x = self._frames(states)
        cos, sin = self._rope(cache.n_frames, x.shape[1], x.device, x.dtype)
        for layer, kv in zip(self.layers, cache.layers, strict=True):
            x = layer(x, cos, sin, kv)
        cache.n_frames += x.shape[1]
        return self._head(x)


def ctc_collapse(labels: Sequence[int], blank: int) -> list[int]:
    """Merge consecutive repeats, then drop blanks (``ctc_postprocess`` of the reference)."""
    out: list[int] = []
    prev: int | None = None
    for label in labels:
        if label != prev and label != blank:
            out.append(label)
        prev = label
    return out


@dataclass
class CtcCollapser:
    """Streaming ``ctc_collapse``: remembers the last frame label across calls."""

    blank: int
    prev: int | None = None

    def push(self, labels: Sequence[int]) -> list[int]:
        out: list[int] = []
        for label in labels:
            if label != self.prev and label != self.blank:
                out.append(label)
            self.prev = label
        return out

    def reset(self) -> None:
        self.prev = None


@dataclass
class UnitStream:
    """Units of one answer, produced as the LLM emits text tokens."""

    decoder: UnitDecoder
    max_tokens: int = 0  # capacity hint for the KV cache
    cache: UnitDecoderCache = field(init=False)
    collapser: CtcCollapser = field(init=False)
    units: list[int] = field(default_factory=list)
    n_states: int = 0

    def __post_init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.cache = self.decoder.new_cache(self.max_tokens)
        self.collapser = CtcCollapser(self.decoder.dims.blank_id)
        self.units = []
        self.n_states = 0

    @torch.inference_mode()
    def push(self, states: torch.Tensor) -> list[int]:
        """states: (n, llm_dim), the hidden states that produced the next n text tokens -> new units."""
        return self.accept(self.frame_labels(states).tolist())

    @torch.inference_mode()
    def frame_labels(self, states: torch.Tensor) -> torch.Tensor:
        """Decode the next n tokens' states (n, llm_dim) -> their frames' argmax labels, int64
        (n * λ,) on the device, not yet read back; pass them (as a list) to ``accept``."""
        labels = self.decoder.forward_step(states, self.cache).argmax(dim=-1)
        self.n_states += states.shape[0]
        return labels

    def accept(self, labels: Sequence[int]) -> list[int]:
        """Frame labels from ``frame_labels``, read back -> the units they add (CTC collapse)."""
        new = self.collapser.push(labels)
        self.units.extend(new)
        return new


@torch.inference_mode()
def units_offline(decoder: UnitDecoder, states: torch.Tensor) -> list[int]:
    """The reference's offline path: one full pass over all N states, then collapse."""
    labels = decoder.forward_full(states).argmax(dim=-1).tolist()
    return ctc_collapse(labels, decoder.dims.blank_id)


@torch.inference_mode()
def units_recompute_stream(decoder: UnitDecoder, states: torch.Tensor) -> list[list[int]]:
    """The reference streamer (O(N²)): after each token, recompute everything, emit the new tail.

    Returns the units emitted at each of the N steps. Used by tests and the benchmark baseline.
    """
    emitted: list[int] = []
    per_step: list[list[int]] = []
    for t in range(1, states.shape[0] + 1):
        units = units_offline(decoder, states[:t])
        per_step.append(units[len(emitted) :])
        emitted = units
    return per_step
