"""Read a PyTorch ``.pt`` checkpoint's plain data and tensor shapes without torch and without its weights.

A ``torch.save`` file is a zip: ``<name>/data.pkl`` (a small pickle of the object, in which every
tensor is a call to ``torch._utils._rebuild_tensor_v2`` on a "persistent" storage reference) and
one ``<name>/data/<key>`` entry per storage. Unpickling ``data.pkl`` with a restricted unpickler
that answers those calls with :class:`TensorHeader` placeholders gives the checkpoint's structure
(Whisper's ``dims`` and every weight's shape) after reading a few kilobytes: the app's "Check the
files" needs no torch import (seconds) and no pass over a 3 GB file.

Like ``torch.load(weights_only=True)``, only plain containers and tensors are accepted: any other
global in the pickle (code) is refused with :class:`UnsafePickle`.

``read_pt_header`` raises ``NotAZipCheckpoint`` for the pre-1.6 (non-zip) format and for a file
that is not a zip at all (truncated files lose the zip directory at their end): the caller then
lets torch itself read or refuse the file.
"""

from __future__ import annotations

import pickle
import zipfile
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# torch's typed storage classes -> (safetensors-style dtype name, bytes per element)
STORAGE_TYPES: dict[str, tuple[str, int]] = {
    "DoubleStorage": ("F64", 8),
    "FloatStorage": ("F32", 4),
    "HalfStorage": ("F16", 2),
    "BFloat16Storage": ("BF16", 2),
    "LongStorage": ("I64", 8),
    "IntStorage": ("I32", 4),
    "ShortStorage": ("I16", 2),
    "CharStorage": ("I8", 1),
    "ByteStorage": ("U8", 1),
    "BoolStorage": ("BOOL", 1),
}
PICKLE_SUFFIX = "/data.pkl"


class NotAZipCheckpoint(Exception):
    """The file is not a zip-format torch checkpoint (legacy format, truncated, or not torch at all)."""


class UnsafePickle(Exception):
    """The pickle names something other than plain data and tensors (it would run code)."""


class DamagedCheckpoint(Exception):
    """The zip is readable but its pickle or storages do not add up (damaged file)."""


@dataclass(frozen=True, slots=True)
class TensorHeader:
    """A tensor in the checkpoint: its shape, dtype name ("F16") and storage key, no data."""

    shape: tuple[int, ...]
    dtype: str
    storage_key: str


@dataclass(frozen=True, slots=True)
class _Storage:
    key: str
    dtype: str
    item_bytes: int
    numel: int


@dataclass(frozen=True, slots=True)
class _StorageType:
    name: str


def _rebuild_tensor(storage: _Storage, _offset: int, size: Any, *_rest: Any) -> TensorHeader:
    if not isinstance(storage, _Storage):
        raise DamagedCheckpoint("a tensor without a storage")
    return TensorHeader(tuple(int(d) for d in size), storage.dtype, storage.key)


def _rebuild_parameter(data: TensorHeader, *_rest: Any) -> TensorHeader:
    return data


class _HeaderUnpickler(pickle.Unpickler):
    def __init__(self, file: Any) -> None:
        super().__init__(file)
        self.storages: dict[str, _Storage] = {}

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) == ("collections", "OrderedDict"):
            return OrderedDict
        if module == "torch._utils" and name == "_rebuild_tensor_v2":
            return _rebuild_tensor
        if module == "torch._utils" and name == "_rebuild_parameter":
            return _rebuild_parameter
        if module == "torch" and name in STORAGE_TYPES:
            return _StorageType(name)
        raise UnsafePickle(f"the checkpoint's pickle names {module}.{name}")

    def persistent_load(self, pid: Any) -> _Storage:
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage"):
            raise DamagedCheckpoint(f"unknown persistent id {pid!r:.80}")
        _tag, storage_type, key, _location, numel = pid
        if not isinstance(storage_type, _StorageType):
            raise DamagedCheckpoint(f"unknown storage type {storage_type!r:.80}")
        dtype, item_bytes = STORAGE_TYPES[storage_type.name]
        storage = _Storage(str(key), dtype, item_bytes, int(numel))
        self.storages[storage.key] = storage
        return storage


def read_pt_header(path: Path) -> Any:
    """The checkpoint's object with every tensor replaced by a :class:`TensorHeader`.

    Also checks that each storage's zip entry holds exactly the bytes the pickle promises, so a
    damaged or hand-edited file fails here, not halfway through a load.
    """
    try:
        with zipfile.ZipFile(path) as archive:
            pickles = [name for name in archive.namelist() if name.endswith(PICKLE_SUFFIX)]
            if len(pickles) != 1:
                raise NotAZipCheckpoint(f"{len(pickles)} data.pkl entries")
            prefix = pickles[0][: -len(PICKLE_SUFFIX)]
            with archive.open(pickles[0]) as handle:
                unpickler = _HeaderUnpickler(handle)
                try:
                    obj = unpickler.load()
                except (UnsafePickle, DamagedCheckpoint):
                    raise
                except Exception as exc:  # any malformed pickle opcode stream
                    raise DamagedCheckpoint(f"data.pkl cannot be read: {exc}") from exc
            for storage in unpickler.storages.values():
                try:
                    info = archive.getinfo(f"{prefix}/data/{storage.key}")
                except KeyError as exc:
                    raise DamagedCheckpoint(f"storage {storage.key} is missing") from exc
                if info.file_size != storage.numel * storage.item_bytes:
                    raise DamagedCheckpoint(
                        f"storage {storage.key} holds {info.file_size} bytes, expected "
                        f"{storage.numel * storage.item_bytes}"
                    )
    except zipfile.BadZipFile as exc:
        raise NotAZipCheckpoint(str(exc)) from exc
    return obj
