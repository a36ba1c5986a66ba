"""Read fairseq/PyTorch ``.pt`` checkpoints and joblib/sklearn ``.bin`` pickles without running their code.

A pickle is a small program: its GLOBAL opcodes name any importable callable and REDUCE calls it.
``SafeUnpickler`` resolves names only from an allow-list and never imports anything:

- tensors and storages (our own rebuild, from the zip entries or the legacy storage section),
  numpy arrays, dtypes and scalars (numeric dtypes only, rebuilt from their raw bytes),
  ``collections.OrderedDict``, ``torch.Size``;
- a few inert classes known to sit next to the weights in the official files (fairseq's
  ``Dictionary`` and argparse ``Namespace`` in the mHuBERT checkpoint, sklearn's k-means estimator,
  numpy's random-state objects): each becomes an ``InertRecord`` that only stores the plain data
  the pickle gives it, with none of the class's code;
- joblib's ``NumpyArrayWrapper``, whose array bytes follow it in the stream (read here directly).

Any other name -> ``ModelIncompatible`` naming it; a stream that breaks off -> ``ModelCorrupt``.
Nothing in a file can make this module execute code it did not already contain.

    state = load_torch_checkpoint(Path("mhubert_base_vp_en_es_fr_it3.pt"))   # dict of plain data
    km = load_joblib(Path("mhubert_base_vp_en_es_fr_it3_L11_km1000.bin"))    # InertRecord
    km.state["cluster_centers_"]                                             # float32 (1000, 768)
"""

from __future__ import annotations

import collections
import io
import pickle
import struct
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import torch

from engine.errors import ModelCorrupt, ModelIncompatible, ModelMissing

REDOWNLOAD_FIX = "Download the file again; OmniTalk only reads weights and plain data from it."
LEGACY_TORCH_MAGIC = 0x1950A86A20F9469CFC6C
LEGACY_PROTOCOL_VERSION = 1001
LEGACY_SIZE_HEADER_BYTES = 8  # int64 element count before each legacy storage's bytes
# Dtypes a weight file may carry; object arrays (pickled Python objects) are never accepted.
NUMPY_KINDS = frozenset("biufc")  # bool, int, uint, float, complex
STORAGE_DTYPES: dict[str, torch.dtype] = {
    "DoubleStorage": torch.float64,
    "FloatStorage": torch.float32,
    "HalfStorage": torch.float16,
    "BFloat16Storage": torch.bfloat16,
    "LongStorage": torch.int64,
    "IntStorage": torch.int32,
    "ShortStorage": torch.int16,
    "CharStorage": torch.int8,
    "ByteStorage": torch.uint8,
    "BoolStorage": torch.bool,
}


class InertRecord:
    """Stands in for an allow-listed class: keeps the pickle's arguments and state, runs nothing."""

    type_name = "?"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.args = args
        self.kwargs = kwargs
        self.state: Any = None

    def __setstate__(self, state: Any) -> None:
        self.state = state

    def __repr__(self) -> str:
        return f"InertRecord({self.type_name})"


_RECORD_TYPES: dict[str, type[InertRecord]] = {}


def _record_type(name: str) -> type[InertRecord]:
    if name not in _RECORD_TYPES:
        _RECORD_TYPES[name] = type("InertRecord", (InertRecord,), {"type_name": name})
    return _RECORD_TYPES[name]


# Classes whose instances are harmless data in the files we read (kept as InertRecord).
INERT_CLASSES = frozenset(
    {
        "argparse.Namespace",  # fairseq checkpoints before hydra: "args"
        "fairseq.data.dictionary.Dictionary",  # the HuBERT task state's label dictionaries
        "sklearn.cluster._kmeans.MiniBatchKMeans",
        "sklearn.cluster._kmeans.KMeans",
        "sklearn.cluster.k_means_.MiniBatchKMeans",  # scikit-learn < 0.22
        "sklearn.cluster.k_means_.KMeans",
        "numpy.random.mtrand.RandomState",
        "numpy.random._pickle.__randomstate_ctor",
        "numpy.random._pickle.__bit_generator_ctor",
        "numpy.random._mt19937.MT19937",
    }
)


def _numpy_dtype(spec: Any, *_flags: Any) -> np.dtype:
    dtype = np.dtype(spec) if isinstance(spec, str) else None
    if dtype is None or dtype.kind not in NUMPY_KINDS:
        raise ModelIncompatible(f"The file holds a numpy dtype {spec!r} OmniTalk does not read.", fix=REDOWNLOAD_FIX)
    return dtype


def _numpy_array(array: np.ndarray) -> np.ndarray:
    if array.dtype.kind not in NUMPY_KINDS:
        raise ModelIncompatible("The file holds an array of Python objects.", fix=REDOWNLOAD_FIX)
    return array


