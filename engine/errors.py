"""Engine errors: a kind, the facts, a developer message, and advice that names no control.

Each error carries:

- ``kind`` (the class): what went wrong in general (``model_missing``, ``audio_device``, ...);
- ``reason`` (a :class:`Reason`, optional): the specific case, for the cases a user interface
  explains with its own controls ("no microphone", "PortAudio is missing", "no internet");
- ``facts``: the names and numbers of the case (a device name, an HTTP status, a host), and
  ``path``, the file or folder involved;
- ``message``: one factual sentence for the log and for any interface that has nothing better;
- ``fix``: advice that holds in every interface, so it never names a button, a menu or a
  command-line option ("Install the libportaudio2 package.", not "click Refresh devices").

The user interfaces turn kind + reason + facts into their own words: ``app/error_words.py`` names
the GUI's buttons and menus, ``engine/__main__.py`` the command line's options. The engine never
shows UI itself.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import Enum
from pathlib import Path

Fact = str | int | float


class Reason(str, Enum):
    """Specific cases the interfaces explain with their own controls (the value is stable)."""

    # audio devices (AudioDeviceError); facts: direction ("input"/"output"), device, detail
    PORTAUDIO_MISSING = "portaudio_missing"  # facts: library, detail
    NO_DEVICE = "no_device"  # no microphone / no speaker at all
    DEVICE_NOT_CONNECTED = "device_not_connected"  # the chosen one is gone; facts: available
    DEVICE_BUSY = "device_busy"
    DEVICE_FORMAT = "device_format"  # 16 kHz mono float not accepted
    DEVICE_LOST = "device_lost"  # stopped mid-stream, or never started
    DEVICE_SILENT = "device_silent"  # the microphone delivers no sound
    STREAMS_OPEN = "streams_open"  # a rescan while streams are open; facts: streams
    # models
    NO_MODEL_LOADED = "no_model_loaded"
    ENCODER_NOT_FOUND = "encoder_not_found"  # facts: looked (paths, "; "-separated)
    # compute devices (DeviceUnavailable, NotEnoughMemory); facts: device, quant, needed_bytes, free_bytes
    CUDA_UNAVAILABLE = "cuda_unavailable"
    GPU_NOT_FOUND = "gpu_not_found"  # the chosen GPU index is not there; facts: index, count
    BF16_UNSUPPORTED = "bf16_unsupported"
    VOCODER_GPU_UNAVAILABLE = "vocoder_gpu_unavailable"
    MEMORY_SHORT = "memory_short"
    # fine-tuning (python -m engine finetune); facts as named
    RESUME_IMPOSSIBLE = "resume_impossible"  # no usable checkpoint, or one of another run
    TRAINING_MEMORY_SHORT = "training_memory_short"  # facts: needed_bytes, free_bytes
    TRAINING_DISK_FULL = "training_disk_full"  # a checkpoint could not be saved
    TRAINING_DIVERGED = "training_diverged"  # facts: loss, step
    QUANTIZED_UNIT_DECODER = "quantized_unit_decoder"  # full decoder training asked on a 4/8-bit base; facts: quant
    # downloads (DownloadError); facts: host, url, status, detail
    UNREACHABLE = "unreachable"  # no connection, DNS failure, timeouts after the retries
    HTTP_STATUS = "http_status"  # the server answered with an error status


class EngineError(Exception):
    """Base of every error the engine raises on purpose (see the module docstring)."""

    kind: str = "internal"

    def __init__(
        self,
        message: str,
        *,
        path: str | Path | None = None,
        fix: str | None = None,
        reason: Reason | None = None,
        facts: Mapping[str, Fact] | None = None,
    ) -> None:
        self.message = message
        self.path = Path(path) if path is not None else None
        self.fix = fix
        self.reason = reason
        self.facts: Mapping[str, Fact] = dict(facts) if facts else {}  # a copy: read-only by convention
        super().__init__(self.__str__())

    def __str__(self) -> str:
        parts = [self.message]
        if self.path is not None:
            parts.append(f"[file: {self.path}]")
        if self.fix:
            parts.append(f"Fix: {self.fix}")
        return " ".join(parts)


class ModelMissing(EngineError):
    """A model file or folder that should exist does not (missing shard, encoder, vocoder...)."""

    kind = "model_missing"


class ModelCorrupt(EngineError):
    """A file exists but cannot be read as what it claims to be (truncated, bad header, bad pickle)."""

    kind = "model_corrupt"


class ModelIncompatible(EngineError):
    """A readable file that is not the model we expect (wrong model_type, shape mismatch, missing keys)."""

    kind = "model_incompatible"


class NotEnoughMemory(EngineError):
    """The chosen device or quantization does not fit in the available (V)RAM."""

    kind = "not_enough_memory"


class BadInput(EngineError):
    """User input the engine cannot use: unreadable audio, empty text, malformed dataset..."""

    kind = "bad_input"


class AudioDeviceError(EngineError):
    """No microphone/speaker, a device that vanished mid-turn, or a busy device."""

    kind = "audio_device"


class DiskFull(EngineError):
    """Not enough free disk space for a download, an export or a training run."""

    kind = "disk_full"


class DownloadError(EngineError):
    """A download failed after its retries, or its checksum did not match."""

    kind = "download"


class Cancelled(EngineError):
    """The user cancelled the operation; not a failure to report."""

    kind = "cancelled"


class DeviceUnavailable(EngineError):
    """The requested compute device (e.g. CUDA) or backend (bitsandbytes) is not usable here."""

    kind = "device_unavailable"


def _all_kinds(cls: type[EngineError]) -> dict[str, type[EngineError]]:
    kinds = {cls.kind: cls}
    for sub in cls.__subclasses__():
        for kind, found in _all_kinds(sub).items():
            kinds.setdefault(kind, found)
    return kinds


def reason_from_value(value: str | None) -> Reason | None:
    """The Reason named ``value``; None for None or a value this version does not know."""
    try:
        return Reason(value) if value else None
    except ValueError:
        return None


def error_from_kind(
    kind: str,
    message: str,
    *,
    path: str | Path | None = None,
    fix: str | None = None,
    reason: str | None = None,
    facts: Mapping[str, Fact] | None = None,
) -> EngineError:
    """Rebuild an error reported by another process (its ``kind``) as the matching EngineError class.

    An unknown kind or reason gives a plain EngineError / no reason, so a newer child process never
    crashes an older parent.
    """
    cls = _all_kinds(EngineError).get(kind, EngineError)
    return cls(message, path=path, fix=fix, reason=reason_from_value(reason), facts=facts)
