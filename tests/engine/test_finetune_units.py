"""Unit extraction for stage 2: the allow-list unpickler, mHuBERT through transformers vs an
independent forward pass written here from fairseq's code, and the k-means against sklearn."""

from __future__ import annotations

import os
import pickle
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from engine.errors import ModelCorrupt, ModelIncompatible
from engine.finetune.safe_pickle import InertRecord, load_joblib, load_torch_checkpoint
from engine.finetune.units import (
    HubertFeatures,
    KMeansQuantizer,
    UnitExtractor,
    dedup_units,
    fairseq_to_hf_name,
    parse_conv_layers,
)
from tests.engine.hubert_fixtures import (
    CONV_POS,
    CONV_POS_GROUPS,
    CONV_SPEC,
    N_HEADS,
    fairseq_hubert_state,
    write_tiny_fairseq_hubert,
    write_tiny_kmeans,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread_per_module")


def reference_hubert_layer(sd: dict[str, torch.Tensor], wav: np.ndarray, layer: int) -> torch.Tensor:
    """fairseq HubertModel.extract_features(output_layer=layer), written out with functional ops.

    Conv feature extractor (GroupNorm after the first conv, GELU), transpose, LayerNorm,
    post_extract_proj, x + GELU(weight-normed grouped pos conv, last frame dropped for even
    kernels), LayerNorm, then post-LN transformer layers (softmax(q k^T / sqrt(d)) v).
    """
    x = torch.from_numpy(wav).float()[None, None, :]
    for i, (ch, _k, stride) in enumerate(CONV_SPEC):
        x = F.conv1d(x, sd[f"feature_extractor.conv_layers.{i}.0.weight"], stride=stride)
        if i == 0:
            x = F.group_norm(
                x, ch, sd["feature_extractor.conv_layers.0.2.weight"], sd["feature_extractor.conv_layers.0.2.bias"]
            )
        x = F.gelu(x)
    x = x.transpose(1, 2)
    x = F.layer_norm(x, (x.shape[-1],), sd["layer_norm.weight"], sd["layer_norm.bias"])
    x = F.linear(x, sd["post_extract_proj.weight"], sd["post_extract_proj.bias"])
    v, g = sd["encoder.pos_conv.0.weight_v"], sd["encoder.pos_conv.0.weight_g"]
    weight = g * v / v.norm(dim=(0, 1), keepdim=True)  # torch weight_norm with dim=2
    pos = F.conv1d(
        x.transpose(1, 2), weight, sd["encoder.pos_conv.0.bias"], padding=CONV_POS // 2, groups=CONV_POS_GROUPS
    )
    if CONV_POS % 2 == 0:
        pos = pos[:, :, :-1]
    x = x + F.gelu(pos).transpose(1, 2)
    x = F.layer_norm(x, (x.shape[-1],), sd["encoder.layer_norm.weight"], sd["encoder.layer_norm.bias"])
    d = x.shape[-1]
    head = d // N_HEADS
    for i in range(layer):
        p = f"encoder.layers.{i}."

        def lin(name: str, t: torch.Tensor, p: str = p) -> torch.Tensor:
            return F.linear(t, sd[f"{p}{name}.weight"], sd[f"{p}{name}.bias"])

        T = x.shape[1]
        q = (lin("self_attn.q_proj", x) * head**-0.5).view(T, N_HEADS, head).transpose(0, 1)
        k = lin("self_attn.k_proj", x).view(T, N_HEADS, head).transpose(0, 1)
        vv = lin("self_attn.v_proj", x).view(T, N_HEADS, head).transpose(0, 1)
        attn = torch.softmax(q @ k.transpose(1, 2), dim=-1) @ vv
        x = x + lin("self_attn.out_proj", attn.transpose(0, 1).reshape(1, T, d))
        x = F.layer_norm(x, (d,), sd[f"{p}self_attn_layer_norm.weight"], sd[f"{p}self_attn_layer_norm.bias"])
        x = x + lin("fc2", F.gelu(lin("fc1", x)))
        x = F.layer_norm(x, (d,), sd[f"{p}final_layer_norm.weight"], sd[f"{p}final_layer_norm.bias"])
    return x[0]


def espeak(text: str, path: Path) -> np.ndarray:
    subprocess.run(["espeak-ng", "-v", "en-us", "-s", "160", "-w", str(path), text], check=True, capture_output=True)
    import soundfile as sf

    data, rate = sf.read(str(path), dtype="float32")
    from engine.audio.resample import resample

    return resample(data, int(rate), 16_000)


@pytest.fixture(scope="module")
def speech(tmp_path_factory: pytest.TempPathFactory) -> list[np.ndarray]:
    folder = tmp_path_factory.mktemp("speech")
    texts = ("The capital of France is Paris.", "Seven minutes in boiling water.")
    return [espeak(t, folder / f"{i}.wav") for i, t in enumerate(texts)]


@pytest.fixture(scope="module")
def hubert_pt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_fairseq_hubert(tmp_path_factory.mktemp("hubert") / "mhubert_base_vp_en_es_fr_it3.pt")


def test_checkpoint_reads_as_plain_data(hubert_pt: Path) -> None:
    ckpt = load_torch_checkpoint(hubert_pt)
    expected = fairseq_hubert_state(0)
    assert list(ckpt["model"]) == list(expected)
    for name, tensor in expected.items():
        assert torch.equal(ckpt["model"][name], tensor), name
    dictionary = ckpt["task_state"]["dictionaries"][0]
    assert isinstance(dictionary, InertRecord) and dictionary.type_name == "fairseq.data.dictionary.Dictionary"
    assert dictionary.state["symbols"][:4] == ["<s>", "<pad>", "</s>", "<unk>"]
    assert ckpt["extra_state"]["previous_training_time"] == pytest.approx(1234.5)


def test_legacy_torch_format_reads_the_same(tmp_path: Path) -> None:
    legacy = write_tiny_fairseq_hubert(tmp_path / "legacy.pt", legacy_format=True)
    with legacy.open("rb") as handle:
        assert handle.read(2) != b"PK"  # really the pre-zip format
    ckpt = load_torch_checkpoint(legacy)
    for name, tensor in fairseq_hubert_state(0).items():
        assert torch.equal(ckpt["model"][name], tensor), name


def test_every_fairseq_weight_maps_or_is_a_pretraining_head() -> None:
    unused = {"mask_emb", "label_embs_concat", "final_proj.weight", "final_proj.bias"}
    for name in fairseq_hubert_state(0):
        assert (fairseq_to_hf_name(name) is None) == (name in unused), name


def test_conv_layers_are_parsed_without_eval() -> None:
    assert parse_conv_layers("[(512,10,5)] + [(512,3,2)] * 4 + [(512,2,2)] * 2") == tuple(
        [(512, 10, 5)] + [(512, 3, 2)] * 4 + [(512, 2, 2)] * 2
    )
    with pytest.raises(ModelIncompatible):
        parse_conv_layers("__import__('os').system('true')")


def test_transformers_hubert_equals_independent_forward(hubert_pt: Path, speech: list[np.ndarray]) -> None:
    features = HubertFeatures.load(hubert_pt, layer=11)
    sd = fairseq_hubert_state(0)
    for wav in speech:
        ours = features(wav)
        ref = reference_hubert_layer(sd, wav, 11).numpy()
        assert ours.shape == ref.shape and ours.shape[0] == pytest.approx(wav.shape[0] / 320, abs=2)
        np.testing.assert_allclose(ours, ref, atol=2e-4, rtol=1e-4)
    # A different layer gives different features: the layer choice is real.
    assert not np.allclose(HubertFeatures.load(hubert_pt, layer=10)(speech[0]), features(speech[0]), atol=1e-3)


def test_kmeans_bin_matches_sklearn_and_units_dedup(hubert_pt: Path, speech: list[np.ndarray], tmp_path: Path) -> None:
    features = HubertFeatures.load(hubert_pt)
    feats = np.concatenate([features(w) for w in speech])
    km = write_tiny_kmeans(tmp_path / "km.bin", feats, n_clusters=12)
    quantizer = KMeansQuantizer.load(tmp_path / "km.bin")
    np.testing.assert_array_equal(quantizer.centers, km.cluster_centers_)
    np.testing.assert_array_equal(quantizer.predict(feats), km.predict(feats))

    extractor = UnitExtractor(features, quantizer)
    labels = km.predict(features(speech[0]))
    units = extractor.units(speech[0])
    assert units == dedup_units(labels.tolist())
    assert all(a != b for a, b in zip(units, units[1:], strict=False)) and len(set(units)) > 2
    # Any input rate: 48 kHz stereo gives (nearly) the same units after resampling to 16 kHz.
    from engine.audio.resample import resample

    stereo = np.stack([resample(speech[0], 16_000, 48_000)] * 2, axis=1)
    again = extractor.units(stereo, sample_rate_hz=48_000)
    assert abs(len(again) - len(units)) <= max(2, len(units) // 5)


def test_dedup() -> None:
    assert dedup_units([5, 5, 7, 7, 7, 5, 1]) == [5, 7, 5, 1]
    assert dedup_units([]) == []


class _Evil:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_pickle_that_runs_code_is_refused(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    pt = tmp_path / "evil.pt"
    torch.save({"model": {"w": torch.ones(2)}, "extra": _Evil(marker)}, pt)
    with pytest.raises(ModelIncompatible, match="system"):
        load_torch_checkpoint(pt)
    evil_bin = tmp_path / "evil.bin"
    evil_bin.write_bytes(pickle.dumps(_Evil(marker), protocol=4))
    with pytest.raises(ModelIncompatible, match="system") as info:
        load_joblib(evil_bin)
    assert info.value.path == evil_bin
    assert not marker.exists()
    # pickle itself would have run it: the file really is hostile.
    pickle.loads(evil_bin.read_bytes())
    assert marker.exists()


def test_damaged_files_are_corrupt_not_crashes(hubert_pt: Path, tmp_path: Path) -> None:
    truncated = tmp_path / "cut.bin"
    km_like = pickle.dumps({"cluster_centers_": "x"}, protocol=4)
    truncated.write_bytes(km_like[: len(km_like) // 2])
    with pytest.raises(ModelCorrupt):
        load_joblib(truncated)
    not_pickle = tmp_path / "text.bin"
    not_pickle.write_text("hello")
    with pytest.raises(ModelIncompatible):
        load_joblib(not_pickle)
    with pytest.raises(ModelIncompatible, match="k-means"):
        KMeansQuantizer.load(_write(tmp_path / "nokm.bin", pickle.dumps({"a": 1}, protocol=4)))
    cut_pt = _write(tmp_path / "cut.pt", hubert_pt.read_bytes()[:5000])
    with pytest.raises(ModelCorrupt):
        load_torch_checkpoint(cut_pt)


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path
