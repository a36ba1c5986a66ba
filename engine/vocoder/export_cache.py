"""The ONNX export cache: one checked export per vocoder folder, redone only when its inputs change.

The cache lives in the platformdirs cache folder (``engine.paths.cache_dir()``), keyed by the
vocoder folder's absolute path. Its ``manifest.json`` records the source checkpoint's and
config's sha256, the opset, the onnxruntime version and the export format; any difference (or a
missing file) triggers a fresh export that atomically replaces the old one.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

from engine.paths import cache_dir
from engine.vocoder.export_process import export_in_subprocess
from engine.vocoder.onnx_export import (
    DEFAULT_OPSET,
    DURATIONS_FILENAME,
    GENERATOR_FILENAME,
    OnnxExport,
    ProgressCallback,
    export_vocoder_onnx,
    read_manifest,
    source_fingerprint,
)

logger = logging.getLogger(__name__)

CACHE_SUBDIR = "vocoder-onnx"
_KEY_CHARS = 16


def default_export_dir(vocoder_dir: Path) -> Path:
    """``<cache>/vocoder-onnx/<hash of the vocoder folder's absolute path>``."""
    key = hashlib.sha256(str(Path(vocoder_dir).resolve()).encode("utf-8")).hexdigest()[:_KEY_CHARS]
    return cache_dir() / CACHE_SUBDIR / key


def stale_reasons(export_dir: Path, fingerprint: dict[str, object]) -> list[str]:
    """Why the export in ``export_dir`` cannot be reused (empty list: reusable)."""
    manifest = read_manifest(export_dir)
    if manifest is None:
        return ["no export yet"]
    reasons = [
        f"{key} changed ({manifest.get(key)!r} -> {value!r})"
        for key, value in fingerprint.items()
        if manifest.get(key) != value
    ]
    for name in (DURATIONS_FILENAME, GENERATOR_FILENAME):
        path = Path(export_dir) / name
        if not path.is_file() or path.stat().st_size == 0:
            reasons.append(f"{name} is missing")
    return reasons


def ensure_vocoder_onnx(
    vocoder_dir: Path,
    *,
    opset: int = DEFAULT_OPSET,
    export_dir: Path | None = None,
    on_progress: ProgressCallback | None = None,
    force: bool = False,
    in_subprocess: bool = False,
) -> OnnxExport:
    """Return a checked ONNX export of ``vocoder_dir``, exporting only when the cache is stale.

    ``in_subprocess`` runs the export in a child process (``export_process``): the app does this
    so the export's long GIL-holding stretches cannot freeze its UI thread.
    """
    export_dir = Path(export_dir) if export_dir is not None else default_export_dir(vocoder_dir)
    if on_progress is not None:
        on_progress(0.0, "Checking the vocoder's ONNX export")
    fingerprint = source_fingerprint(vocoder_dir, opset)
    reasons = ["export forced"] if force else stale_reasons(export_dir, fingerprint)
    if not reasons:
        logger.debug("reusing vocoder ONNX export in %s", export_dir)
        if on_progress is not None:
            on_progress(1.0, "Using the cached ONNX vocoder")
        manifest = read_manifest(export_dir) or {}
        return OnnxExport(export_dir, export_dir / DURATIONS_FILENAME, export_dir / GENERATOR_FILENAME, manifest)
    logger.info("exporting the vocoder to ONNX in %s: %s", export_dir, "; ".join(reasons))
    if in_subprocess:
        return export_in_subprocess(
            vocoder_dir, export_dir, opset=opset, on_progress=on_progress, fingerprint=fingerprint
        )
    return export_vocoder_onnx(
        vocoder_dir, export_dir, opset=opset, on_progress=on_progress, fingerprint=fingerprint
    )
