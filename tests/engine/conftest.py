"""Tiny random LLaMA-Omni sets in every official layout, written once per test session.

``tiny_omni``       DIR/omni + DIR/speech_encoder/large-v3.pt + DIR/whisper-large-v3 + DIR/vocoder
``tiny_omni_shards``  the encoder stored inside the Omni shards (model.speech_encoder.*), nothing else
``tiny_omni_hf``      no .pt: the encoder is only in the sibling Hugging Face whisper-large-v3 folder
All share seed 0, so the encoder weights are identical across layouts.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from engine.tiny import TinyPaths, write_tiny_set


def _single_thread() -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture()
def one_torch_thread() -> Iterator[None]:
    """Tiny models gain nothing from intra-op threads, and on a busy 2-core machine the spinning
    worker threads make every op ~8x slower. Restored afterwards for other test modules."""
    yield from _single_thread()


@pytest.fixture(scope="module")
def one_torch_thread_per_module() -> Iterator[None]:
    """``one_torch_thread`` for a whole module: ``pytestmark = pytest.mark.usefixtures(...)``."""
    yield from _single_thread()


@pytest.fixture(scope="session")
def tiny_omni(tmp_path_factory: pytest.TempPathFactory) -> TinyPaths:
    return write_tiny_set(tmp_path_factory.mktemp("tiny-omni"), seed=0, hf_encoder=True, vocoder=True)


@pytest.fixture(scope="session")
def tiny_omni_shards(tmp_path_factory: pytest.TempPathFactory) -> TinyPaths:
    return write_tiny_set(
        tmp_path_factory.mktemp("tiny-omni-shards"), seed=0, encoder_in_shards=True, pt_encoder=False, vocoder=False
    )


@pytest.fixture(scope="session")
def tiny_omni_hf(tmp_path_factory: pytest.TempPathFactory) -> TinyPaths:
    return write_tiny_set(
        tmp_path_factory.mktemp("tiny-omni-hf"), seed=0, pt_encoder=False, hf_encoder=True, vocoder=False
    )


@pytest.fixture(scope="session")
def tiny_omni_model(tiny_omni: TinyPaths):  # -> OmniModel (fp32, CPU), shared: tests must not mutate it
    from engine.model.omni import OmniModel

    return OmniModel.load(tiny_omni.omni, device="cpu", quant="fp32")


@pytest.fixture(scope="session")
def speech_16k() -> np.ndarray:
    """1.5 s of a vowel-like signal: harmonics of 140 Hz with a slow envelope, float32 16 kHz."""
    t = np.arange(24_000) / 16_000
    f0 = 140.0
    wave = sum(np.sin(2 * np.pi * f0 * k * t) / k for k in range(1, 8))
    envelope = 0.5 * (1 - np.cos(2 * np.pi * t / t[-1]))
    return (0.2 * envelope * wave).astype(np.float32)


def copy_tree(src: Path, dst: Path) -> Path:
    import shutil

    shutil.copytree(src, dst)
    return dst


@pytest.fixture(scope="session")
def tiny_omni_ft(tmp_path_factory: pytest.TempPathFactory) -> TinyPaths:
    """The tiny set for fine-tuning: its random encoder's output follows the audio more than its
    positional table (``encoder_conv_gain``), as a trained Whisper's does, so a 2-layer random LLM
    can learn to tell a handful of spoken questions apart in a few dozen steps."""
    from engine.tiny import TinySpec

    spec = TinySpec(encoder_conv_gain=4.0)
    return write_tiny_set(tmp_path_factory.mktemp("tiny-omni-ft"), seed=0, spec=spec, vocoder=False)


@pytest.fixture(scope="session")
def finetune_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """6 spoken (espeak-ng) + 6 typed pairs with target units: tests/engine/finetune_fixtures.py."""
    from tests.engine.finetune_fixtures import write_mixed_dataset

    return write_mixed_dataset(tmp_path_factory.mktemp("finetune-data"))
