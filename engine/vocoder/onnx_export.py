"""ONNX export of the unit vocoder, with a parity check against PyTorch.

Design: **two self-contained graphs** in one export folder, not one graph.

* ``durations.onnx``: ``units`` int64 (1, T) -> ``durations`` int64 (1, T) (embedding,
  VariancePredictor, ``clamp(round(exp(x) - 1), 1)``), about 0.2 MB at full size.
* ``generator.onnx``: ``frame_units`` int64 (1, F) -> ``wav`` float32 (1, F * 320) (embedding of
  units already repeated by their durations, then HiFi-GAN), about 55 MB at full size.

Why two: streaming runs the two halves on different windows (durations need +-2 units, the
generator +-23 frames), and the data-dependent ``repeat_interleave`` between them is a one-line
``np.repeat`` outside the graph. Both axes T and F are dynamic; each file embeds its weights (no
``.onnx.data`` sidecar); weight norm was folded at load time so the graphs are plain Conv ops.

Every export is checked: durations must match PyTorch exactly and the waveform within
``PARITY_TOLERANCE`` on seeded random unit sequences, otherwise the export is discarded.
"""

from __future__ import annotations

import contextlib
import errno
import io
import json
import logging
import os
import shutil
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import torch

from engine.errors import DiskFull, EngineError
from engine.vocoder.checkpoint import file_sha256, find_checkpoint, load_torch_vocoder
from engine.vocoder.defaults import CONFIG_FILENAME, DEFAULT_OPSET
from engine.vocoder.model import DurationGraph, GeneratorGraph, UnitVocoder

logger = logging.getLogger(__name__)

ProgressCallback = Callable[[float, str], None]

PARITY_TOLERANCE = 1e-3
# Bump when the graphs' inputs/outputs or the export code change meaning: invalidates every cache.
EXPORT_FORMAT_VERSION = 1
DURATIONS_FILENAME = "durations.onnx"
GENERATOR_FILENAME = "generator.onnx"
MANIFEST_FILENAME = "manifest.json"
# Seeded random sequences for the parity check: (seed, number of units).
PARITY_CASES: tuple[tuple[int, int], ...] = ((0, 1), (1, 9), (2, 48))
_EXAMPLE_UNITS = 12
_EXAMPLE_FRAMES = 40
_MAX_AXIS = 1 << 20


class ExportParityError(EngineError):
    """The exported graphs disagree with PyTorch; the export is discarded (an engine bug, not user error)."""


@dataclass(frozen=True, slots=True)
class OnnxExport:
    """Paths of one checked export and its manifest."""

    directory: Path
    durations_path: Path
    generator_path: Path
    manifest: dict[str, object]


def read_manifest(export_dir: Path) -> dict[str, object] | None:
    """The manifest of an export folder, or None if absent/unreadable."""
    try:
        manifest = json.loads((Path(export_dir) / MANIFEST_FILENAME).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    return manifest if isinstance(manifest, dict) else None


def onnxruntime_version() -> str:
    import onnxruntime

    return str(onnxruntime.__version__)


def source_fingerprint(vocoder_dir: Path, opset: int) -> dict[str, object]:
    """What an export depends on; a cached export is reused only if all of it is unchanged."""
    vocoder_dir = Path(vocoder_dir)
    checkpoint = find_checkpoint(vocoder_dir)
    config_path = vocoder_dir / CONFIG_FILENAME
    return {
        "format_version": EXPORT_FORMAT_VERSION,
        "source_checkpoint_sha256": file_sha256(checkpoint),
        "source_config_sha256": file_sha256(config_path) if config_path.is_file() else None,
        "opset": opset,
        "onnxruntime_version": onnxruntime_version(),
    }


def _progress(on_progress: ProgressCallback | None, fraction: float, message: str) -> None:
    logger.debug("vocoder export %.0f%%: %s", fraction * 100, message)
    if on_progress is not None:
        on_progress(fraction, message)


def _export_graph(module: torch.nn.Module, example: torch.Tensor, path: Path, axis_name: str, opset: int) -> None:
    """Export ``module`` with a dynamic axis 1, then check the file is valid and self-contained."""
    input_name, output_name = ("units", "durations") if axis_name == "units" else ("frame_units", "wav")
    dim = torch.export.Dim(axis_name, min=1, max=_MAX_AXIS)
    # The exporter prints progress lines and deprecation noise, and logs "torchvision is not
    # installed" warnings; keep the engine's output clean (the text goes to the debug log).
    exporter_logger = logging.getLogger("torch.onnx")
    previous_level = exporter_logger.level
    exporter_logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()) as captured:
            warnings.simplefilter("ignore")
            torch.onnx.export(
                module.eval(),
                (example,),
                str(path),
                dynamo=True,
                external_data=False,
                verbose=False,
                opset_version=opset,
                input_names=[input_name],
                output_names=[output_name],
                dynamic_shapes={input_name: {1: dim}},
            )
    finally:
        exporter_logger.setLevel(previous_level)
    logger.debug("torch.onnx.export output for %s:\n%s", path.name, captured.getvalue())
    model = onnx.load(str(path), load_external_data=False)
    onnx.checker.check_model(model)
    if any(init.data_location == onnx.TensorProto.EXTERNAL for init in model.graph.initializer):
        raise ExportParityError(f"{path.name} refers to external weight data; expected a self-contained file.")


