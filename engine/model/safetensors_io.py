"""Safetensors shards read without mmap and without trusting the index blindly.

A shard is read one tensor at a time (``readinto`` a fresh buffer), so loading never maps a
5 GB shard into the process and peak host memory stays at "the model in its target form plus one
tensor". Before any tensor is read, ``ShardSet.open`` checks what can go wrong with downloaded
files: a shard named by the index is missing, a shard is truncated (its header promises more bytes
than the file has), the index names a key the shard does not hold, a header is not valid JSON.

Reading headers needs no torch (the app's "Check the files" stays fast); torch is imported when the
first tensor is read.
"""

from __future__ import annotations

import json
import logging
import math
import os
import struct
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from engine.errors import ModelCorrupt, ModelIncompatible, ModelMissing

if TYPE_CHECKING:
    import torch

logger = logging.getLogger(__name__)

INDEX_NAME = "model.safetensors.index.json"
SINGLE_NAME = "model.safetensors"
HEADER_LEN_BYTES = 8
MAX_HEADER_BYTES = 100 * 1024 * 1024  # safetensors' own limit

# safetensors dtype name -> (bytes per element, torch dtype attribute)
DTYPES: dict[str, tuple[int, str]] = {
    "F64": (8, "float64"),
    "F32": (4, "float32"),
    "F16": (2, "float16"),
    "BF16": (2, "bfloat16"),
    "I64": (8, "int64"),
    "I32": (4, "int32"),
    "I16": (2, "int16"),
    "I8": (1, "int8"),
    "U8": (1, "uint8"),
    "BOOL": (1, "bool"),
}

REDOWNLOAD_FIX = "Download the model again (the file is damaged or incomplete)."


@dataclass(frozen=True, slots=True)
class TensorEntry:
    """Where one tensor lives: ``shape``, ``dtype`` (the safetensors name, "F16") and absolute byte
    range in ``path``."""

    key: str
    path: Path
    dtype: str
    shape: tuple[int, ...]
    start: int
    end: int

    @property
    def n_bytes(self) -> int:
        return self.end - self.start


def read_header(path: Path) -> dict[str, TensorEntry]:
    """Parse a shard's header and check that the file holds every byte it promises."""
    try:
        size = path.stat().st_size
        with path.open("rb") as f:
            raw_len = f.read(HEADER_LEN_BYTES)
            if len(raw_len) < HEADER_LEN_BYTES:
                raise ModelCorrupt("The safetensors file is truncated (no header).", path=path, fix=REDOWNLOAD_FIX)
            (header_len,) = struct.unpack("<Q", raw_len)
            if header_len > MAX_HEADER_BYTES or HEADER_LEN_BYTES + header_len > size:
                raise ModelCorrupt("The safetensors header is damaged or truncated.", path=path, fix=REDOWNLOAD_FIX)
            header = json.loads(f.read(header_len))
    except FileNotFoundError as exc:
        raise ModelMissing("A weight file is missing.", path=path, fix=REDOWNLOAD_FIX) from exc
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelCorrupt(f"The safetensors header is not valid JSON: {exc}", path=path, fix=REDOWNLOAD_FIX) from exc
    if not isinstance(header, dict):
        raise ModelCorrupt("The safetensors header is not a JSON object.", path=path, fix=REDOWNLOAD_FIX)
    data_start = HEADER_LEN_BYTES + header_len
    entries: dict[str, TensorEntry] = {}
    data_end = 0
    for key, info in header.items():
        if key == "__metadata__":
            continue
        try:
            dtype = str(info["dtype"])
            item_bytes = DTYPES[dtype][0]
            shape = tuple(int(d) for d in info["shape"])
            begin, end = (int(o) for o in info["data_offsets"])
        except (KeyError, TypeError, ValueError) as exc:
            raise ModelCorrupt(f"Bad header entry for {key!r}.", path=path, fix=REDOWNLOAD_FIX) from exc
        n_expected = math.prod(shape) * item_bytes
        if end - begin != n_expected or begin < 0:
            raise ModelCorrupt(f"Header entry for {key!r} has a wrong byte range.", path=path, fix=REDOWNLOAD_FIX)
        entries[key] = TensorEntry(key, path, dtype, shape, data_start + begin, data_start + end)
        data_end = max(data_end, end)
    if data_start + data_end > size:
        missing = data_start + data_end - size
        raise ModelCorrupt(
            f"The safetensors file is truncated ({missing} bytes missing).", path=path, fix=REDOWNLOAD_FIX
        )
    return entries


