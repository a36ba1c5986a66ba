"""Loading every published layout, and a clear EngineError for every way the files can be wrong."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

from engine.config import EncoderDims
from engine.errors import ModelCorrupt, ModelIncompatible, ModelMissing, NotEnoughMemory, Reason
from engine.model import loader
from engine.model.dims import read_dims
from engine.model.omni import OmniModel
from engine.tiny import WhisperTextDims, whisper_state_dict, write_tiny_set, write_whisper_pt

from .conftest import copy_tree

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _load(path: Path, **kw) -> OmniModel:
    return OmniModel.load(path, device="cpu", quant="fp32", **kw)


def _omni_copy(tiny_omni, tmp_path: Path, with_encoder: bool = True) -> Path:
    omni = copy_tree(tiny_omni.omni, tmp_path / "set" / "omni")
    if with_encoder:
        copy_tree(tiny_omni.speech_encoder_pt.parent, tmp_path / "set" / "speech_encoder")
    return omni


# ------------------------------------------------------------------------------------ layouts


def test_encoder_from_openai_pt_found_via_config_path(tiny_omni_model, tiny_omni) -> None:
    assert tiny_omni_model.encoder_source.kind == "whisper_pt"
    assert tiny_omni_model.encoder_source.path == tiny_omni.speech_encoder_pt
    assert tiny_omni_model.dims.encoder.n_audio_head == 2 and tiny_omni_model.dims.n_speech_embeddings == 300


def test_every_encoder_layout_gives_the_same_encoder(
    tiny_omni_model, tiny_omni, tiny_omni_shards, tiny_omni_hf, speech_16k
):
    in_shards = _load(tiny_omni_shards.omni)
    hf_found = _load(tiny_omni_hf.omni)
    hf_given = _load(tiny_omni.omni, speech_encoder=tiny_omni.hf_encoder)  # the user's path beats the config's
    pt_given = _load(tiny_omni_hf.omni, speech_encoder=tiny_omni.speech_encoder_pt)
    assert in_shards.encoder_source.kind == "omni_shards"
    assert hf_found.encoder_source.kind == "hf_folder" and hf_found.encoder_source.path == tiny_omni_hf.hf_encoder
    assert hf_given.encoder_source.kind == "hf_folder"
    assert pt_given.encoder_source.kind == "whisper_pt"
    reference = tiny_omni_model.encode_speech(speech_16k)
    assert reference.shape == (300, 64)
    for model in (in_shards, hf_found, hf_given, pt_given):
        torch.testing.assert_close(model.encode_speech(speech_16k), reference, rtol=0, atol=0)


def test_a_given_encoder_path_wins_over_the_shards_and_its_stored_dims_count(
    tiny_omni_shards, tiny_omni, tmp_path: Path, speech_16k
) -> None:
    """``--speech-encoder PATH`` is used even when the shards hold ``model.speech_encoder.*``, and a
    Whisper .pt's stored dims are what the encoder is built with (here 3 layers and 4 heads, where
    the shards' encoder has 2 and 2: the shapes alone would say 2 heads)."""
    enc = EncoderDims(n_mels=128, n_audio_ctx=1500, n_audio_state=128, n_audio_head=4, n_audio_layer=3)
    pt = write_whisper_pt(tmp_path / "other.pt", enc, WhisperTextDims(), whisper_state_dict(enc, WhisperTextDims(), 7))
    given = _load(tiny_omni_shards.omni, speech_encoder=pt)
    assert given.encoder_source.kind == "whisper_pt" and given.encoder_source.path == pt
    assert given.dims.encoder == enc and len(given.encoder.blocks) == 3
    assert read_dims(tiny_omni_shards.omni, pt).encoder == enc  # the folder check agrees
    default = _load(tiny_omni_shards.omni)
    assert default.encoder_source.kind == "omni_shards" and default.dims.encoder.n_audio_layer == 2
    assert not torch.equal(given.encode_speech(speech_16k), default.encode_speech(speech_16k))
    hf_given = _load(tiny_omni_shards.omni, speech_encoder=tiny_omni.hf_encoder)
    assert hf_given.encoder_source.kind == "hf_folder"


