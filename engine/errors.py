"""Engine errors. Each kind carries a developer message, the file involved, and what the user can do.

The app turns ``kind`` into words for the user; the engine never shows UI itself.
"""

from __future__ import annotations

from pathlib import Path


class EngineError(Exception):
    """Base of every error the engine raises on purpose.

    ``kind`` is a stable machine-readable name (used by the GUI and the CLI's exit message),
    ``path`` the file or folder involved (if any), ``fix`` one sentence saying what to do.
    """

    kind: str = "internal"

    def __init__(self, message: str, *, path: str | Path | None = None, fix: str | None = None) -> None:
        self.message = message
        self.path = Path(path) if path is not None else None
        self.fix = fix
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


def error_from_kind(
    kind: str, message: str, *, path: str | Path | None = None, fix: str | None = None
) -> EngineError:
    """Rebuild an error reported by another process (its ``kind``) as the matching EngineError class.

    An unknown kind gives a plain EngineError, so a newer child process never crashes an older parent.
    """
    cls = _all_kinds(EngineError).get(kind, EngineError)
    return cls(message, path=path, fix=fix)