class _PendingArray:
    """``numpy.core.multiarray._reconstruct`` result; BUILD fills it from (version, shape, dtype, fortran, raw)."""

    def __setstate__(self, state: Any) -> None:
        try:
            _version, shape, dtype, fortran, raw = state
        except (TypeError, ValueError) as exc:
            raise ModelCorrupt(f"Malformed numpy array state: {exc}", fix=REDOWNLOAD_FIX) from exc
        if not isinstance(dtype, np.dtype) or not isinstance(raw, (bytes, bytearray)):
            raise ModelIncompatible("The file holds a numpy array that is not plain numbers.", fix=REDOWNLOAD_FIX)
        flat = np.frombuffer(bytes(raw), dtype=dtype).copy()
        self.array = flat.reshape(tuple(shape), order="F" if fortran else "C")


def _numpy_reconstruct(_cls: Any, _shape: Any, _dtype: Any) -> _PendingArray:
    return _PendingArray()


def _numpy_scalar(dtype: Any, raw: Any = None) -> Any:
    if not isinstance(dtype, np.dtype) or not isinstance(raw, (bytes, bytearray)):
        raise ModelIncompatible("The file holds a numpy scalar that is not a plain number.", fix=REDOWNLOAD_FIX)
    return np.frombuffer(bytes(raw), dtype=dtype)[0]


class _JoblibArray:
    """joblib's ``NumpyArrayWrapper``: after BUILD, the unpickler reads the array bytes that follow."""

    def __setstate__(self, state: Any) -> None:
        if not isinstance(state, dict):
            raise ModelCorrupt("Malformed joblib array header.", fix=REDOWNLOAD_FIX)
        self.state = state


def _storage_marker(name: str) -> Callable[..., Any]:
    dtype = STORAGE_DTYPES[name]

    def marker(*_args: Any) -> torch.dtype:  # only used as a tag inside persistent ids
        return dtype

    marker.dtype = dtype  # type: ignore[attr-defined]
    return marker


@dataclass(frozen=True, slots=True)
class Storage:
    """Raw tensor bytes and the element type the file gives them."""

    data: torch.UntypedStorage
    dtype: torch.dtype


def _rebuild_tensor(storage: Any, offset: int, size: Any, stride: Any, *_rest: Any) -> torch.Tensor:
    if not isinstance(storage, Storage):
        raise ModelCorrupt("A tensor refers to something that is not a storage.", fix=REDOWNLOAD_FIX)
    tensor = torch.empty((0,), dtype=storage.dtype)
    try:
        tensor.set_(storage.data, int(offset), tuple(int(s) for s in size), tuple(int(s) for s in stride))
    except (RuntimeError, TypeError, ValueError) as exc:
        raise ModelCorrupt(f"A tensor does not fit its storage: {exc}", fix=REDOWNLOAD_FIX) from exc
    return tensor


def _rebuild_parameter(data: Any, _requires_grad: Any = False, _hooks: Any = None, *_rest: Any) -> Any:
    return data


def _codecs_encode(text: Any, encoding: str = "utf-8") -> bytes:
    """Protocol 2 spells ``bytes`` as ``_codecs.encode(str, "latin1")``."""
    if not isinstance(text, str) or encoding != "latin1":
        raise ModelIncompatible("The file holds an unexpected text encoding call.", fix=REDOWNLOAD_FIX)
    return text.encode("latin1")


def _torch_size(dims: Any = ()) -> torch.Size:
    return torch.Size(tuple(int(d) for d in dims))


def _ordered_dict(*args: Any) -> collections.OrderedDict:
    return collections.OrderedDict(*args)


_ALLOWED: dict[str, Any] = {
    "collections.OrderedDict": _ordered_dict,
    "_codecs.encode": _codecs_encode,
    "torch._utils._rebuild_tensor_v2": _rebuild_tensor,
    "torch._utils._rebuild_tensor": _rebuild_tensor,
    "torch._utils._rebuild_parameter": _rebuild_parameter,
    "torch._utils._rebuild_parameter_with_state": _rebuild_parameter,
    "torch.Size": _torch_size,
    "numpy.dtype": _numpy_dtype,
    "numpy.ndarray": np.ndarray,  # only ever a tag (joblib's "subclass", _reconstruct's first argument)
    "numpy.core.multiarray._reconstruct": _numpy_reconstruct,
    "numpy._core.multiarray._reconstruct": _numpy_reconstruct,
    "numpy.core.multiarray.scalar": _numpy_scalar,
    "numpy._core.multiarray.scalar": _numpy_scalar,
    "joblib.numpy_pickle.NumpyArrayWrapper": _JoblibArray,
    **{f"torch.{name}": _storage_marker(name) for name in STORAGE_DTYPES},
}


