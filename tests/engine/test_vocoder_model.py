"""The PyTorch unit vocoder: official layout, weight-norm folding, durations, receptive fields."""

from __future__ import annotations

import json
import warnings
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from engine.vocoder.checkpoint import (
    CHECKPOINT_FILENAME,
    OFFICIAL_CONFIG_JSON,
    fold_weight_norm,
    load_torch_vocoder,
    official_config,
    random_generator_state,
    write_tiny_vocoder,
)
from engine.vocoder.config import load_config
from engine.vocoder.defaults import CONFIG_FILENAME
from engine.vocoder.model import UnitVocoder
from engine.vocoder.receptive import (
    duration_context_units,
    exact_lookahead_units,
    generator_context_frames,
    generator_radius_frames,
)

HOP = 320


pytestmark = pytest.mark.usefixtures("one_torch_thread_per_module")  # tiny models are latency-bound


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_vocoder(tmp_path_factory.mktemp("vocoder") / "tiny", seed=3)


@pytest.fixture(scope="module")
def tiny_model(tiny_dir: Path) -> UnitVocoder:
    return load_torch_vocoder(tiny_dir)


# ------------------------------------------------------------------ an independent fairseq transcription
# Built with the *deprecated* torch.nn.utils.weight_norm, like fairseq, so it loads weight_g/weight_v
# natively and folds nothing itself: if our folding or layer wiring were wrong, outputs would differ.


def _wn(module: nn.Module) -> nn.Module:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        return nn.utils.weight_norm(module)


class _FairseqResBlock(nn.Module):
    def __init__(self, ch: int, k: int, dil: list[int]) -> None:
        super().__init__()
        pad = lambda d: (k * d - d) // 2  # noqa: E731
        self.convs1 = nn.ModuleList(_wn(nn.Conv1d(ch, ch, k, 1, dilation=d, padding=pad(d))) for d in dil)
        self.convs2 = nn.ModuleList(_wn(nn.Conv1d(ch, ch, k, 1, dilation=1, padding=pad(1))) for _ in dil)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for c1, c2 in zip(self.convs1, self.convs2, strict=True):
            xt = F.leaky_relu(x, 0.1)
            xt = c1(xt)
            xt = F.leaky_relu(xt, 0.1)
            xt = c2(xt)
            x = xt + x
        return x


