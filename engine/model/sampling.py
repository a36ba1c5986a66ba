"""Next-token choice: greedy (temperature 0, the reference's default) or temperature + top-p."""

from __future__ import annotations

import torch

from engine.config import DecodeOptions


def make_generator(options: DecodeOptions, device: torch.device) -> torch.Generator | None:
    if options.temperature == 0 or options.seed is None:
        return None
    gen = torch.Generator(device=device)
    gen.manual_seed(options.seed)
    return gen


def choose_token(
    logits: torch.Tensor, options: DecodeOptions, generator: torch.Generator | None = None
) -> torch.Tensor:
    """logits: float32 (vocab,) -> token id, int64 (1,) on the logits' device (no wait for the GPU)."""
    if options.temperature == 0:
        return torch.argmax(logits).view(1)
    probs = torch.softmax(logits / options.temperature, dim=-1)
    if options.top_p < 1.0:
        sorted_probs, order = torch.sort(probs, descending=True)
        before = torch.cumsum(sorted_probs, dim=-1) - sorted_probs
        sorted_probs = sorted_probs.masked_fill(before >= options.top_p, 0.0)  # keep the nucleus
        probs = torch.zeros_like(probs).scatter_(0, order, sorted_probs)
    return torch.multinomial(probs, 1, generator=generator)