def check_parity(
    model: UnitVocoder, durations_path: Path, generator_path: Path, tolerance: float = PARITY_TOLERANCE
) -> float:
    """Run both graphs on CPU against PyTorch; return the max abs waveform difference or raise."""
    import onnxruntime

    providers = ["CPUExecutionProvider"]
    dur_session = onnxruntime.InferenceSession(str(durations_path), providers=providers)
    gen_session = onnxruntime.InferenceSession(str(generator_path), providers=providers)
    worst = 0.0
    for seed, length in PARITY_CASES:
        rng = np.random.default_rng(seed)
        units = rng.integers(0, model.config.num_embeddings, size=(1, length), dtype=np.int64)
        with torch.inference_mode():
            ref_durations = model.durations(torch.from_numpy(units)).numpy()
            frame_units = np.repeat(units, ref_durations[0], axis=1)
            ref_wav = model.generate(torch.from_numpy(frame_units)).numpy()
        got_durations = dur_session.run(None, {"units": units})[0]
        if got_durations.shape != ref_durations.shape or not np.array_equal(got_durations, ref_durations):
            raise ExportParityError(
                f"ONNX durations differ from PyTorch for {length} random units: "
                f"{got_durations.tolist()} vs {ref_durations.tolist()}."
            )
        got_wav = gen_session.run(None, {"frame_units": frame_units})[0]
        if got_wav.shape != ref_wav.shape:
            raise ExportParityError(f"ONNX waveform shape {got_wav.shape} differs from PyTorch {ref_wav.shape}.")
        diff = float(np.max(np.abs(got_wav - ref_wav)))
        worst = max(worst, diff)
        if not diff <= tolerance:
            raise ExportParityError(
                f"ONNX waveform differs from PyTorch by {diff:.3g} (> {tolerance:g}) on {length} random units."
            )
    return worst


def export_vocoder_onnx(
    vocoder_dir: Path,
    out_dir: Path,
    *,
    opset: int = DEFAULT_OPSET,
    on_progress: ProgressCallback | None = None,
    fingerprint: dict[str, object] | None = None,
) -> OnnxExport:
    """Export, parity-check and write a manifest into ``out_dir`` (replaced atomically).

    ``fingerprint`` is ``source_fingerprint(vocoder_dir, opset)`` if the caller already has it.
    """
    vocoder_dir, out_dir = Path(vocoder_dir), Path(out_dir)
    if fingerprint is None:
        _progress(on_progress, 0.0, "Hashing the vocoder checkpoint")
        fingerprint = source_fingerprint(vocoder_dir, opset)
    _progress(on_progress, 0.05, "Loading the PyTorch vocoder")
    model = load_torch_vocoder(vocoder_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = out_dir.with_name(f".{out_dir.name}.tmp-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    try:
        staging.mkdir(parents=True)
        started = time.perf_counter()
        _progress(on_progress, 0.1, "Exporting the duration predictor to ONNX")
        _export_graph(
            DurationGraph(model), torch.zeros(1, _EXAMPLE_UNITS, dtype=torch.long),
            staging / DURATIONS_FILENAME, "units", opset,
        )
        _progress(on_progress, 0.25, "Exporting the HiFi-GAN generator to ONNX")
        _export_graph(
            GeneratorGraph(model), torch.zeros(1, _EXAMPLE_FRAMES, dtype=torch.long),
            staging / GENERATOR_FILENAME, "frames", opset,
        )
        _progress(on_progress, 0.75, "Checking the ONNX export against PyTorch")
        max_diff = check_parity(model, staging / DURATIONS_FILENAME, staging / GENERATOR_FILENAME)
        manifest: dict[str, object] = {
            **fingerprint,
            "source_checkpoint": str(find_checkpoint(vocoder_dir).resolve()),
            "torch_version": torch.__version__,
            "onnx_version": onnx.__version__,
            "durations_file": DURATIONS_FILENAME,
            "generator_file": GENERATOR_FILENAME,
            "parity_max_abs_diff": max_diff,
            "parity_tolerance": PARITY_TOLERANCE,
            "export_seconds": round(time.perf_counter() - started, 2),
            "created_unix": int(time.time()),
        }
        (staging / MANIFEST_FILENAME).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
        if out_dir.exists():
            shutil.rmtree(out_dir)
        staging.rename(out_dir)
    except OSError as exc:
        if exc.errno == errno.ENOSPC:
            raise DiskFull(
                "No space left to write the vocoder's ONNX export.", path=out_dir, fix="Free some disk space."
            ) from exc
        raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    _progress(on_progress, 1.0, f"Vocoder exported to ONNX (max diff vs PyTorch {max_diff:.2g})")
    return OnnxExport(out_dir, out_dir / DURATIONS_FILENAME, out_dir / GENERATOR_FILENAME, manifest)