class _FairseqVariancePredictor(nn.Module):
    def __init__(self, c: int, h: int, k: int) -> None:
        super().__init__()
        self.conv1 = nn.Sequential(nn.Conv1d(c, h, k, padding=(k - 1) // 2), nn.ReLU())
        self.ln1 = nn.LayerNorm(h)
        self.conv2 = nn.Sequential(nn.Conv1d(h, h, k, padding=1), nn.ReLU())
        self.ln2 = nn.LayerNorm(h)
        self.proj = nn.Linear(h, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.ln1(self.conv1(x.transpose(1, 2)).transpose(1, 2))
        x = self.ln2(self.conv2(x.transpose(1, 2)).transpose(1, 2))
        return self.proj(x).squeeze(dim=2)


class _FairseqCodeGenerator(nn.Module):
    def __init__(self, cfg: dict) -> None:
        super().__init__()
        ch0 = cfg["upsample_initial_channel"]
        self.num_kernels = len(cfg["resblock_kernel_sizes"])
        self.conv_pre = _wn(nn.Conv1d(cfg["model_in_dim"], ch0, 7, 1, padding=3))
        self.ups = nn.ModuleList(
            _wn(nn.ConvTranspose1d(ch0 // 2**i, ch0 // 2 ** (i + 1), k, u, padding=(k - u) // 2))
            for i, (u, k) in enumerate(zip(cfg["upsample_rates"], cfg["upsample_kernel_sizes"], strict=True))
        )
        self.resblocks = nn.ModuleList()
        for i in range(len(self.ups)):
            ch = ch0 // 2 ** (i + 1)
            for k, d in zip(cfg["resblock_kernel_sizes"], cfg["resblock_dilation_sizes"], strict=True):
                self.resblocks.append(_FairseqResBlock(ch, k, d))
        self.conv_post = _wn(nn.Conv1d(ch, 1, 7, 1, padding=3))
        self.dict = nn.Embedding(cfg["num_embeddings"], cfg["embedding_dim"])
        p = cfg["dur_predictor_params"]
        self.dur_predictor = _FairseqVariancePredictor(
            p["encoder_embed_dim"], p["var_pred_hidden_dim"], p["var_pred_kernel_size"]
        )

    def forward(self, code: torch.Tensor) -> torch.Tensor:
        x = self.dict(code).transpose(1, 2)
        log_dur_pred = self.dur_predictor(x.transpose(1, 2))
        dur_out = torch.clamp(torch.round(torch.exp(log_dur_pred) - 1).long(), min=1)
        x = torch.repeat_interleave(x, dur_out.view(-1), dim=2)
        x = self.conv_pre(x)
        for i in range(len(self.ups)):
            x = F.leaky_relu(x, 0.1)
            x = self.ups[i](x)
            xs = None
            for j in range(self.num_kernels):
                r = self.resblocks[i * self.num_kernels + j](x)
                xs = r if xs is None else xs + r
            x = xs / self.num_kernels
        x = F.leaky_relu(x)
        x = self.conv_post(x)
        return torch.tanh(x)


def test_matches_independent_fairseq_transcription_with_old_style_weight_norm(tiny_dir: Path) -> None:
    raw = json.loads((tiny_dir / CONFIG_FILENAME).read_text())
    reference = _FairseqCodeGenerator(raw).eval()
    state = torch.load(tiny_dir / CHECKPOINT_FILENAME, weights_only=True)["generator"]
    assert any(k.endswith("weight_g") for k in state) and any(k.endswith("weight_v") for k in state)
    reference.load_state_dict(state, strict=True)
    ours = load_torch_vocoder(tiny_dir)
    units = torch.from_numpy(np.random.default_rng(0).integers(0, 1000, (1, 37)))
    with torch.inference_mode():
        expected = reference(units).view(-1)
        got = ours(units).view(-1)
    assert got.shape == expected.shape
    assert torch.max(torch.abs(got - expected)).item() < 1e-5
    assert expected.abs().max() > 0.1  # a real signal, not a vanishing random network


def test_official_state_dict_key_layout() -> None:
    state = random_generator_state(official_config(), seed=0)
    assert state["dict.weight"].shape == (1000, 128)
    assert state["conv_pre.weight_v"].shape == (512, 128, 7)
    assert state["conv_pre.weight_g"].shape == (512, 1, 1)
    # ConvTranspose1d weight is (in, out, k) and weight norm's dim 0 is the *input* channel.
    assert state["ups.0.weight_v"].shape == (512, 256, 11)
    assert state["ups.0.weight_g"].shape == (512, 1, 1)
    assert state["ups.4.weight_v"].shape == (32, 16, 4)
    assert state["resblocks.14.convs2.2.weight_v"].shape == (16, 16, 11)
    assert state["conv_post.weight_v"].shape == (1, 16, 7)
    assert state["dur_predictor.conv2.0.weight"].shape == (128, 128, 3)
    assert state["dur_predictor.proj.weight"].shape == (1, 128)
    assert not any(k.endswith(".weight") and k.startswith(("ups", "resblocks", "conv_")) for k in state)
    # 1 embedding + 10 predictor tensors + (conv_pre, conv_post, 5 ups, 90 resblock convs) * 3 tensors
    assert len(state) == 1 + 10 + (2 + 5 + 15 * 6) * 3


def test_fold_matches_torch_parametrization_for_transposed_conv() -> None:
    conv = nn.ConvTranspose1d(6, 3, 4, 2)
    nn.utils.parametrizations.weight_norm(conv, dim=0)
    with torch.no_grad():
        conv.parametrizations.weight.original0.uniform_(0.5, 2.0)
    new_style = {f"ups.0.{k}": v for k, v in conv.state_dict().items()}
    folded = fold_weight_norm(new_style)
    assert set(folded) == {"ups.0.weight", "ups.0.bias"}
    torch.testing.assert_close(folded["ups.0.weight"], conv.weight.detach(), rtol=1e-6, atol=1e-7)
    old_style = {
        "ups.0.weight_g": new_style["ups.0.parametrizations.weight.original0"],
        "ups.0.weight_v": new_style["ups.0.parametrizations.weight.original1"],
    }
    torch.testing.assert_close(fold_weight_norm(old_style)["ups.0.weight"], conv.weight.detach())


def test_new_style_and_folded_checkpoints_give_the_same_model(tiny_dir: Path, tmp_path: Path) -> None:
    state = torch.load(tiny_dir / CHECKPOINT_FILENAME, weights_only=True)["generator"]
    converted = {
        k.replace("weight_g", "parametrizations.weight.original0").replace(
            "weight_v", "parametrizations.weight.original1"
        ): v
        for k, v in state.items()
    }
    for name, payload in (("new", converted), ("folded", fold_weight_norm(state))):
        folder = tmp_path / name
        folder.mkdir()
        (folder / CONFIG_FILENAME).write_bytes((tiny_dir / CONFIG_FILENAME).read_bytes())
        torch.save({"generator": payload}, folder / CHECKPOINT_FILENAME)
        a, b = load_torch_vocoder(tiny_dir), load_torch_vocoder(folder)
        for key, value in a.state_dict().items():
            torch.testing.assert_close(b.state_dict()[key], value)


def test_writer_is_deterministic_and_seeded(tmp_path: Path) -> None:
    a = torch.load(write_tiny_vocoder(tmp_path / "a", seed=1) / CHECKPOINT_FILENAME, weights_only=True)
    b = torch.load(write_tiny_vocoder(tmp_path / "b", seed=1) / CHECKPOINT_FILENAME, weights_only=True)
    c = torch.load(write_tiny_vocoder(tmp_path / "c", seed=2) / CHECKPOINT_FILENAME, weights_only=True)
    assert all(torch.equal(a["generator"][k], b["generator"][k]) for k in a["generator"])
    assert not torch.equal(a["generator"]["dict.weight"], c["generator"]["dict.weight"])
    config = load_config(tmp_path / "a")
    assert config.upsample_initial_channel == 32 and config.hop_samples == HOP
    assert set(json.loads((tmp_path / "a" / CONFIG_FILENAME).read_text())) >= set(OFFICIAL_CONFIG_JSON)


def test_dimensions_come_from_config(tmp_path: Path) -> None:
    folder = write_tiny_vocoder(
        tmp_path / "odd", upsample_rates=[4, 2], upsample_kernel_sizes=[8, 4], code_hop_size=8,
        upsample_initial_channel=8, resblock_kernel_sizes=[3], resblock_dilation_sizes=[[1, 2]],
        num_embeddings=50, embedding_dim=6, var_pred_hidden_dim=5,
    )
    model = load_torch_vocoder(folder)
    assert model.dict.weight.shape == (50, 6)
    assert model.config.hop_samples == 8
    with torch.inference_mode():
        units = torch.tensor([[1, 2, 3, 49]])
        assert model(units).shape[1] == int(model.durations(units).sum()) * 8


# ---------------------------------------------------------------------------------------- durations


def test_duration_semantics_clamp_round_exp_minus_one(tiny_model: UnitVocoder) -> None:
    units = torch.arange(0, 200).view(1, -1)
    with torch.inference_mode():
        log_dur = tiny_model.dur_predictor(tiny_model.dict(units))
        durations = tiny_model.durations(units)
    expected = np.maximum(np.round(np.exp(log_dur.numpy().astype(np.float64)) - 1), 1).astype(np.int64)
    assert np.array_equal(durations.numpy(), expected)
    assert durations.dtype == torch.int64 and durations.min() >= 1
    assert len(np.unique(durations.numpy())) >= 3  # the random model really varies durations


def test_durations_forced_through_projection_bias(tiny_dir: Path) -> None:
    model = load_torch_vocoder(tiny_dir)
    units = torch.tensor([[5, 9, 13]])
    with torch.no_grad():
        model.dur_predictor.proj.weight.zero_()
        for wanted, bias in ((4, np.log(1 + 4.2)), (1, np.log(1 + 0.2)), (1, -3.0), (7, np.log(1 + 6.6))):
            model.dur_predictor.proj.bias.fill_(float(bias))
            assert model.durations(units).tolist() == [[wanted] * 3]
            wav = model(units)
            assert wav.shape == (1, 3 * wanted * HOP)
            torch.testing.assert_close(wav, model.generate(units.repeat_interleave(wanted, dim=1)))


def test_duration_context_is_two_units_each_side(tiny_model: UnitVocoder) -> None:
    config = tiny_model.config
    assert duration_context_units(config) == 2
    rng = np.random.default_rng(1)
    base = torch.from_numpy(rng.integers(0, 1000, (1, 30)))
    with torch.inference_mode():
        ref = tiny_model.dur_predictor(tiny_model.dict(base))[0]
        changed = base.clone()
        changed[0, 15] = (changed[0, 15] + 500) % 1000
        new = tiny_model.dur_predictor(tiny_model.dict(changed))[0]
    moved = torch.nonzero(torch.abs(new - ref) > 1e-6).view(-1).tolist()
    assert moved == [13, 14, 15, 16, 17]


# ---------------------------------------------------------------------------------------- receptive field


def test_official_receptive_field_numbers() -> None:
    config = official_config()
    # conv_pre 3 + ups0 7/5 + res 60/5 + ups1 5/20 + res 60/20 + ups2 5/80 + res 60/80
    # + ups3 2/160 + res 60/160 + ups4 2/320 + res 60/320 + conv_post 3/320
    assert generator_radius_frames(config) == Fraction(6737, 320)
    assert generator_context_frames(config) == 23
    assert exact_lookahead_units(config) == 25


def test_generator_context_bounds_the_real_influence(tiny_dir: Path) -> None:
    # float64 so that even the faintest influence at the edge of the receptive field is visible.
    model = load_torch_vocoder(tiny_dir).double()
    ctx = generator_context_frames(model.config)
    frames = torch.from_numpy(np.random.default_rng(2).integers(0, 1000, (1, 120)))
    changed = frames.clone()
    changed[0, 60] = (changed[0, 60] + 1) % 1000
    with torch.inference_mode():
        diff = torch.abs(model.generate(changed) - model.generate(frames)).view(-1).numpy()
    touched = np.nonzero(diff > 0)[0]
    first, last = touched[0] / HOP, touched[-1] / HOP
    assert 60 - ctx <= first and last < 61 + ctx  # the computed context covers the real influence
    assert first < 60 - (ctx - 4) and last >= 61 + (ctx - 4)  # and is not much larger than needed
