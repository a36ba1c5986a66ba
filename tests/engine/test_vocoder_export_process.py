"""The vocoder's ONNX export in a child process (what the app does on a first load)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from engine.errors import DiskFull, EngineError, ModelCorrupt, NotEnoughMemory, error_from_kind
from engine.vocoder.api import load_vocoder_runtime
from engine.vocoder.checkpoint import write_tiny_vocoder
from engine.vocoder.export_cache import default_export_dir, ensure_vocoder_onnx
from engine.vocoder.export_process import PREFIX, ExportFailed, export_in_subprocess
from engine.vocoder.onnx_export import MANIFEST_FILENAME

MICRO_DIMS = {
    "upsample_rates": [4, 2], "upsample_kernel_sizes": [8, 4], "code_hop_size": 8, "upsample_initial_channel": 8,
    "resblock_kernel_sizes": [3], "resblock_dilation_sizes": [[1]], "embedding_dim": 8, "var_pred_hidden_dim": 8,
}


@pytest.fixture
def micro(tmp_path: Path) -> Path:
    return write_tiny_vocoder(tmp_path / "vocoder", seed=3, **MICRO_DIMS)


def test_child_export_matches_in_process_export_and_relays_progress(micro: Path, tmp_path: Path) -> None:
    progress: list[tuple[float, str]] = []
    child = export_in_subprocess(micro, tmp_path / "child", on_progress=lambda f, m: progress.append((f, m)))
    assert [m for _, m in progress][:3] == [
        "Hashing the vocoder checkpoint", "Loading the PyTorch vocoder", "Exporting the duration predictor to ONNX"
    ]
    assert progress[-1][0] == 1.0 and progress[-1][1].startswith("Vocoder exported to ONNX")
    assert [f for f, _ in progress] == sorted(f for f, _ in progress)
    manifest = json.loads((child.directory / MANIFEST_FILENAME).read_text())
    assert child.manifest == manifest and manifest["parity_max_abs_diff"] <= manifest["parity_tolerance"]
    # The graphs the child wrote synthesise what the PyTorch vocoder does.
    runtime = load_vocoder_runtime(micro, "cpu", export_dir=child.directory)
    expected = load_vocoder_runtime(micro, "cpu", backend="torch").synthesize([5, 9, 9, 2, 400])
    np.testing.assert_allclose(runtime.synthesize([5, 9, 9, 2, 400]), expected, atol=1e-3)


def test_the_engine_loader_exports_in_a_child_and_reuses_the_cache(micro: Path) -> None:
    messages: list[str] = []
    runtime = load_vocoder_runtime(micro, "cpu", lambda f, m: messages.append(m), export_in_subprocess=True)
    assert runtime.synthesize([1, 2, 3]).size > 0
    assert "Checking the ONNX export against PyTorch" in messages  # relayed from the child
    assert (default_export_dir(micro) / MANIFEST_FILENAME).is_file()
    messages.clear()
    load_vocoder_runtime(micro, "cpu", lambda f, m: messages.append(m), export_in_subprocess=True)
    assert "Using the cached ONNX vocoder" in messages and not any("Exporting" in m for m in messages)


def test_a_corrupt_checkpoint_raises_its_kind_in_the_parent(micro: Path, tmp_path: Path) -> None:
    checkpoint = micro / "g_00500000"
    checkpoint.write_bytes(checkpoint.read_bytes()[:200])  # truncated
    with pytest.raises(ModelCorrupt) as caught:
        ensure_vocoder_onnx(micro, export_dir=tmp_path / "out", in_subprocess=True)
    assert caught.value.path == checkpoint and caught.value.fix
    assert not (tmp_path / "out").exists()  # nothing half-written is left to be trusted


def test_a_child_that_dies_raises_export_failed_with_its_last_words(micro: Path, tmp_path: Path) -> None:
    fake_python = tmp_path / "python-that-crashes"
    fake_python.write_text("#!/bin/sh\necho 'Segmentation fault in libfoo' >&2\nexit 139\n")
    fake_python.chmod(0o755)
    if sys.platform == "win32":
        pytest.skip("a shell script stands in for a crashing interpreter")
    with pytest.raises(ExportFailed, match=r"exit code 139\): Segmentation fault in libfoo") as caught:
        export_in_subprocess(micro, tmp_path / "out", python=str(fake_python))
    assert caught.value.fix and "memory" in caught.value.fix


def test_an_interpreter_that_cannot_start_is_a_clear_error(micro: Path, tmp_path: Path) -> None:
    with pytest.raises(ExportFailed, match="Could not start"):
        export_in_subprocess(micro, tmp_path / "out", python=str(tmp_path / "no-such-python"))


def test_the_child_exits_when_the_app_goes_away(micro: Path, tmp_path: Path) -> None:
    child = subprocess.Popen(
        [sys.executable, "-m", "engine.vocoder.export_process", "--vocoder", str(micro), "--out", str(tmp_path / "o")],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    assert child.stdout is not None and child.stdin is not None
    first = child.stdout.readline()
    while not first.startswith(PREFIX):  # wait until it is working
        first = child.stdout.readline()
    started = time.monotonic()
    child.stdin.close()  # what the OS does to the pipe when the app exits or crashes
    assert child.wait(timeout=60) == 3
    assert time.monotonic() - started < 30
    assert not (tmp_path / "o").exists()


def test_error_kinds_round_trip() -> None:
    assert type(error_from_kind("disk_full", "full", path="/x", fix="free")) is DiskFull
    assert type(error_from_kind("not_enough_memory", "oom")) is NotEnoughMemory
    unknown = error_from_kind("from_a_newer_version", "odd")
    assert type(unknown) is EngineError and str(unknown) == "odd"
    rebuilt = error_from_kind("model_corrupt", "bad", path="/m/g", fix="download again")
    assert isinstance(rebuilt, ModelCorrupt) and rebuilt.path == Path("/m/g") and rebuilt.fix == "download again"


def test_the_child_writes_the_fingerprint_the_cache_checked(micro: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The parent hashed the files to check the cache; the child records that, not a second hash."""
    import engine.vocoder.onnx_export as onnx_export

    monkeypatch.setattr(onnx_export, "onnxruntime_version", lambda: "0.0.1-parent")
    messages: list[str] = []
    export = ensure_vocoder_onnx(micro, on_progress=lambda f, m: messages.append(m), in_subprocess=True)
    assert "Exporting the HiFi-GAN generator to ONNX" in messages
    assert "Hashing the vocoder checkpoint" not in messages
    assert export.manifest["onnxruntime_version"] == "0.0.1-parent"
    messages.clear()
    ensure_vocoder_onnx(micro, on_progress=lambda f, m: messages.append(m), in_subprocess=True)
    assert messages[-1] == "Using the cached ONNX vocoder"  # the manifest matches what the parent checks
