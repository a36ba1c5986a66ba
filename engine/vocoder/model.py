"""fairseq's ``CodeGenerator`` (unit HiFi-GAN with a duration predictor) in plain PyTorch.

Module and parameter names match the official ``g_00500000`` state dict exactly (``dict``,
``dur_predictor.conv1.0``, ``ups.3``, ``resblocks.14.convs2.2``, ``conv_post``...), so the checkpoint
loads with ``load_state_dict(strict=True)`` once its weight norm is folded (see ``checkpoint.py``).
The convolutions here are plain ``Conv1d``/``ConvTranspose1d``: weight norm is a training-time
reparametrisation and is folded into ``weight`` at load time, as fairseq's ``remove_weight_norm()`` does.

The forward pass is split in two so that streaming can run each half on its own window:

* ``durations(units)``: embedding -> VariancePredictor -> ``clamp(round(exp(x) - 1), min=1)``
* ``generate(frame_units)``: embedding of units already repeated by their durations -> HiFi-GAN.

Embedding then repeating equals repeating the ids then embedding, so ``generate`` takes ids.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from engine.vocoder.config import DURATION_CONV2_PADDING, PRE_POST_KERNEL, VocoderConfig

LRELU_SLOPE = 0.1
# fairseq's Generator calls F.leaky_relu(x) with the default slope before conv_post.
FINAL_LRELU_SLOPE = 0.01
MIN_DURATION_FRAMES = 1


def get_padding(kernel: int, dilation: int = 1) -> int:
    """fairseq's 'same' padding for an odd kernel: (k*d - d) // 2."""
    return (kernel * dilation - dilation) // 2


class DurationPredictor(nn.Module):
    """FastSpeech2 ``VariancePredictor`` as fairseq builds it; predicts log(1 + duration)."""

    def __init__(self, config: VocoderConfig) -> None:
        super().__init__()
        dims = config.duration
        self.conv1 = nn.Sequential(
            nn.Conv1d(
                dims.encoder_embed_dim,
                dims.var_pred_hidden_dim,
                dims.var_pred_kernel_size,
                padding=(dims.var_pred_kernel_size - 1) // 2,
            ),
            nn.ReLU(),
        )
        self.ln1 = nn.LayerNorm(dims.var_pred_hidden_dim)
        self.conv2 = nn.Sequential(
            nn.Conv1d(
                dims.var_pred_hidden_dim,
                dims.var_pred_hidden_dim,
                dims.var_pred_kernel_size,
                padding=DURATION_CONV2_PADDING,
            ),
            nn.ReLU(),
        )
        self.ln2 = nn.LayerNorm(dims.var_pred_hidden_dim)
        self.proj = nn.Linear(dims.var_pred_hidden_dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: float32 (B, T, C) -> log(1 + duration): float32 (B, T). Dropout is inference-off."""
        x = self.conv1(x.transpose(1, 2)).transpose(1, 2)
        x = self.ln1(x)
        x = self.conv2(x.transpose(1, 2)).transpose(1, 2)
        x = self.ln2(x)
        return self.proj(x).squeeze(2)


class ResBlock1(nn.Module):
    """fairseq/HiFi-GAN ResBlock type 1: three (dilated conv, conv) pairs with residuals."""

    def __init__(self, channels: int, kernel: int, dilations: tuple[int, ...]) -> None:
        super().__init__()
        self.convs1 = nn.ModuleList(
            nn.Conv1d(channels, channels, kernel, 1, dilation=d, padding=get_padding(kernel, d))
            for d in dilations
        )
        self.convs2 = nn.ModuleList(
            nn.Conv1d(channels, channels, kernel, 1, dilation=1, padding=get_padding(kernel, 1))
            for _ in dilations
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: float32 (B, C, N) -> (B, C, N)."""
        for c1, c2 in zip(self.convs1, self.convs2, strict=True):
            xt = c2(F.leaky_relu(c1(F.leaky_relu(x, LRELU_SLOPE)), LRELU_SLOPE))
            x = xt + x
        return x


class UnitVocoder(nn.Module):
    """Unit -> 16 kHz waveform. Batch size 1 (fairseq asserts the same)."""

    def __init__(self, config: VocoderConfig) -> None:
        super().__init__()
        self.config = config
        self.dict = nn.Embedding(config.num_embeddings, config.embedding_dim)
        self.dur_predictor = DurationPredictor(config)
        self.conv_pre = nn.Conv1d(
            config.model_in_dim, config.upsample_initial_channel, PRE_POST_KERNEL, 1, padding=PRE_POST_KERNEL // 2
        )
        self.ups = nn.ModuleList()
        for i, (rate, kernel) in enumerate(zip(config.upsample_rates, config.upsample_kernel_sizes, strict=True)):
            in_ch = config.upsample_initial_channel // (2**i)
            self.ups.append(nn.ConvTranspose1d(in_ch, in_ch // 2, kernel, rate, padding=(kernel - rate) // 2))
        self.resblocks = nn.ModuleList(
            ResBlock1(config.channels(i), kernel, dilations)
            for i in range(config.num_upsamples)
            for kernel, dilations in zip(config.resblock_kernel_sizes, config.resblock_dilation_sizes, strict=True)
        )
        last = config.channels(config.num_upsamples - 1)
        self.conv_post = nn.Conv1d(last, 1, PRE_POST_KERNEL, 1, padding=PRE_POST_KERNEL // 2)

    def durations(self, units: torch.Tensor) -> torch.Tensor:
        """units: int64 (1, T) -> frames per unit: int64 (1, T), each >= 1."""
        log_dur = self.dur_predictor(self.dict(units))
        return torch.clamp(torch.round(torch.exp(log_dur) - 1).long(), min=MIN_DURATION_FRAMES)

    def generate(self, frame_units: torch.Tensor) -> torch.Tensor:
        """frame_units: int64 (1, F), units repeated by duration -> wav: float32 (1, F * hop)."""
        x = self.conv_pre(self.dict(frame_units).transpose(1, 2))
        n_kernels = self.config.num_kernels
        for i, up in enumerate(self.ups):
            x = up(F.leaky_relu(x, LRELU_SLOPE))
            xs = self.resblocks[i * n_kernels](x)
            for j in range(1, n_kernels):
                xs = xs + self.resblocks[i * n_kernels + j](x)
            x = xs / n_kernels
        x = self.conv_post(F.leaky_relu(x, FINAL_LRELU_SLOPE))
        return torch.tanh(x).squeeze(1)

    def forward(self, units: torch.Tensor) -> torch.Tensor:
        """Whole-utterance synthesis. units: int64 (1, T) -> wav: float32 (1, sum(dur) * hop)."""
        durations = self.durations(units)
        frame_units = torch.repeat_interleave(units, durations.view(-1), dim=1)
        return self.generate(frame_units)


class DurationGraph(nn.Module):
    """Export wrapper: units int64 (1, T) -> durations int64 (1, T)."""

    def __init__(self, vocoder: UnitVocoder) -> None:
        super().__init__()
        self.vocoder = vocoder

    def forward(self, units: torch.Tensor) -> torch.Tensor:
        return self.vocoder.durations(units)


class GeneratorGraph(nn.Module):
    """Export wrapper: frame_units int64 (1, F) -> wav float32 (1, F * hop)."""

    def __init__(self, vocoder: UnitVocoder) -> None:
        super().__init__()
        self.vocoder = vocoder

    def forward(self, frame_units: torch.Tensor) -> torch.Tensor:
        return self.vocoder.generate(frame_units)
