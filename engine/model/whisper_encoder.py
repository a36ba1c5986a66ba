"""Whisper's audio encoder with openai-whisper's parameter names (``conv1``, ``blocks.i.attn.query``...).

Same network as ``whisper.model.AudioEncoder``: conv1 (k3) + GELU, conv2 (k3, stride 2) + GELU, the
sinusoidal ``positional_embedding`` buffer, ``n_audio_layer`` pre-LN blocks (``key`` has no bias),
``ln_post``. Like LLaMA-Omni, LayerNorm is a plain ``nn.LayerNorm`` running in the module's dtype
(openai-whisper upcasts to fp32; the reference swaps that out, and the checkpoint was trained so).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from engine.config import EncoderDims


class EncoderAttention(nn.Module):
    def __init__(self, n_state: int, n_head: int) -> None:
        super().__init__()
        self.n_head = n_head
        self.query = nn.Linear(n_state, n_state)
        self.key = nn.Linear(n_state, n_state, bias=False)
        self.value = nn.Linear(n_state, n_state)
        self.out = nn.Linear(n_state, n_state)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, T, n_state) -> (B, T, n_state), bidirectional attention."""
        B, T, C = x.shape
        shape = (B, T, self.n_head, C // self.n_head)
        q = self.query(x).view(shape).transpose(1, 2)
        k = self.key(x).view(shape).transpose(1, 2)
        v = self.value(x).view(shape).transpose(1, 2)
        y = F.scaled_dot_product_attention(q, k, v)
        return self.out(y.transpose(1, 2).reshape(B, T, C))


class EncoderBlock(nn.Module):
    def __init__(self, n_state: int, n_head: int) -> None:
        super().__init__()
        self.attn = EncoderAttention(n_state, n_head)
        self.attn_ln = nn.LayerNorm(n_state)
        self.mlp = nn.Sequential(nn.Linear(n_state, 4 * n_state), nn.GELU(), nn.Linear(4 * n_state, n_state))
        self.mlp_ln = nn.LayerNorm(n_state)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.attn_ln(x))
        return x + self.mlp(self.mlp_ln(x))


def sinusoids(length: int, channels: int, max_timescale: float = 10000.0) -> torch.Tensor:
    """openai-whisper's positional table: float32 (length, channels)."""
    log_timescale_increment = torch.log(torch.tensor(max_timescale)) / (channels // 2 - 1)
    inv_timescales = torch.exp(-log_timescale_increment * torch.arange(channels // 2))
    scaled_time = torch.arange(length)[:, None] * inv_timescales[None, :]
    return torch.cat([torch.sin(scaled_time), torch.cos(scaled_time)], dim=1)


class WhisperEncoder(nn.Module):
    def __init__(self, dims: EncoderDims) -> None:
        super().__init__()
        self.dims = dims
        d = dims.n_audio_state
        self.conv1 = nn.Conv1d(dims.n_mels, d, kernel_size=3, padding=1)
        self.conv2 = nn.Conv1d(d, d, kernel_size=3, stride=2, padding=1)
        self.register_buffer("positional_embedding", sinusoids(dims.n_audio_ctx, d))
        self.blocks = nn.ModuleList(EncoderBlock(d, dims.n_audio_head) for _ in range(dims.n_audio_layer))
        self.ln_post = nn.LayerNorm(d)

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        """mel: (B, n_mels, 2 * n_audio_ctx) -> (B, n_audio_ctx, n_audio_state)."""
        if mel.shape[-1] != self.dims.n_frames:
            raise ValueError(f"the encoder needs exactly {self.dims.n_frames} mel frames, got {mel.shape[-1]}")
        x = F.gelu(self.conv1(mel))
        x = F.gelu(self.conv2(x)).permute(0, 2, 1)
        x = x + self.get_buffer("positional_embedding").to(x.dtype)
        for block in self.blocks:
            x = block(x)
        return self.ln_post(x)


class SpeechAdapter(nn.Module):
    """LLaMA-Omni's ``EncoderProjectorConcat``: drop T % k, concat k frames, Linear-ReLU-Linear."""

    def __init__(self, encoder_dim: int, ds_rate: int, hidden_dim: int, llm_dim: int) -> None:
        super().__init__()
        self.k = ds_rate
        self.linear1 = nn.Linear(encoder_dim * ds_rate, hidden_dim)
        self.relu = nn.ReLU()
        self.linear2 = nn.Linear(hidden_dim, llm_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, T, encoder_dim) -> (B, T // k, llm_dim); frame-major concatenation."""
        B, T, C = x.shape
        n_keep = T - T % self.k
        x = x[:, :n_keep].contiguous().view(B, n_keep // self.k, C * self.k)
        return self.linear2(self.relu(self.linear1(x)))
