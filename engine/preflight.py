"""Pre-flight: will the model run here? GPUs and free memory, sizes and memory estimates per
precision, the default precision, folder checks, without loading any weights.

Two rules live here and nowhere else:

- ``model_size``: every size figure of a model set (its files on disk, what it needs in memory per
  device and precision), from the files when they are present, from the official release's
  catalogue otherwise. The README, the setup wizard and the settings dialog all quote it.
- ``recommend_quant``: the precision to use when the user has not chosen one (the wizard's
  "recommended", the settings' "Automatic", the engine's ``LoadModel(quant=None)``).

Qt-free and torch-free (headers and arithmetic: milliseconds for the tiny model, well under a second
for the real one), for the app's dialogs (which still call them from background tasks: the disk may
be slow) and for the CLI. The dialogs take each function as an injectable argument, so tests can
replace the machine.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from engine.config import OFFICIAL_DIMS, QUANT_MODES, OmniDims, QuantMode
from engine.errors import EngineError, ModelMissing
from engine.gpu import GpuInfo, list_gpus
from engine.model_download import catalogue_bytes
from engine.store import DISK_MARGIN_BYTES
from engine.vocoder.defaults import CHECKPOINT_FILENAME, CONFIG_FILENAME

logger = logging.getLogger(__name__)

GB = 1_000_000_000
MB = 1_000_000
DEVICE_TYPES = ("cuda", "cpu")
# What to recommend, best first: the first one that fits wins (nf4 when nothing fits).
RECOMMEND_ORDER: dict[str, tuple[QuantMode, ...]] = {"cuda": ("fp16", "int8", "nf4"), "cpu": ("fp32", "bf16", "nf4")}
CONTEXT_TOKENS = 2048  # the release's tokenizer_model_max_length: what the engine budgets for
VOCODER_FIX = "Choose the folder with g_00500000 and config.json (the unit vocoder)."


@dataclass(frozen=True, slots=True)
class Target:
    """Where the model would run, as the user chose it in settings (``AppSettings.gpu``)."""

    choice: str  # "auto" | "cpu" | "cuda:N"
    device_type: str  # "cuda" | "cpu"
    name: str  # for people: "NVIDIA GeForce RTX 4060", "CPU"
    free_bytes: int | None  # None: unknown (GPU not found, RAM not readable)
    total_bytes: int | None = None

    @property
    def memory_word(self) -> str:
        return "GPU memory" if self.device_type == "cuda" else "RAM"


@dataclass(frozen=True, slots=True)
class SystemInfo:
    gpus: tuple[GpuInfo, ...]
    ram_free_bytes: int | None

    def target(self, choice: str) -> Target:
        """What "auto", "cpu" or "cuda:N" means on this PC (auto = the first GPU, as torch does)."""
        if choice == "cpu" or (choice == "auto" and not self.gpus):
            return Target(choice, "cpu", "CPU", self.ram_free_bytes)
        index = 0 if choice == "auto" else _cuda_index(choice)
        gpu = next((g for g in self.gpus if g.index == index), None)
        if gpu is None:
            return Target(choice, "cuda", f"GPU {index} (not found)", None)
        return Target(choice, "cuda", gpu.name, gpu.free_bytes, gpu.total_bytes)

    def choices(self) -> list[tuple[str, str]]:
        """(value for AppSettings.gpu, label) for a picker: auto, each GPU, CPU."""
        auto = self.target("auto")
        rows = [("auto", f"Automatic ({auto.name})")]
        rows += [
            (g.device, f"GPU {g.index}: {g.name} ({gb(g.free_bytes)} free of {gb(g.total_bytes)})") for g in self.gpus
        ]
        ram = f" ({gb(self.ram_free_bytes)} RAM free)" if self.ram_free_bytes is not None else ""
        rows.append(("cpu", f"CPU, slow{ram}"))
        return rows


def _cuda_index(choice: str) -> int:
    _, _, number = choice.partition(":")
    return int(number) if number.isdigit() else 0


def gb(n_bytes: int | None) -> str:
    return "unknown" if n_bytes is None else f"{n_bytes / GB:.1f} GB"


def size_text(n_bytes: int) -> str:
    """Sizes of files: "850 MB", "18.4 GB"."""
    if n_bytes >= GB:
        return gb(n_bytes)
    return f"{n_bytes / MB:.1f} MB" if n_bytes < 10 * MB else f"{n_bytes / MB:.0f} MB"


def probe_system() -> SystemInfo:
    """NVIDIA GPUs (NVML) and free RAM now: milliseconds, no torch."""
    from engine.model.memory import available_memory

    return SystemInfo(gpus=tuple(list_gpus()), ram_free_bytes=available_memory("cpu"))


Estimates = Mapping[tuple[str, str], int]  # (device type, quant) -> bytes needed


def estimate_all(dims: OmniDims, max_new_tokens: int) -> dict[tuple[str, str], int]:
    """``estimate_memory`` for every quantization on CUDA and on the CPU (arithmetic, no torch)."""
    from engine.model.memory import estimate_memory

    return {
        (device, quant): estimate_memory(
            dims, quant, device_type=device, context_tokens=CONTEXT_TOKENS, max_new_tokens=max_new_tokens
        ).total_bytes
        for device in DEVICE_TYPES
        for quant in QUANT_MODES
    }


@dataclass(frozen=True, slots=True)
class Fit:
    text: str  # "Needs 7.6 GB, you have 6.0 GB free on NVIDIA ..."
    fits: bool | None  # None: free memory unknown


def fit(needed_bytes: int, target: Target) -> Fit:
    need = f"needs about {size_text(needed_bytes)} of {target.memory_word}"
    if target.free_bytes is None:
        return Fit(f"This {need}; free memory on {target.name} is unknown.", None)
    have = f"you have {gb(target.free_bytes)} free on {target.name}"
    if needed_bytes > target.free_bytes:
        return Fit(f"This {need}, {have}: it does not fit.", False)
    return Fit(f"This {need}, {have}.", True)


def recommend_quant(estimates: Estimates, target: Target) -> QuantMode:
    """THE default-precision rule: the best-quality mode that fits in ``target``'s free memory; the
    smallest (nf4) when none fits; with free memory unknown, nf4 on a GPU and fp32 on the CPU."""
    order = RECOMMEND_ORDER[target.device_type]
    if target.free_bytes is None:
        return "nf4" if target.device_type == "cuda" else order[0]
    for quant in order:
        if estimates[(target.device_type, quant)] <= target.free_bytes:
            return quant
    return order[-1]


def default_quant(
    dims: OmniDims,
    device_type: str,
    free_bytes: int | None,
    *,
    max_new_tokens: int,
    context_tokens: int = CONTEXT_TOKENS,
) -> QuantMode:
    """``recommend_quant`` for a model about to load (the engine's ``LoadModel(quant=None)``)."""
    from engine.model.memory import estimate_memory

    estimates: dict[tuple[str, str], int] = {
        (device_type, quant): estimate_memory(
            dims, quant, device_type=device_type, context_tokens=context_tokens, max_new_tokens=max_new_tokens
        ).total_bytes
        for quant in QUANT_MODES
    }
    name = "CPU" if device_type == "cpu" else device_type
    return recommend_quant(estimates, Target("auto", device_type, name, free_bytes))


@dataclass(frozen=True, slots=True)
class ModelSize:
    """Every size figure of one model set (see ``model_size``)."""

    from_files: bool  # True: read from the files on disk; False: the official release's catalogue
    dims: OmniDims
    file_bytes: int  # the set's files: Omni folder, a separate Whisper encoder, the vocoder
    memory: Estimates  # (device type, precision) -> bytes needed to run it

    @property
    def disk_bytes(self) -> int:
        """Free disk space to have for the files (the downloader keeps this margin free)."""
        return self.file_bytes + DISK_MARGIN_BYTES


def _tree_bytes(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file() and not f.name.endswith(".part"))


def model_size(
    model_dir: Path | None,
    speech_encoder: Path | None = None,
    vocoder_dir: Path | None = None,
    *,
    max_new_tokens: int,
) -> ModelSize:
    """Every size figure of a model set, from one place: the files' real sizes and dims (read from
    their headers) when ``model_dir`` holds a readable model, the catalogue's (the official release)
    otherwise. ``memory`` has an estimate for every device type and precision."""
    found: tuple[OmniDims, Path] | None = None
    if model_dir is not None:
        from engine.model.dims import read_model

        try:
            dims, encoder = read_model(model_dir, speech_encoder)
            found = dims, encoder.path
        except (EngineError, OSError) as exc:
            logger.info("Sizes from the catalogue: %s is not a readable model (%s)", model_dir, exc)
    if model_dir is None or found is None:
        return ModelSize(False, OFFICIAL_DIMS, catalogue_bytes(), estimate_all(OFFICIAL_DIMS, max_new_tokens))
    dims, encoder_path = found
    others = [p for p in (encoder_path, vocoder_dir) if p is not None and p.exists()]
    outside = [p for p in others if not p.resolve().is_relative_to(model_dir.resolve())]
    file_bytes = sum(_tree_bytes(p) for p in (model_dir, *outside))
    return ModelSize(True, dims, file_bytes, estimate_all(dims, max_new_tokens))


def _count(n: int) -> str:
    return f"{n / 1e9:.1f} billion" if n >= 1e9 else f"{n / 1e6:.1f} million"


@dataclass(frozen=True, slots=True)
class ModelCheck:
    """What a successful folder check found."""

    dims: OmniDims
    summary: str


def check_vocoder_dir(vocoder_dir: Path) -> str:
    """Raise ``ModelMissing``/``ModelIncompatible`` unless the folder holds a usable vocoder."""
    from engine.vocoder.config import load_config

    if not vocoder_dir.is_dir():
        raise ModelMissing("The vocoder folder does not exist.", path=vocoder_dir, fix=VOCODER_FIX)
    missing = [name for name in (CHECKPOINT_FILENAME, CONFIG_FILENAME) if not (vocoder_dir / name).is_file()]
    if missing:
        raise ModelMissing(f"The vocoder folder lacks {' and '.join(missing)}.", path=vocoder_dir, fix=VOCODER_FIX)
    config = load_config(vocoder_dir)
    return f"unit vocoder ({config.num_embeddings} units, {config.sampling_rate // 1000} kHz)"


def check_model_folders(model_dir: Path, speech_encoder: Path | None, vocoder_dir: Path | None) -> ModelCheck:
    """Read the folders' dims without loading weights; raise the EngineError that explains a problem.

    Headers only (config.json, safetensors headers, the encoder's stored dims): no torch, no weights.
    """
    from engine.model.omni_config import read_omni_config

    read_omni_config(model_dir)
    from engine.model.dims import read_dims

    dims = read_dims(model_dir, speech_encoder)
    llm, enc = dims.llm, dims.encoder
    parts = [
        f"LLaMA-Omni: {llm.n_layers} layers, width {llm.hidden_size}, {_count(llm.n_params)} parameters",
        f"speech encoder: {enc.n_audio_layer} layers, width {enc.n_audio_state}",
        f"unit decoder: {dims.unit_decoder.n_layers} layers",
    ]
    if vocoder_dir is not None:
        parts.append(check_vocoder_dir(vocoder_dir))
    return ModelCheck(dims=dims, summary="; ".join(parts))


SystemProbe = Callable[[], SystemInfo]
Sizer = Callable[..., ModelSize]  # model_size's signature
ModelChecker = Callable[[Path, Path | None, Path | None], ModelCheck]
