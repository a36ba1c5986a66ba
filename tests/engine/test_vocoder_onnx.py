"""ONNX export (self-contained, dynamic, checked), its cache, the onnxruntime backend, and the CLI."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
import soundfile as sf
from onnx import numpy_helper

import engine.vocoder.onnx_export as onnx_export
from engine.__main__ import main
from engine.errors import DeviceUnavailable, ModelCorrupt
from engine.paths import cache_dir
from engine.vocoder.api import load_vocoder_runtime, synthesize_units
from engine.vocoder.checkpoint import file_sha256, load_torch_vocoder, write_tiny_vocoder
from engine.vocoder.export_cache import ensure_vocoder_onnx, stale_reasons
from engine.vocoder.onnx_export import (
    DURATIONS_FILENAME,
    GENERATOR_FILENAME,
    MANIFEST_FILENAME,
    ExportParityError,
    OnnxExport,
    check_parity,
    export_vocoder_onnx,
    source_fingerprint,
)
from engine.vocoder.quality import compare_stream
from engine.vocoder.receptive import exact_lookahead_units
from engine.vocoder.runtime_onnx import CPU_PROVIDER, CUDA_PROVIDER, OnnxVocoderRuntime
from engine.vocoder.runtime_torch import TorchVocoderRuntime

pytestmark = pytest.mark.usefixtures("one_torch_thread_per_module")  # tiny models are latency-bound


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_vocoder(tmp_path_factory.mktemp("vocoder") / "tiny", seed=5)


@pytest.fixture(scope="module")
def export(tiny_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> OnnxExport:
    return export_vocoder_onnx(tiny_dir, tmp_path_factory.mktemp("export") / "onnx")


@pytest.fixture(scope="module")
def onnx_runtime(tiny_dir: Path, export: OnnxExport) -> OnnxVocoderRuntime:
    return load_vocoder_runtime(tiny_dir, "cpu", export_dir=export.directory)  # type: ignore[return-value]


def test_export_is_self_contained_and_dynamic(export: OnnxExport) -> None:
    assert sorted(p.name for p in export.directory.iterdir()) == sorted(
        [DURATIONS_FILENAME, GENERATOR_FILENAME, MANIFEST_FILENAME]
    )
    for path, axis_input in ((export.durations_path, "units"), (export.generator_path, "frame_units")):
        model = onnx.load(str(path))
        assert all(init.data_location != onnx.TensorProto.EXTERNAL for init in model.graph.initializer)
        (graph_input,) = model.graph.input
        assert graph_input.name == axis_input
        dims = graph_input.type.tensor_type.shape.dim
        assert dims[0].dim_value == 1 and dims[1].dim_param  # the unit/frame axis is symbolic
        # weight norm is folded: no Div/ReduceL2 norms left, just convolutions
        ops = {node.op_type for node in model.graph.node}
        assert "ReduceL2" not in ops and "LpNormalization" not in ops
    assert "ConvTranspose" in {n.op_type for n in onnx.load(str(export.generator_path)).graph.node}
    manifest = json.loads((export.directory / MANIFEST_FILENAME).read_text())
    assert manifest["parity_max_abs_diff"] <= 1e-3
    assert manifest["opset"] == onnx_export.DEFAULT_OPSET


@pytest.mark.parametrize("length", [1, 2, 17, 90])
def test_onnx_matches_pytorch(tiny_dir: Path, onnx_runtime: OnnxVocoderRuntime, length: int) -> None:
    torch_runtime = TorchVocoderRuntime(load_torch_vocoder(tiny_dir), "cpu")
    units = np.random.default_rng(length).integers(0, 1000, length)
    assert np.array_equal(onnx_runtime.predict_durations(units), torch_runtime.predict_durations(units))
    got, expected = onnx_runtime.synthesize(units), torch_runtime.synthesize(units)
    assert got.shape == expected.shape and got.dtype == np.float32
    assert np.max(np.abs(got - expected)) < 1e-3


def test_parity_check_catches_a_wrong_graph(tiny_dir: Path, export: OnnxExport, tmp_path: Path) -> None:
    model = onnx.load(str(export.generator_path))
    biggest = max(model.graph.initializer, key=lambda t: int(np.prod(t.dims)))
    tampered = numpy_helper.to_array(biggest) * 1.05
    biggest.CopyFrom(numpy_helper.from_array(tampered.astype(np.float32), biggest.name))
    onnx.save(model, str(tmp_path / "bad.onnx"))
    with pytest.raises(ExportParityError, match="differs from PyTorch"):
        check_parity(load_torch_vocoder(tiny_dir), export.durations_path, tmp_path / "bad.onnx")


def test_streaming_on_onnxruntime_is_exact(onnx_runtime: OnnxVocoderRuntime) -> None:
    units = np.random.default_rng(4).integers(0, 1000, 60).tolist()
    result = compare_stream(
        onnx_runtime, units, chunk_units=10, lookahead_units=exact_lookahead_units(onnx_runtime.config)
    )
    assert result.same_length and result.max_abs_diff < 1e-5


def test_providers_report_what_really_loaded(
    tiny_dir: Path, export: OnnxExport, caplog: pytest.LogCaptureFixture
) -> None:
    cpu = OnnxVocoderRuntime(load_torch_vocoder(tiny_dir).config, export.durations_path, export.generator_path, "cpu")
    assert cpu.providers == (CPU_PROVIDER,) and cpu.device == "cpu"
    with caplog.at_level(logging.WARNING, logger="engine.vocoder.runtime_onnx"):
        auto = OnnxVocoderRuntime(cpu.config, export.durations_path, export.generator_path, "auto")
    if CUDA_PROVIDER in auto.providers:  # a machine with a working GPU stack
        assert auto.device == "cuda" and auto.providers[0] == CUDA_PROVIDER
        return
    assert auto.providers == (CPU_PROVIDER,) and auto.device == "cpu"
    assert any("vocoder runs on CPU" in r.getMessage() and "CUDA" in r.getMessage() for r in caplog.records)
    with pytest.raises(DeviceUnavailable, match="cannot run on the GPU"):
        OnnxVocoderRuntime(cpu.config, export.durations_path, export.generator_path, "cuda")


# Two stages, one resblock: a handful of graph nodes, so each of the six real exports below is quick.
MICRO_DIMS = {
    "upsample_rates": [4, 2], "upsample_kernel_sizes": [8, 4], "code_hop_size": 8, "upsample_initial_channel": 8,
    "resblock_kernel_sizes": [3], "resblock_dilation_sizes": [[1]], "embedding_dim": 8, "var_pred_hidden_dim": 8,
}


def test_cache_reused_and_invalidated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    source = write_tiny_vocoder(tmp_path / "vocoder", seed=1, **MICRO_DIMS)
    messages: list[str] = []

    def ensure(**kwargs: object) -> OnnxExport:
        messages.clear()
        return ensure_vocoder_onnx(source, on_progress=lambda f, m: messages.append(m), **kwargs)  # type: ignore[arg-type]

    def exported() -> bool:
        return any("Exporting the HiFi-GAN generator" in m for m in messages)

    first = ensure()
    assert exported()
    assert first.directory.is_relative_to(cache_dir())  # the platformdirs cache (OMNITALK_HOME in tests)
    assert first.manifest["source_checkpoint_sha256"] == file_sha256(source / "g_00500000")
    stamp = first.generator_path.stat().st_mtime_ns

    again = ensure()
    assert not exported() and again.generator_path.stat().st_mtime_ns == stamp
    assert messages[-1] == "Using the cached ONNX vocoder"

    monkeypatch.setattr(onnx_export, "onnxruntime_version", lambda: "0.0.1-test")
    ensure()
    assert exported()
    assert json.loads((first.directory / MANIFEST_FILENAME).read_text())["onnxruntime_version"] == "0.0.1-test"
    ensure()
    assert not exported()

    ensure(opset=onnx_export.DEFAULT_OPSET + 1)
    assert exported()
    assert onnx.load(str(first.generator_path)).opset_import[0].version == onnx_export.DEFAULT_OPSET + 1

    write_tiny_vocoder(source, seed=99, **MICRO_DIMS)  # same folder, new weights
    changed = ensure(opset=onnx_export.DEFAULT_OPSET + 1)
    assert exported()
    assert changed.manifest["source_checkpoint_sha256"] == file_sha256(source / "g_00500000")
    assert changed.manifest["source_checkpoint_sha256"] != first.manifest["source_checkpoint_sha256"]

    assert not list(first.directory.parent.glob(".*tmp*"))  # no staging leftovers

    # A cached file damaged after its manifest was written is rebuilt on load, not trusted.
    first.generator_path.write_bytes(b"\x08garbage that is not a protobuf")
    with pytest.raises(ModelCorrupt, match="onnxruntime cannot open"):
        OnnxVocoderRuntime(load_torch_vocoder(source).config, first.durations_path, first.generator_path, "cpu")
    runtime = load_vocoder_runtime(source, "cpu", opset=onnx_export.DEFAULT_OPSET + 1)
    assert runtime.synthesize([1, 2, 3]).size > 0
    assert onnx.load(str(first.generator_path)).graph.node  # a valid file again


def test_stale_reasons(tmp_path: Path, export: OnnxExport, tiny_dir: Path) -> None:
    cached = Path(shutil.copytree(export.directory, tmp_path / "cached"))
    fingerprint = source_fingerprint(tiny_dir, onnx_export.DEFAULT_OPSET)
    assert stale_reasons(cached, fingerprint) == []
    assert stale_reasons(cached, {**fingerprint, "source_config_sha256": "0" * 64}) == [
        f"source_config_sha256 changed ({fingerprint['source_config_sha256']!r} -> {'0' * 64!r})"
    ]
    assert stale_reasons(cached, {**fingerprint, "format_version": 0})[0].startswith("format_version changed")
    (cached / GENERATOR_FILENAME).unlink()  # a damaged cache is rebuilt, not trusted
    assert stale_reasons(cached, fingerprint) == [f"{GENERATOR_FILENAME} is missing"]
    (cached / MANIFEST_FILENAME).write_text("{not json")
    assert stale_reasons(cached, fingerprint) == ["no export yet"]


def test_load_runtime_reports_progress(tiny_dir: Path, export: OnnxExport) -> None:
    seen: list[tuple[float, str]] = []
    runtime = load_vocoder_runtime(tiny_dir, "cpu", lambda f, m: seen.append((f, m)), export_dir=export.directory)
    fractions = [f for f, _ in seen]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0
    assert "Vocoder ready (onnx on cpu)" in seen[-1][1]
    runtime.close()
    with pytest.raises(RuntimeError, match="closed"):
        runtime.generate(np.array([1, 2, 3]))
    torch_runtime = load_vocoder_runtime(tiny_dir, "cpu", backend="torch")
    assert torch_runtime.providers == ("torch-cpu",)


def test_synthesize_units_api(tiny_dir: Path, export: OnnxExport, onnx_runtime: OnnxVocoderRuntime) -> None:
    units = [12, 7, 7, 993, 5]
    wav = synthesize_units(tiny_dir, units, backend="torch")
    assert wav.dtype == np.float32 and wav.ndim == 1
    assert np.max(np.abs(wav - onnx_runtime.synthesize(units))) < 1e-3
    assert synthesize_units(tiny_dir, [], backend="torch").size == 0


def test_cli_export_and_vocode(
    tiny_dir: Path, export: OnnxExport, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # `vocode` uses the cache; seed it with the module's export so this test does not export again.
    from engine.vocoder.export_cache import default_export_dir

    shutil.copytree(export.directory, default_export_dir(tiny_dir))
    out = tmp_path / "out.wav"
    assert main(["vocode", "--vocoder", str(tiny_dir), "--units", "12 7 7 993", "--out", str(out)]) == 0
    audio, rate = sf.read(out, dtype="float32")
    assert rate == 16000
    expected = load_vocoder_runtime(tiny_dir, "cpu", backend="torch").synthesize([12, 7, 7, 993])
    assert audio.shape == expected.shape
    assert np.max(np.abs(audio - np.clip(expected, -1, 1))) < 2e-4  # 16-bit PCM
    assert "(onnx on cpu)" in capsys.readouterr().out

    streamed = tmp_path / "streamed.wav"
    assert main(["vocode", "--vocoder", str(tiny_dir), "--units", "1,2,3,4,5,6,7,8,9", "--out", str(streamed),
                 "--chunk-units", "3", "--lookahead-units", "2", "--backend", "torch"]) == 0
    assert sf.info(streamed).frames == load_vocoder_runtime(tiny_dir, "cpu", backend="torch").synthesize(
        list(range(1, 10))).size

    assert main(["vocode", "--vocoder", str(tiny_dir), "--units", "1 2 1000", "--out", str(out)]) == 2
    assert "error (bad_input)" in capsys.readouterr().err
    assert main(["vocode", "--vocoder", str(tiny_dir), "--units", "1 x", "--out", str(out)]) == 2

    assert main(["export-vocoder", "--vocoder", str(tiny_dir)]) == 0  # cache is current: no export
    captured = capsys.readouterr()
    assert "Using the cached ONNX vocoder" in captured.err and "generator.onnx" in captured.out
    assert main(["export-vocoder", "--vocoder", str(tmp_path / "missing")]) == 2
    assert "error (model_missing)" in capsys.readouterr().err