class SafeUnpickler(pickle._Unpickler):  # the pure-Python unpickler: its BUILD can be hooked (joblib)
    """An allow-list unpickler (see the module docstring). ``storages`` resolves persistent ids."""

    dispatch = pickle._Unpickler.dispatch.copy()
    stack: list[Any]

    def __init__(self, file: BinaryIO, storages: Callable[[tuple], Storage] | None = None) -> None:
        super().__init__(file)
        self._file = file
        self._storages = storages

    def find_class(self, module: str, name: str) -> Any:
        full = f"{module}.{name}"
        if full in _ALLOWED:
            return _ALLOWED[full]
        if full in INERT_CLASSES:
            return _record_type(full)
        raise ModelIncompatible(
            f"The file holds a {full} object; OmniTalk reads only weights and plain data and never runs "
            "code from model files.",
            fix=REDOWNLOAD_FIX,
        )

    def persistent_load(self, pid: Any) -> Any:
        if self._storages is None or not isinstance(pid, tuple) or not pid or pid[0] != "storage":
            raise ModelCorrupt("The file refers to external data it does not carry.", fix=REDOWNLOAD_FIX)
        return self._storages(pid)

    def load_build(self) -> None:
        state = self.stack[-1]
        inst = self.stack[-2]
        if isinstance(inst, np.dtype):  # (version, byteorder, ...): only the byte order matters
            self.stack.pop()
            order = state[1] if isinstance(state, tuple) and len(state) > 1 else "="
            self.stack[-1] = inst.newbyteorder("<" if order == "<" else ">") if order in ("<", ">") else inst
            return
        if not isinstance(inst, (InertRecord, _PendingArray, _JoblibArray)):
            raise ModelIncompatible(
                f"The file sets the state of a {type(inst).__name__}, which OmniTalk does not allow.",
                fix=REDOWNLOAD_FIX,
            )
        super().load_build()  # type: ignore[misc]  # typeshed omits the pure-Python opcode handlers
        top = self.stack[-1]
        if isinstance(top, _PendingArray):
            self.stack[-1] = top.array
        elif isinstance(top, _JoblibArray):
            self.stack[-1] = _read_joblib_array(top.state, self._file)

    dispatch[pickle.BUILD[0]] = load_build  # type: ignore[assignment]


def _read_exact(file: BinaryIO, n: int, what: str) -> bytes:
    data = file.read(n)
    if len(data) != n:
        raise ModelCorrupt(f"The file ends inside {what} (truncated download?).", fix=REDOWNLOAD_FIX)
    return data


def _read_joblib_array(header: dict[str, Any], file: BinaryIO) -> np.ndarray:
    """The raw bytes joblib writes right after a ``NumpyArrayWrapper`` (joblib/numpy_pickle.py)."""
    dtype, shape, order = header.get("dtype"), header.get("shape"), header.get("order", "C")
    if not isinstance(dtype, np.dtype) or not isinstance(shape, tuple):
        raise ModelCorrupt("Malformed joblib array header.", fix=REDOWNLOAD_FIX)
    if dtype.kind not in NUMPY_KINDS:
        raise ModelIncompatible("The file holds an array of Python objects.", fix=REDOWNLOAD_FIX)
    if header.get("numpy_array_alignment_bytes") is not None:  # joblib >= 1.2 pads to 16 bytes
        (padding,) = _read_exact(file, 1, "array padding")
        _read_exact(file, padding, "array padding")
    count = int(np.prod(np.array(shape, dtype=np.int64))) if shape else 1
    raw = _read_exact(file, count * dtype.itemsize, "array data")
    flat = np.frombuffer(raw, dtype=dtype).copy()
    return flat.reshape(shape[::-1]).T if order == "F" else flat.reshape(shape)


def _unpickle(file: BinaryIO, path: Path, storages: Callable[[tuple], Storage] | None = None) -> Any:
    try:
        return SafeUnpickler(file, storages).load()
    except (ModelIncompatible, ModelCorrupt) as exc:
        raise type(exc)(exc.message, path=path, fix=exc.fix) from exc
    except (
        pickle.UnpicklingError,
        EOFError,
        ValueError,
        TypeError,
        KeyError,
        IndexError,
        AttributeError,
        struct.error,
        OverflowError,
        UnicodeDecodeError,
    ) as exc:
        raise ModelCorrupt(
            f"The file cannot be read: {type(exc).__name__}: {exc}", path=path, fix=REDOWNLOAD_FIX
        ) from exc


def _open(path: Path) -> BinaryIO:
    try:
        return path.open("rb")
    except FileNotFoundError as exc:
        raise ModelMissing("The file does not exist.", path=path, fix="Download it again.") from exc


def load_torch_checkpoint(path: Path) -> Any:
    """A ``torch.save`` file (zip or legacy format) -> its object, tensors on the CPU."""
    path = Path(path)
    with _open(path) as handle:
        is_zip = zipfile.is_zipfile(handle)
    if is_zip:
        return _load_zip(path)
    return _load_legacy(path)


