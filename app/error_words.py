"""What the user reads when something fails: one builder for every error the GUI shows.

The engine reports an error as kind + reason + facts + path (engine/errors.py) with a factual
message and interface-neutral advice. Here they become the GUI's words: a title, what happened,
the file or folder involved, and what to do, naming the real menus and buttons (app/words.py).
The main window (engine ``Failed`` events), the setup wizard and the settings dialog (exceptions
from background checks) all go through :func:`describe`, so one error reads the same everywhere.
Qt-free: plain strings.
"""

from __future__ import annotations

import http
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from app.words import (
    ANSWER_LENGTH_ROW,
    AUDIO_TAB,
    CONVERSATION_TAB,
    ENCODER_ROW,
    MODEL_TAB,
    PRECISION_ROW,
    RESCAN_BUTTON,
    RUN_ON_ROW,
    SETUP_ACTION,
    settings_place,
)
from engine.errors import EngineError, Fact, Reason
from engine.events import Failed

GB = 1_000_000_000

TITLES = {
    "model_missing": "Model not found",
    "model_corrupt": "Model files damaged",
    "model_incompatible": "Not a LLaMA-Omni model",
    "not_enough_memory": "Not enough memory",
    "audio_device": "Audio device problem",
    "bad_input": "Cannot use that input",
    "disk_full": "Disk full",
    "download": "Download failed",
    "device_unavailable": "GPU not available",
    "cancelled": "Cancelled",
}
DEFAULT_TITLE = "Something went wrong"
PORTAUDIO_TITLE = "Sound library missing"
NO_SPEAKER_NOTE = "answers are text-only: no speaker"
PORTAUDIO_INSTALL = "sudo apt-get install libportaudio2 (Debian/Ubuntu) or sudo dnf install portaudio (Fedora)"


@dataclass(frozen=True, slots=True)
class ErrorWords:
    title: str
    text: str  # what happened
    fix: str | None = None  # what to do, naming the GUI's controls
    path: Path | None = None  # the file or folder involved

    def plain(self) -> str:
        """What happened, the file or folder, and what to do: one per line."""
        return "\n".join(part for part in (self.text, str(self.path) if self.path else "", self.fix or "") if part)

    def details(self) -> str:
        """The file or folder and what to do (a message box's informative text)."""
        return "\n".join(part for part in (str(self.path) if self.path else "", self.fix or "") if part)


def _device_word(facts: Mapping[str, Fact]) -> str:
    return "microphone" if facts.get("direction") == "input" else "speaker"


def _named(facts: Mapping[str, Fact]) -> str:
    device = facts.get("device")
    return f"The {_device_word(facts)} “{device}”" if device else f"The {_device_word(facts)}"


AUDIO_PLACE = settings_place(AUDIO_TAB)
MODEL_PLACE = settings_place(MODEL_TAB)
LOOK_AGAIN = f"click “{RESCAN_BUTTON}” in {AUDIO_PLACE}"


def _portaudio(facts: Mapping[str, Fact], message: str) -> tuple[str, str]:
    return (
        "OmniTalk cannot use any microphone or speaker: the PortAudio sound library is not installed.",
        f"Install it ({PORTAUDIO_INSTALL}), then restart OmniTalk.",
    )


def _no_device(facts: Mapping[str, Fact], message: str) -> tuple[str, str]:
    word = _device_word(facts)
    thing = "a microphone" if word == "microphone" else "speakers or headphones"
    return (
        f"No {word} found.",
        f"Connect {thing} and make sure it is enabled in the system's sound settings, then {LOOK_AGAIN}.",
    )


def _not_connected(facts: Mapping[str, Fact], message: str) -> tuple[str, str]:
    available = facts.get("available")
    also = f" (connected now: {available})" if available else ""
    return (
        f"{_named(facts)} is not connected{also}.",
        f"Plug it in and {LOOK_AGAIN}, or choose another one there.",
    )


def _busy(facts: Mapping[str, Fact], message: str) -> tuple[str, str]:
    return (
        f"{_named(facts)} is busy: another program is using it.",
        "Close programs that use it exclusively (calls, recorders), then try again, "
        f"or choose another one in {AUDIO_PLACE}.",
    )


def _format(facts: Mapping[str, Fact], message: str) -> tuple[str, str]:
    text = f"{_named(facts)} does not accept the sound format OmniTalk needs."
    return (text, f"Choose another one in {AUDIO_PLACE}.")


