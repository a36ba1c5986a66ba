"""Receptive fields of the vocoder, computed from its config (never hard-coded).

Streaming needs two numbers:

* ``duration_context_units``: how many neighbouring units on each side change one unit's predicted
  duration (VariancePredictor: conv1 radius + conv2 radius = 2 for the official config).
* ``generator_context_frames``: how many unit frames on each side can change one output sample of
  the HiFi-GAN generator: the reach is 21.05 frames for the official config, so 23 whole frames
  (460 ms) of context. A window that has at least this many real frames on both sides of a region
  reproduces the whole-utterance output there exactly.
"""

from __future__ import annotations

import math
from fractions import Fraction

from engine.vocoder.config import PRE_POST_KERNEL, VocoderConfig


def resblock_radius(kernel: int, dilations: tuple[int, ...]) -> int:
    """Samples on each side seen by one fairseq ResBlock1 (pairs of a dilated conv and a d=1 conv)."""
    half = (kernel - 1) // 2
    return sum(half * d + half for d in dilations)


def generator_radius_frames(config: VocoderConfig) -> Fraction:
    """Exact one-sided reach of the generator, in unit frames (may be fractional)."""
    reach = Fraction(PRE_POST_KERNEL // 2)  # conv_pre runs at the frame rate
    rate = 1
    for up, kernel in zip(config.upsample_rates, config.upsample_kernel_sizes, strict=True):
        padding = (kernel - up) // 2
        rate *= up
        # ConvTranspose1d: output t sees input j when 0 <= t - j*u + p < k, so |t - j*u| <= max(p, k-1-p).
        reach += Fraction(max(padding, kernel - 1 - padding), rate)
        widest = max(
            resblock_radius(k, d)
            for k, d in zip(config.resblock_kernel_sizes, config.resblock_dilation_sizes, strict=True)
        )
        reach += Fraction(widest, rate)
    reach += Fraction(PRE_POST_KERNEL // 2, rate)  # conv_post at the sample rate
    return reach


def generator_context_frames(config: VocoderConfig) -> int:
    """Whole frames of context needed on each side of a region for an exact result.

    One more than ``ceil(radius)`` because a region's edge can fall anywhere inside a frame.
    """
    return math.ceil(generator_radius_frames(config)) + 1


def duration_context_units(config: VocoderConfig) -> int:
    """Units on each side that influence one unit's predicted duration."""
    return config.duration.context_units


def exact_lookahead_units(config: VocoderConfig) -> int:
    """Look-ahead (in units) that makes streaming exact whatever the durations are.

    Worst case every look-ahead unit lasts one frame, so the generator's right context needs
    ``generator_context_frames`` units, plus ``duration_context_units`` so that the last of them
    has a final duration. Real speech (about 2 frames per unit) is exact with fewer.
    """
    return generator_context_frames(config) + duration_context_units(config)