def _load_zip(path: Path) -> Any:
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as exc:
        raise ModelCorrupt(f"The checkpoint archive is damaged: {exc}", path=path, fix=REDOWNLOAD_FIX) from exc
    with archive:
        names = archive.namelist()
        pkl = [n for n in names if n.endswith("/data.pkl") or n == "data.pkl"]
        if len(pkl) != 1:
            raise ModelCorrupt("The checkpoint archive has no single data.pkl.", path=path, fix=REDOWNLOAD_FIX)
        prefix = pkl[0][: -len("data.pkl")]
        cache: dict[str, Storage] = {}

        def storage(pid: tuple) -> Storage:
            try:
                _tag, storage_type, key, _location, numel = pid[:5]
                dtype = storage_type.dtype
            except (ValueError, AttributeError) as exc:
                raise ModelCorrupt("A tensor refers to an unknown storage.", path=path, fix=REDOWNLOAD_FIX) from exc
            if key not in cache:
                try:
                    raw = archive.read(f"{prefix}data/{key}")
                except KeyError as exc:
                    raise ModelCorrupt(f"Tensor data {key!r} is missing.", path=path, fix=REDOWNLOAD_FIX) from exc
                item = torch.empty((), dtype=dtype).element_size()
                if len(raw) < int(numel) * item:
                    raise ModelCorrupt(f"Tensor data {key!r} is truncated.", path=path, fix=REDOWNLOAD_FIX)
                untyped = torch.UntypedStorage.from_buffer(raw, dtype=torch.uint8) if raw else torch.UntypedStorage(0)
                cache[key] = Storage(untyped, dtype)
            return cache[key]

        try:
            data = archive.read(pkl[0])
        except (zipfile.BadZipFile, OSError) as exc:
            raise ModelCorrupt(f"The checkpoint archive is damaged: {exc}", path=path, fix=REDOWNLOAD_FIX) from exc
        return _unpickle(io.BytesIO(data), path, storage)


def _load_legacy(path: Path) -> Any:
    """PyTorch's pre-1.6 format: magic, protocol, sys info, the object, storage keys, raw storages."""
    with _open(path) as handle:
        header = [_unpickle(handle, path) for _ in range(3)]
        if header[0] != LEGACY_TORCH_MAGIC or header[1] != LEGACY_PROTOCOL_VERSION:
            raise ModelCorrupt("This is not a PyTorch checkpoint.", path=path, fix=REDOWNLOAD_FIX)
        roots: dict[str, torch.UntypedStorage] = {}
        dtypes: dict[str, torch.dtype] = {}

        def storage(pid: tuple) -> Storage:
            try:
                _tag, storage_type, key, _location, numel, view = pid[:6]
                dtype = storage_type.dtype
            except (ValueError, AttributeError) as exc:
                raise ModelCorrupt("A tensor refers to an unknown storage.", path=path, fix=REDOWNLOAD_FIX) from exc
            if key not in roots:
                item = torch.empty((), dtype=dtype).element_size()
                roots[key] = torch.UntypedStorage(int(numel) * item)
                dtypes[key] = dtype
            if view is not None:
                raise ModelIncompatible("Storage views (PyTorch < 1.0 files) are not supported.", path=path)
            return Storage(roots[key], dtype)

        result = _unpickle(handle, path, storage)
        keys = _unpickle(handle, path)
        if not isinstance(keys, list):
            raise ModelCorrupt("The checkpoint's storage list is damaged.", path=path, fix=REDOWNLOAD_FIX)
        for key in keys:
            if key not in roots:
                raise ModelCorrupt(f"Storage {key!r} is listed but never used.", path=path, fix=REDOWNLOAD_FIX)
            (numel,) = struct.unpack("<q", _read_exact(handle, LEGACY_SIZE_HEADER_BYTES, "a storage header"))
            item = torch.empty((), dtype=dtypes[key]).element_size()
            raw = _read_exact(handle, numel * item, "storage data")
            if numel * item != roots[key].nbytes():
                raise ModelCorrupt(f"Storage {key!r} has the wrong size.", path=path, fix=REDOWNLOAD_FIX)
            roots[key].copy_(torch.UntypedStorage.from_buffer(raw, dtype=torch.uint8) if raw else roots[key])
    return result


def load_joblib(path: Path) -> Any:
    """An uncompressed ``joblib.dump`` file (what fairseq's k-means scripts write) -> its object."""
    path = Path(path)
    with _open(path) as handle:
        first = handle.read(1)
        if first != b"\x80":
            raise ModelIncompatible(
                "This file is not an uncompressed joblib/pickle file.", path=path, fix=REDOWNLOAD_FIX
            )
        handle.seek(0)
        return _unpickle(handle, path)
