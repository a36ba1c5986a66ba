"""Files and inputs the vocoder must refuse, each with the right EngineError kind and a clear message."""

from __future__ import annotations

import json
import shutil
from collections import OrderedDict
from pathlib import Path

import pytest
import torch

from engine.errors import BadInput, ModelCorrupt, ModelIncompatible, ModelMissing
from engine.vocoder.checkpoint import load_torch_vocoder, write_tiny_vocoder
from engine.vocoder.defaults import CHECKPOINT_FILENAME, CONFIG_FILENAME
from engine.vocoder.runtime_torch import TorchVocoderRuntime
from engine.vocoder.streaming import StreamingVocoder

pytestmark = pytest.mark.usefixtures("one_torch_thread_per_module")  # tiny models are latency-bound


@pytest.fixture(scope="module")
def tiny_source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_vocoder(tmp_path_factory.mktemp("vocoder") / "tiny", seed=0)


@pytest.fixture
def tiny_copy(tiny_source: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(tiny_source, tmp_path / "copy"))


def _edit_config(folder: Path, **changes: object) -> None:
    path = folder / CONFIG_FILENAME
    raw = json.loads(path.read_text())
    raw.update(changes)
    path.write_text(json.dumps(raw))


def test_missing_folder_and_missing_files(tiny_copy: Path, tmp_path: Path) -> None:
    with pytest.raises(ModelMissing, match="folder does not exist"):
        load_torch_vocoder(tmp_path / "nowhere")
    (tiny_copy / CONFIG_FILENAME).unlink()
    with pytest.raises(ModelMissing, match="config.json is missing") as info:
        load_torch_vocoder(tiny_copy)
    assert info.value.path == tiny_copy / CONFIG_FILENAME and info.value.fix


def test_missing_checkpoint(tiny_copy: Path) -> None:
    (tiny_copy / CHECKPOINT_FILENAME).unlink()
    with pytest.raises(ModelMissing, match="No vocoder checkpoint") as info:
        load_torch_vocoder(tiny_copy)
    assert info.value.kind == "model_missing"


def test_other_step_checkpoint_name_is_found(tiny_copy: Path) -> None:
    (tiny_copy / CHECKPOINT_FILENAME).rename(tiny_copy / "g_00100000")
    assert load_torch_vocoder(tiny_copy).config.num_embeddings == 1000


def test_truncated_checkpoint_is_corrupt(tiny_copy: Path) -> None:
    path = tiny_copy / CHECKPOINT_FILENAME
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(ModelCorrupt, match="truncated or corrupt") as info:
        load_torch_vocoder(tiny_copy)
    assert info.value.path == path


@pytest.mark.parametrize("payload", [b"", b"not a torch file at all", b"\x80\x02garbage"])
def test_garbage_checkpoint_is_corrupt(tiny_copy: Path, payload: bytes) -> None:
    (tiny_copy / CHECKPOINT_FILENAME).write_bytes(payload)
    with pytest.raises(ModelCorrupt):
        load_torch_vocoder(tiny_copy)


def test_invalid_json_config_is_corrupt(tiny_copy: Path) -> None:
    (tiny_copy / CONFIG_FILENAME).write_text('{"resblock": "1", ')
    with pytest.raises(ModelCorrupt, match="not valid JSON"):
        load_torch_vocoder(tiny_copy)


def test_missing_generator_key(tiny_copy: Path) -> None:
    state = torch.load(tiny_copy / CHECKPOINT_FILENAME, weights_only=True)["generator"]
    torch.save({"model": state}, tiny_copy / CHECKPOINT_FILENAME)
    with pytest.raises(ModelIncompatible, match="no 'generator' entry.*'model'"):
        load_torch_vocoder(tiny_copy)


def test_python_objects_are_refused_by_weights_only(tiny_copy: Path) -> None:
    torch.save({"generator": OrderedDict(), "extra": ModelMissing("x")}, tiny_copy / CHECKPOINT_FILENAME)
    with pytest.raises(ModelIncompatible, match="Python objects"):
        load_torch_vocoder(tiny_copy)


