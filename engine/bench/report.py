"""Markdown tables, statistics, the machine description and appending to ``bench/RESULTS.md``."""

from __future__ import annotations

import importlib.metadata
import math
import os
import platform
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

RESULTS_HEADING = "# OmniTalk benchmark results"
REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_RESULTS = REPO_ROOT / "bench" / "RESULTS.md"
P90 = 90.0
_VERSION_DISTRIBUTIONS = (
    ("torch", ("torch",)),
    ("transformers", ("transformers",)),
    ("onnxruntime", ("onnxruntime", "onnxruntime-gpu")),
    ("numpy", ("numpy",)),
    ("bitsandbytes", ("bitsandbytes",)),
)


@dataclass(slots=True)
class Table:
    """A Markdown table: ``headers`` and rows of already formatted cells."""

    headers: list[str]
    rows: list[list[str]] = field(default_factory=list)

    def add(self, *cells: str) -> None:
        if len(cells) != len(self.headers):
            raise ValueError(f"{len(cells)} cells for {len(self.headers)} columns")
        self.rows.append(list(cells))

    def markdown(self) -> str:
        lines = ["| " + " | ".join(self.headers) + " |", "|" + "|".join("---" for _ in self.headers) + "|"]
        lines += ["| " + " | ".join(row) + " |" for row in self.rows]
        return "\n".join(lines)


# ------------------------------------------------------------------------------------ statistics


def median(values: Sequence[float]) -> float:
    return float(np.median(values)) if len(values) else math.nan


def p90(values: Sequence[float]) -> float:
    """90th percentile, linear interpolation between the closest runs (few runs: close to the max)."""
    return float(np.percentile(values, P90)) if len(values) else math.nan


def fmt(value: float | None, digits: int = 0) -> str:
    """A number for a table cell; "-" for missing values."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if math.isinf(value):
        return "inf"
    return f"{value:.{digits}f}"


def millions(n: int) -> str:
    """A parameter count: ``8,030M``, ``142M``, ``0.687M`` (three significant digits below 100M)."""
    return f"{n / 1e6:,.0f}M" if n >= 100e6 else f"{n / 1e6:.3g}M"


# ------------------------------------------------------------------------------------- machine


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def load_average() -> float:
    """The 1-minute load average (NaN where the OS has none)."""
    return os.getloadavg()[0] if hasattr(os, "getloadavg") else math.nan


def versions() -> str:
    """``Python 3.11.7, torch 2.x, ...`` from the installed distributions (nothing is imported)."""
    parts = [f"Python {platform.python_version()}"]
    for label, names in _VERSION_DISTRIBUTIONS:
        for name in names:
            try:
                parts.append(f"{label} {importlib.metadata.version(name)}")
                break
            except importlib.metadata.PackageNotFoundError:
                continue
    return ", ".join(parts)


def git_revision(root: Path = REPO_ROOT) -> str | None:
    """``<short sha>`` (``+ local changes`` when the tree is dirty), None outside a git checkout."""
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=root,
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return f"{sha} + local changes" if dirty else sha


def device_description(device: str, torch_threads: int) -> str:
    """``cpu: <model>, 2 logical cores, torch threads 2`` or ``cuda: <GPU>, 80 GB, CUDA 12.4 (...)``."""
    host = f"{cpu_name()}, {os.cpu_count()} logical cores, torch threads {torch_threads}"
    if device != "cuda":
        return f"cpu: {host}; no GPU used"
    import torch

    props = torch.cuda.get_device_properties(0)
    return f"cuda: {props.name}, {props.total_memory / 1e9:.0f} GB, CUDA {torch.version.cuda} (host {host})"


# --------------------------------------------------------------------------------------- output


def publish(section: str, path: Path, append: bool) -> None:
    """Print a benchmark's section and, if ``append``, add it to the results file."""
    print(section)
    if append:
        append_section(path, section)
        print(f"appended to {path}")


def append_section(path: Path, section: str) -> None:
    """Append ``section`` to the results file, creating it with its heading; earlier runs stay."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists() or not path.read_text(encoding="utf-8").strip():
        path.write_text(RESULTS_HEADING + "\n", encoding="utf-8")
    with path.open("a", encoding="utf-8") as handle:
        handle.write(section if section.startswith("\n") else "\n" + section)
