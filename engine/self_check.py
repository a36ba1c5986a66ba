"""The engine's half of ``--self-check``: is every dependency importable, and does a whole turn run?

``dependency_checks`` imports each library the engine needs (each one's version and import time,
or the error and the fix); ``turn_checks`` writes the tiny random-weight model (``python -m
engine make-tiny``'s set) into a temporary folder, answers one spoken question with it on the CPU,
and turns the answer's units into speech with the ONNX vocoder, exported in a child process as the
app does (so a frozen build proves that its child processes start). ``app/self_check.py`` adds
the window and the GPU and prints the report; ``format_report`` is shared by both.

No Qt here (the engine is usable without it).
"""

from __future__ import annotations

import importlib
import importlib.metadata
import logging
import platform
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # engine.tiny imports torch: a missing torch must fail a step, not this module
    from engine.tiny import TinyPaths

logger = logging.getLogger(__name__)

OK, FAIL, WARN, INFO = "ok", "FAIL", "warn", "info"
TURN_MAX_NEW_TOKENS = 12
TURN_SEED = 0
QUESTION_S = 1.0
QUESTION_TONES_HZ = (180.0, 360.0, 720.0)  # a voiced-speech-like harmonic stack
QUESTION_GAIN = 0.2
SAMPLE_RATE_HZ = 16_000
FALLBACK_UNITS = (5, 17, 17, 42, 99, 3)  # if the random model answers without units
# Where the project's own requirements limit a library to some platforms (pyproject.toml markers).
GPU_LIBRARY_PLATFORMS = {("Linux", "x86_64"), ("Linux", "AMD64"), ("Windows", "AMD64"), ("Windows", "x86_64")}


@dataclass(frozen=True, slots=True)
class Check:
    """One line of the report."""

    name: str
    status: str  # OK, FAIL (the run fails), WARN (works, but not as a user would want), INFO
    detail: str
    fix: str = ""
    seconds: float | None = None


@dataclass(frozen=True, slots=True)
class Dependency:
    module: str
    distribution: str  # the pip name, for its version and the fix
    needed_for: str
    required: bool = True


def _on_gpu_platform() -> bool:
    return (platform.system(), platform.machine()) in GPU_LIBRARY_PLATFORMS


def engine_dependencies() -> tuple[Dependency, ...]:
    gpu_platform = _on_gpu_platform()
    return (
        Dependency("numpy", "numpy", "audio and tensors"),
        Dependency("torch", "torch", "the model"),
        Dependency("transformers", "transformers", "the language model"),
        Dependency("safetensors", "safetensors", "reading model files"),
        Dependency("tokenizers", "tokenizers", "the tokenizer"),
        Dependency("accelerate", "accelerate", "loading large models"),
        Dependency("peft", "peft", "fine-tuned adapters"),
        Dependency("bitsandbytes", "bitsandbytes", "4-bit and 8-bit models", required=gpu_platform),
        Dependency("onnx", "onnx", "the vocoder's ONNX export"),
        Dependency("onnxscript", "onnxscript", "the vocoder's ONNX export"),
        Dependency("onnxruntime", "onnxruntime-gpu", "running the vocoder", required=gpu_platform),
        Dependency("soundfile", "soundfile", "WAV files"),
        Dependency("sounddevice", "sounddevice", "the microphone and speaker (PortAudio)"),
        Dependency("soxr", "soxr", "resampling"),
        Dependency("silero_vad", "silero-vad", "telling speech from silence"),
        Dependency("platformdirs", "platformdirs", "the user's folders"),
        Dependency("huggingface_hub", "huggingface-hub", "model downloads"),
        Dependency("pynvml", "nvidia-ml-py", "GPU memory readings"),
    )


def is_frozen() -> bool:
    return bool(getattr(sys, "frozen", False))


def reinstall_fix() -> str:
    if is_frozen():
        return "This OmniTalk build is incomplete: install it again from the same download."
    launcher = "omnitalk.cmd" if sys.platform == "win32" else "./omnitalk"
    return f"Run {launcher} install in the OmniTalk folder again; it installs what is missing."


def _version(dependency: Dependency, module: object) -> str:
    try:
        return importlib.metadata.version(dependency.distribution)
    except importlib.metadata.PackageNotFoundError:
        return str(getattr(module, "__version__", "version unknown"))


def _last_line(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}".rstrip(": ")


def _import_fix(exc: BaseException) -> str:
    if isinstance(exc, ModuleNotFoundError):
        return reinstall_fix()
    if isinstance(exc, OSError):  # a shared library the wheel loads (PortAudio, CUDA) is missing
        return f"A system library is missing ({exc}). {reinstall_fix()}"
    return ""  # the message says it (pynput without a display, say)


def check_import(dependency: Dependency) -> Check:
    """Import one library: its version and import time, or why not and the fix."""
    started = time.perf_counter()
    try:
        module = importlib.import_module(dependency.module)
    except Exception as exc:  # ImportError, or OSError for a missing shared library (PortAudio)
        # The traceback goes to the log file; the report has the line that matters.
        logger.info("self-check: %s does not import", dependency.module, exc_info=True)
        return Check(
            dependency.module,
            FAIL if dependency.required else WARN,
            f"does not import ({_last_line(exc)}); needed for {dependency.needed_for}",
            _import_fix(exc),
            time.perf_counter() - started,
        )
    version = _version(dependency, module)
    top = dependency.module.split(".")[0]
    detail = version if dependency.distribution == top else f"{dependency.distribution} {version}"
    return Check(dependency.module, OK, detail, seconds=time.perf_counter() - started)