def read_tensor(entry: TensorEntry, handle: object | None = None) -> torch.Tensor:
    """Read one tensor into a fresh CPU buffer (no mmap). ``handle``: an open binary file."""
    import torch

    dtype = getattr(torch, DTYPES[entry.dtype][1])
    buf = bytearray(entry.n_bytes)
    if handle is None:
        with entry.path.open("rb") as f:
            f.seek(entry.start)
            n_read = f.readinto(buf)
    else:
        handle.seek(entry.start)  # type: ignore[attr-defined]
        n_read = handle.readinto(buf)  # type: ignore[attr-defined]
    if n_read != entry.n_bytes:
        raise ModelCorrupt(f"Could not read {entry.key!r}: file ended early.", path=entry.path, fix=REDOWNLOAD_FIX)
    if entry.n_bytes == 0:
        return torch.empty(entry.shape, dtype=dtype)
    return torch.frombuffer(buf, dtype=dtype).reshape(entry.shape)


class ShardSet:
    """The weights of a model folder: a sharded index or a single ``model.safetensors``.

    ``entries`` maps every checkpoint key to its ``TensorEntry``; ``shards`` lists files in order.
    """

    def __init__(self, folder: Path, shards: list[Path], entries: dict[str, TensorEntry]) -> None:
        self.folder = folder
        self.shards = shards
        self.entries = entries

    @classmethod
    def open(cls, folder: str | Path) -> ShardSet:
        folder = Path(folder)
        index_path = folder / INDEX_NAME
        if index_path.is_file():
            weight_map = _read_index(index_path)
            shard_names = sorted(set(weight_map.values()))
            shards = [folder / name for name in shard_names]
            for shard in shards:
                if not shard.is_file():
                    raise ModelMissing(
                        f"Shard {shard.name} named in {INDEX_NAME} is missing.", path=shard, fix=REDOWNLOAD_FIX
                    )
            headers = {shard.name: read_header(shard) for shard in shards}
            entries: dict[str, TensorEntry] = {}
            for key, shard_name in weight_map.items():
                entry = headers[shard_name].get(key)
                if entry is None:
                    raise ModelCorrupt(
                        f"{INDEX_NAME} says {key!r} is in {shard_name}, but that shard does not hold it.",
                        path=folder / shard_name,
                        fix=REDOWNLOAD_FIX,
                    )
                entries[key] = entry
            for shard_name, header in headers.items():
                extra = set(header) - set(entries)
                if extra:
                    logger.warning("%s holds %d keys the index does not list; ignored", shard_name, len(extra))
            return cls(folder, shards, entries)
        single = folder / SINGLE_NAME
        if single.is_file():
            return cls(folder, [single], read_header(single))
        raise ModelMissing(
            f"No weights in {folder} (expected {INDEX_NAME} with its shards, or {SINGLE_NAME}).",
            path=folder,
            fix="Choose the model folder that holds the .safetensors files, or download the model again.",
        )

    def keys_with_prefix(self, prefix: str) -> list[str]:
        return [k for k in self.entries if k.startswith(prefix)]

    def shape(self, key: str) -> tuple[int, ...] | None:
        entry = self.entries.get(key)
        return entry.shape if entry is not None else None

    def check_expected(
        self, expected: Mapping[str, tuple[int, ...]], *, optional: frozenset[str] = frozenset()
    ) -> None:
        """Raise before loading anything if a weight is missing or has the wrong shape."""
        missing = sorted(k for k in expected if k not in self.entries and k not in optional)
        if missing:
            shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
            raise ModelIncompatible(
                f"The checkpoint lacks {len(missing)} weights the model needs: {shown}.",
                path=self.folder,
                fix="Use the official Llama-3.1-8B-Omni files (or re-download them).",
            )
        for key, shape in expected.items():
            entry = self.entries.get(key)
            if entry is not None and entry.shape != tuple(shape):
                raise ModelIncompatible(
                    f"Shape mismatch for {key}: the model expects {tuple(shape)}, the file has {entry.shape}.",
                    path=entry.path,
                    fix="The weights do not match config.json; use the config that came with them.",
                )

    def iter_shards(self, keys: set[str] | None = None) -> Iterator[tuple[Path, list[TensorEntry]]]:
        """Per shard (in file order), its entries sorted by offset (sequential reads)."""
        for shard in self.shards:
            chosen = [e for e in self.entries.values() if e.path == shard and (keys is None or e.key in keys)]
            yield shard, sorted(chosen, key=lambda e: e.start)

    @property
    def total_bytes(self) -> int:
        return sum(e.n_bytes for e in self.entries.values())


def _read_index(index_path: Path) -> dict[str, str]:
    try:
        index = json.loads(index_path.read_text(encoding="utf-8"))
        weight_map = index["weight_map"]
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError) as exc:
        raise ModelCorrupt(f"Cannot read {INDEX_NAME}: {exc}", path=index_path, fix=REDOWNLOAD_FIX) from exc
    if not isinstance(weight_map, dict) or not all(isinstance(v, str) for v in weight_map.values()):
        raise ModelCorrupt(f"{INDEX_NAME} has no valid weight_map.", path=index_path, fix=REDOWNLOAD_FIX)
    for name in weight_map.values():
        if os.sep in name or (os.altsep and os.altsep in name) or name.startswith("."):
            raise ModelCorrupt(f"{INDEX_NAME} names a shard outside the folder: {name!r}", path=index_path)
    return weight_map