def _lost(facts: Mapping[str, Fact], message: str) -> tuple[str, str]:
    return (message, f"Check that it is still connected, {LOOK_AGAIN}, and try again.")


def _silent(facts: Mapping[str, Fact], message: str) -> tuple[str, str]:
    fix = f"Check that it is not muted, or choose another one in {AUDIO_PLACE}."
    return ("The microphone delivered no sound.", fix)


def _streams_open(facts: Mapping[str, Fact], message: str) -> tuple[str, str]:
    return ("The devices are in use right now.", f"Wait until OmniTalk stops listening or speaking, then {LOOK_AGAIN}.")


def _no_model(facts: Mapping[str, Fact], message: str) -> tuple[str, str]:
    return ("No model is loaded.", f"Use File → {SETUP_ACTION} to download the model or choose your files.")


def _no_encoder(facts: Mapping[str, Fact], message: str) -> tuple[str, str]:
    looked = str(facts.get("looked", "")).split("; ")
    where = f" OmniTalk looked inside the model files and at {', '.join(looked[:3])}." if looked[0] else ""
    return (
        f"The Whisper speech encoder (large-v3.pt) was not found.{where}",
        f"Choose the file under “{ENCODER_ROW}” in {MODEL_PLACE}, or download the model again with "
        f"File → {SETUP_ACTION}.",
    )


def _no_cuda(facts: Mapping[str, Fact], message: str) -> tuple[str, str]:
    return (
        "No usable NVIDIA graphics card was found (driver or CUDA build of PyTorch missing).",
        f"Choose “CPU” under “{RUN_ON_ROW}” in {MODEL_PLACE} (slow), or install the NVIDIA driver and "
        "restart OmniTalk.",
    )


def _gpu_not_found(facts: Mapping[str, Fact], message: str) -> tuple[str, str]:
    index, count = facts.get("index"), facts.get("count")
    text = f"GPU {index} was chosen, but only {count} GPU(s) can be used now." if count is not None else message
    return (text, f"Choose another GPU under “{RUN_ON_ROW}” in {MODEL_PLACE} (was one removed?).")


def _no_bf16(facts: Mapping[str, Fact], message: str) -> tuple[str, str]:
    fix = f"Choose fp16 or 4-bit under “{PRECISION_ROW}” in {MODEL_PLACE}."
    return ("This graphics card cannot compute in bf16.", fix)


def _vocoder_gpu(facts: Mapping[str, Fact], message: str) -> tuple[str, str]:
    return (message, f"Choose “CPU” under “{RUN_ON_ROW}” in {MODEL_PLACE}.")


def _memory(facts: Mapping[str, Fact], message: str) -> tuple[str, str]:
    needed, free = facts.get("needed_bytes"), facts.get("free_bytes")
    where = "GPU memory" if facts.get("device") == "cuda" else "RAM"
    text = message
    if isinstance(needed, int | float) and isinstance(free, int | float):
        text = f"The model in {facts.get('quant')} needs about {needed / GB:.1f} GB of {where}; "
        text += f"{free / GB:.1f} GB is free."
    return (
        text,
        f"Choose 4-bit (nf4) under “{PRECISION_ROW}” in {MODEL_PLACE}, close other programs that use the {where}, "
        f"or lower “{ANSWER_LENGTH_ROW}” in {settings_place(CONVERSATION_TAB)}.",
    )


def _unreachable(facts: Mapping[str, Fact], message: str) -> tuple[str, str]:
    return (
        f"No internet connection (could not reach {facts.get('host', 'the server')}).",
        "Check the connection (and proxy settings), then try again.",
    )


_STATUS_MEANING = {
    401: "the server wants a login for this file",
    403: "the server refuses access to this file",
    404: "the file is not there (it may have moved)",
    410: "the file was removed",
    429: "too many requests: wait a few minutes",
}


def http_status_words(status: int) -> str:
    """'404 Not Found: the file is not there (it may have moved)'."""
    try:
        phrase = http.HTTPStatus(status).phrase
    except ValueError:
        phrase = "error"
    meaning = _STATUS_MEANING.get(status) or ("the server has a problem" if status >= 500 else "")
    return f"{status} {phrase}" + (f": {meaning}" if meaning else "")


def _http_status(facts: Mapping[str, Fact], message: str) -> tuple[str, str]:
    status = facts.get("status")
    host = facts.get("host", "The server")
    if not isinstance(status, int):
        return (message, "Try again later.")
    return (f"{host} answered {http_status_words(status)}.", "Try again later.")