def test_hf_whisper_folder_is_a_genuine_transformers_checkpoint(tiny_omni_model, tiny_omni, speech_16k) -> None:
    from transformers import WhisperModel

    from engine.audio.features import speech_features

    hf = WhisperModel.from_pretrained(tiny_omni.hf_encoder, dtype=torch.float32).eval()
    mel = speech_features(speech_16k).unsqueeze(0)
    with torch.no_grad():
        ref = hf.encoder(mel).last_hidden_state
        ours = tiny_omni_model.encoder(mel)
    torch.testing.assert_close(ours, ref, rtol=1e-4, atol=1e-4)


def test_load_progress_is_monotonic_and_complete(tiny_omni) -> None:
    seen: list[tuple[float, str]] = []
    _load(tiny_omni.omni, on_progress=lambda f, m: seen.append((f, m)))
    fractions = [f for f, _ in seen]
    assert fractions[0] == 0.0 and fractions[-1] == 1.0
    assert fractions == sorted(fractions)
    assert sum("model-0000" in m for _, m in seen) == 3  # one step per shard


def test_make_tiny_is_deterministic(tmp_path: Path) -> None:
    a = write_tiny_set(tmp_path / "a", seed=5, hf_encoder=True, encoder_in_shards=True)
    b = write_tiny_set(tmp_path / "b", seed=5, hf_encoder=True, encoder_in_shards=True)
    c = write_tiny_set(tmp_path / "c", seed=6, vocoder=False)
    files = sorted(p.relative_to(a.root) for p in a.root.rglob("*") if p.is_file())
    assert len(files) >= 14
    for rel in files:
        assert (a.root / rel).read_bytes() == (b.root / rel).read_bytes(), rel
    shard = Path("omni/model-00001-of-00003.safetensors")
    assert (a.root / shard).read_bytes() != (c.root / shard).read_bytes()


# ------------------------------------------------------------------------------------- errors


def test_missing_shard(tiny_omni, tmp_path: Path) -> None:
    omni = _omni_copy(tiny_omni, tmp_path)
    (omni / "model-00002-of-00003.safetensors").unlink()
    with pytest.raises(ModelMissing, match="model-00002-of-00003") as info:
        _load(omni)
    assert info.value.fix and info.value.path.name == "model-00002-of-00003.safetensors"


def test_index_names_a_key_the_shard_lacks(tiny_omni, tmp_path: Path) -> None:
    omni = _omni_copy(tiny_omni, tmp_path)
    index_path = omni / "model.safetensors.index.json"
    index = json.loads(index_path.read_text())
    wrong = "model-00003-of-00003.safetensors"
    key = next(k for k, v in index["weight_map"].items() if v != wrong)
    index["weight_map"][key] = wrong
    index_path.write_text(json.dumps(index))
    with pytest.raises(ModelCorrupt, match=key.replace(".", r"\.")) as info:
        _load(omni)
    assert info.value.path.name == wrong


def test_index_naming_a_key_no_shard_has_is_missing_weights(tiny_omni, tmp_path: Path) -> None:
    omni = _omni_copy(tiny_omni, tmp_path)
    index_path = omni / "model.safetensors.index.json"
    index = json.loads(index_path.read_text())
    del index["weight_map"]["model.layers.1.mlp.up_proj.weight"]
    index_path.write_text(json.dumps(index))
    with pytest.raises(ModelIncompatible, match=r"model\.layers\.1\.mlp\.up_proj\.weight"):
        _load(omni)


def test_shape_mismatch(tiny_omni, tmp_path: Path) -> None:
    omni = _omni_copy(tiny_omni, tmp_path)
    cfg = json.loads((omni / "config.json").read_text())
    cfg["intermediate_size"] = 96
    (omni / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ModelIncompatible, match=r"Shape mismatch for model\.layers\.\d\.mlp\.\w+_proj\.weight") as info:
        _load(omni)
    assert "(96, 64)" in str(info.value) or "(64, 96)" in str(info.value)
    assert info.value.path.suffix == ".safetensors"