def test_shape_mismatch_names_the_tensor(tiny_copy: Path) -> None:
    _edit_config(tiny_copy, upsample_initial_channel=64)
    with pytest.raises(ModelIncompatible, match="Shape mismatch for 'conv_pre.weight'.*\\(64, 16, 7\\)"):
        load_torch_vocoder(tiny_copy)


def test_wrong_num_embeddings(tiny_copy: Path) -> None:
    _edit_config(tiny_copy, num_embeddings=500)
    with pytest.raises(ModelIncompatible, match="1000 unit embeddings but config.json says num_embeddings=500"):
        load_torch_vocoder(tiny_copy)


def test_missing_and_unexpected_keys(tiny_copy: Path) -> None:
    state = torch.load(tiny_copy / CHECKPOINT_FILENAME, weights_only=True)["generator"]
    del state["conv_post.bias"]
    state["spkr.weight"] = torch.zeros(3, 16)
    torch.save({"generator": state}, tiny_copy / CHECKPOINT_FILENAME)
    with pytest.raises(ModelIncompatible, match=r"missing \['conv_post.bias'\], unexpected \['spkr.weight'\]"):
        load_torch_vocoder(tiny_copy)


def test_lonely_weight_norm_half(tiny_copy: Path) -> None:
    state = torch.load(tiny_copy / CHECKPOINT_FILENAME, weights_only=True)["generator"]
    del state["ups.2.weight_v"]
    torch.save({"generator": state}, tiny_copy / CHECKPOINT_FILENAME)
    with pytest.raises(ModelIncompatible, match="ups.2.weight_g.*partner") as info:
        load_torch_vocoder(tiny_copy)
    assert info.value.path == tiny_copy / CHECKPOINT_FILENAME


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"resblock": "2"}, "ResBlock type '1'"),
        ({"f0": True}, "'f0'"),
        ({"multispkr": True}, "'multispkr'"),
        ({"upsample_rates": [5, 4, 4, 2, 3]}, "code_hop_size"),
        ({"num_embeddings": "1000"}, "num_embeddings"),
        ({"upsample_kernel_sizes": [11, 8, 8, 4, 3]}, "does not fit rate"),
        ({"dur_predictor_params": {"encoder_embed_dim": 16, "var_pred_hidden_dim": 16,
                                   "var_pred_kernel_size": 5, "var_pred_dropout": 0.5}}, "var_pred_kernel_size"),
    ],
)
def test_unsupported_configs(tiny_copy: Path, changes: dict[str, object], message: str) -> None:
    _edit_config(tiny_copy, **changes)
    with pytest.raises(ModelIncompatible, match=message):
        load_torch_vocoder(tiny_copy)


def test_missing_config_field(tiny_copy: Path) -> None:
    raw = json.loads((tiny_copy / CONFIG_FILENAME).read_text())
    del raw["upsample_rates"]
    (tiny_copy / CONFIG_FILENAME).write_text(json.dumps(raw))
    with pytest.raises(ModelIncompatible, match="no 'upsample_rates' field"):
        load_torch_vocoder(tiny_copy)


@pytest.mark.parametrize("units", [[1, 2, 1000], [-1, 5], [3, 99999]])
def test_units_out_of_range_are_bad_input(tiny_source: Path, units: list[int]) -> None:
    runtime = TorchVocoderRuntime(load_torch_vocoder(tiny_source), "cpu")
    with pytest.raises(BadInput, match="out of range: this vocoder knows units 0..999"):
        runtime.synthesize(units)
    stream = StreamingVocoder(runtime, chunk_units=2)
    with pytest.raises(BadInput):
        stream.push(units)
    assert stream.state.received_units == 0  # a rejected push adds nothing


@pytest.mark.parametrize("units", [[1.5, 2.0], [[1, 2], [3, 4]], ["a", "b"]])
def test_non_integer_units_are_bad_input(tiny_source: Path, units: object) -> None:
    runtime = TorchVocoderRuntime(load_torch_vocoder(tiny_source), "cpu")
    with pytest.raises(BadInput):
        runtime.synthesize(units)  # type: ignore[arg-type]