def _resume_impossible(facts: Mapping[str, Fact], message: str) -> tuple[str, str]:
    return (f"The saved training cannot be continued: {message}", "Start the training again from the beginning.")


def _training_memory(facts: Mapping[str, Fact], message: str) -> tuple[str, str]:
    needed, free = facts.get("needed_bytes"), facts.get("free_bytes")
    text = message
    if isinstance(needed, int | float) and isinstance(free, int | float):
        text = f"Training needs about {needed / GB:.1f} GB; {free / GB:.1f} GB is free."
    return (text, "Close other programs, train with a smaller LoRA rank and batch, or shorten the longest answers.")


def _training_disk_full(facts: Mapping[str, Fact], message: str) -> tuple[str, str]:
    return ("The disk filled up while the training was being saved.", "Free some disk space, then resume the training.")


def _training_diverged(facts: Mapping[str, Fact], message: str) -> tuple[str, str]:
    loss, step = facts.get("loss"), facts.get("step")
    text = f"The training became unstable (loss {loss} at step {step})." if loss is not None else message
    return (text, "Train again with a lower learning rate.")


def _quantized_unit_decoder(facts: Mapping[str, Fact], message: str) -> tuple[str, str]:
    return (
        f"The speech decoder cannot be trained in full on a {facts.get('quant', 'quantized')} model.",
        "Train it with LoRA, or choose 16-bit precision if the memory allows.",
    )


_BY_REASON: dict[Reason, Callable[[Mapping[str, Fact], str], tuple[str, str]]] = {
    Reason.PORTAUDIO_MISSING: _portaudio,
    Reason.NO_DEVICE: _no_device,
    Reason.DEVICE_NOT_CONNECTED: _not_connected,
    Reason.DEVICE_BUSY: _busy,
    Reason.DEVICE_FORMAT: _format,
    Reason.DEVICE_LOST: _lost,
    Reason.DEVICE_SILENT: _silent,
    Reason.STREAMS_OPEN: _streams_open,
    Reason.NO_MODEL_LOADED: _no_model,
    Reason.ENCODER_NOT_FOUND: _no_encoder,
    Reason.CUDA_UNAVAILABLE: _no_cuda,
    Reason.GPU_NOT_FOUND: _gpu_not_found,
    Reason.BF16_UNSUPPORTED: _no_bf16,
    Reason.VOCODER_GPU_UNAVAILABLE: _vocoder_gpu,
    Reason.MEMORY_SHORT: _memory,
    Reason.UNREACHABLE: _unreachable,
    Reason.HTTP_STATUS: _http_status,
    Reason.RESUME_IMPOSSIBLE: _resume_impossible,
    Reason.TRAINING_MEMORY_SHORT: _training_memory,
    Reason.TRAINING_DISK_FULL: _training_disk_full,
    Reason.TRAINING_DIVERGED: _training_diverged,
    Reason.QUANTIZED_UNIT_DECODER: _quantized_unit_decoder,
}


def describe(
    kind: str,
    message: str,
    *,
    fix: str | None = None,
    reason: Reason | None = None,
    path: Path | None = None,
    facts: Mapping[str, Fact] | None = None,
) -> ErrorWords:
    """The words for one engine error (the one builder; see the module docstring)."""
    title = PORTAUDIO_TITLE if reason is Reason.PORTAUDIO_MISSING else TITLES.get(kind, DEFAULT_TITLE)
    words = _BY_REASON.get(reason) if reason is not None else None
    if words is None:
        return ErrorWords(title, message, fix, path)
    text, gui_fix = words(facts or {}, message)
    return ErrorWords(title, text, gui_fix, path)


def describe_error(exc: BaseException) -> ErrorWords:
    """Words for an exception from a background check (EngineError, OSError, or a bug)."""
    if isinstance(exc, EngineError):
        return describe(exc.kind, exc.message, fix=exc.fix, reason=exc.reason, path=exc.path, facts=exc.facts)
    if isinstance(exc, OSError):
        where = Path(exc.filename) if exc.filename else None
        return ErrorWords("Cannot read or write a file", exc.strerror or str(exc), None, where)
    return ErrorWords(DEFAULT_TITLE, f"{type(exc).__name__}: {exc}", "See Help → Show logs for details.")


def describe_failed(failed: Failed) -> ErrorWords:
    """Words for an engine ``Failed`` event."""
    return describe(
        failed.kind, failed.message, fix=failed.fix, reason=failed.reason, path=failed.path, facts=failed.facts
    )