@pytest.mark.parametrize("model_type", ["llama", "omni_speech_llama"])
def test_wrong_model_type(tiny_omni, tmp_path: Path, model_type: str) -> None:
    omni = _omni_copy(tiny_omni, tmp_path)
    cfg = json.loads((omni / "config.json").read_text())
    cfg["model_type"] = model_type
    (omni / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ModelIncompatible, match=model_type) as info:
        _load(omni)
    assert info.value.path.name == "config.json"


def test_missing_encoder_everywhere(tiny_omni, tmp_path: Path) -> None:
    omni = _omni_copy(tiny_omni, tmp_path, with_encoder=False)
    with pytest.raises(ModelMissing, match="No Whisper speech encoder") as info:
        _load(omni)
    assert info.value.reason is Reason.ENCODER_NOT_FOUND
    assert str(omni / "models/speech_encoder/large-v3.pt") in str(info.value.facts["looked"]).split("; ")
    assert "--" not in (info.value.fix or ""), "the engine names no interface's controls (engine/errors.py)"


def test_given_encoder_path_that_does_not_exist(tiny_omni, tmp_path: Path) -> None:
    omni = _omni_copy(tiny_omni, tmp_path, with_encoder=False)
    with pytest.raises(ModelMissing) as info:
        _load(omni, speech_encoder=tmp_path / "nope.pt")
    assert info.value.path == tmp_path / "nope.pt"


def test_truncated_shard(tiny_omni, tmp_path: Path) -> None:
    omni = _omni_copy(tiny_omni, tmp_path)
    shard = omni / "model-00003-of-00003.safetensors"
    data = shard.read_bytes()
    shard.write_bytes(data[:-100])
    with pytest.raises(ModelCorrupt, match="truncated") as info:
        _load(omni)
    assert info.value.path == shard


def test_truncated_whisper_pt(tiny_omni, tmp_path: Path) -> None:
    omni = _omni_copy(tiny_omni, tmp_path)
    pt = tmp_path / "set" / "speech_encoder" / "large-v3.pt"
    pt.write_bytes(pt.read_bytes()[: pt.stat().st_size // 2])
    with pytest.raises(ModelCorrupt) as info:
        _load(omni)
    assert info.value.path == pt


class _Exploit:
    def __reduce__(self):
        return (os.system, (f"touch {os.environ['OMNITALK_EXPLOIT_MARKER']}",))


def test_pickled_code_in_whisper_pt_is_never_run(tiny_omni, tmp_path: Path, monkeypatch) -> None:
    omni = _omni_copy(tiny_omni, tmp_path)
    marker = tmp_path / "exploited"
    monkeypatch.setenv("OMNITALK_EXPLOIT_MARKER", str(marker))
    pt = tmp_path / "set" / "speech_encoder" / "large-v3.pt"
    torch.save({"dims": {}, "model_state_dict": {}, "payload": _Exploit()}, pt)
    with pytest.raises(ModelCorrupt, match="never runs code"):
        _load(omni)
    assert not marker.exists()


def test_missing_tokenizer(tiny_omni, tmp_path: Path) -> None:
    omni = _omni_copy(tiny_omni, tmp_path)
    (omni / "tokenizer.json").unlink()
    with pytest.raises(ModelMissing, match="tokenizer.json"):
        _load(omni)


def test_folder_without_config(tmp_path: Path) -> None:
    with pytest.raises(ModelMissing, match="config.json"):
        _load(tmp_path)


def test_not_enough_memory_is_refused_before_loading(tiny_omni, monkeypatch) -> None:
    calls: list[int] = []
    monkeypatch.setattr(loader, "available_memory", lambda device: calls.append(1) or 1_000_000)
    monkeypatch.setattr(loader, "build_meta_llm", lambda *a: pytest.fail("model built despite the memory check"))
    with pytest.raises(NotEnoughMemory, match=r"needs about 0\.\d GB of RAM; 0\.0 GB is free"):
        _load(tiny_omni.omni)
    assert calls == [1]


def test_read_dims_without_loading(tiny_omni) -> None:
    dims = read_dims(tiny_omni.omni)
    assert dims.llm.hidden_size == 64 and dims.adapter.hidden_dim == 32
    assert dims.unit_decoder.upsample_factor == 25 and dims.unit_decoder.blank_id == 1000
    assert dims.llm.rope_scaling is not None and dims.llm.rope_scaling.factor == 8.0