def dependency_checks(dependencies: Sequence[Dependency] | None = None) -> list[Check]:
    return [check_import(d) for d in (engine_dependencies() if dependencies is None else dependencies)]


def question_audio() -> np.ndarray:
    """A one-second voiced sound with a syllable-like envelope: float32 (16000,) at 16 kHz."""
    t = np.arange(round(QUESTION_S * SAMPLE_RATE_HZ)) / SAMPLE_RATE_HZ
    wave = sum(np.sin(2 * np.pi * f * t) / (i + 1) for i, f in enumerate(QUESTION_TONES_HZ))
    envelope = np.sin(np.pi * t / QUESTION_S) ** 2 * (0.6 + 0.4 * np.sin(2 * np.pi * 4.0 * t) ** 2)
    return (QUESTION_GAIN * envelope * wave / np.max(np.abs(wave))).astype(np.float32)


def _timed(name: str, fn: Callable[[], str]) -> Check:
    started = time.perf_counter()
    try:
        detail = fn()
    except Exception as exc:
        logger.info("self-check step %r failed:\n%s", name, traceback.format_exc())
        fix = getattr(exc, "fix", None) or reinstall_fix()
        return Check(name, FAIL, _last_line(exc), fix, time.perf_counter() - started)
    return Check(name, OK, detail, seconds=time.perf_counter() - started)


def turn_checks(workdir: Path) -> list[Check]:
    """Write the tiny model, answer one spoken question, speak the answer. Each step is one Check;
    a failed step ends the list (the next would only fail for the same reason)."""
    paths: TinyPaths | None = None
    units: list[int] = []

    def make_tiny() -> str:
        nonlocal paths
        from engine.tiny import write_tiny_set

        paths = write_tiny_set(workdir / "tiny", seed=TURN_SEED)
        return f"written to {paths.root}"

    def answer() -> str:
        from engine.config import DecodeOptions
        from engine.model.events import TurnDone
        from engine.model.omni import OmniModel

        assert paths is not None
        model = OmniModel.load(paths.omni, paths.speech_encoder_pt, device="cpu", quant="fp32")
        decode = DecodeOptions(max_new_tokens=TURN_MAX_NEW_TOKENS, seed=TURN_SEED)
        events = model.conversation().respond_speech(question_audio(), decode=decode)
        done = [event for event in events if isinstance(event, TurnDone)]
        if not done:
            raise RuntimeError("the turn ended without a result")
        units[:] = list(done[0].units) or list(FALLBACK_UNITS)
        return f"{done[0].n_tokens} text tokens, {done[0].n_units} speech units on the CPU"

    def speak() -> str:
        from engine.vocoder.api import load_vocoder_runtime
        from engine.vocoder.runtime import onnxruntime_available

        assert paths is not None and paths.vocoder is not None
        backend = "onnx" if onnxruntime_available() else "torch"
        with load_vocoder_runtime(
            paths.vocoder, "cpu", backend=backend, export_dir=workdir / "onnx", export_in_subprocess=True
        ) as runtime:
            wav = runtime.synthesize(units)
        if wav.size == 0 or not np.isfinite(wav).all():
            raise RuntimeError(f"the vocoder gave {wav.size} samples, finite: {bool(np.isfinite(wav).all())}")
        how = "exported to ONNX in a child process, onnxruntime" if backend == "onnx" else "PyTorch"
        return f"{wav.size / SAMPLE_RATE_HZ:.2f} s of speech ({how})"

    checks = []
    for name, step in (("tiny model", make_tiny), ("one turn", answer), ("speech", speak)):
        check = _timed(name, step)
        checks.append(check)
        if check.status == FAIL:
            break
    return checks


def environment_lines() -> list[str]:
    """Where and what OmniTalk is running: version, Python, system, install kind, folders."""
    from engine.paths import cache_dir, config_dir, log_dir, models_dir
    from engine.version import __version__

    kind = "frozen build" if is_frozen() else "Python"
    return [
        f"OmniTalk {__version__} ({kind}: {sys.executable})",
        f"Python {platform.python_version()} on {platform.system()} {platform.release()} ({platform.machine()})",
        f"settings: {config_dir()}",
        f"models: {models_dir()}",
        f"cache: {cache_dir()}",
        f"logs: {log_dir()}",
    ]


def format_report(title: str, header: Sequence[str], checks: Sequence[Check]) -> str:
    """The report people read and paste into a bug report: what was checked and what to do."""
    width = max((len(c.name) for c in checks), default=0)
    lines = [title, "=" * len(title), *header, ""]
    for check in checks:
        took = f"  ({check.seconds:.1f} s)" if check.seconds is not None and check.seconds >= 0.1 else ""
        lines.append(f"[{check.status:>4}] {check.name.ljust(width)}  {check.detail}{took}")
        if check.fix and check.status in (FAIL, WARN):
            lines.append(f"{'':7} {'':{width}}  fix: {check.fix}")
    failed = [c.name for c in checks if c.status == FAIL]
    lines.append("")
    lines.append(f"Result: {len(failed)} problem(s): {', '.join(failed)}" if failed else "Result: all checks passed")
    return "\n".join(lines) + "\n"
