"""Kinds of call arguments for the cuda target, recognised by type without importing CuPy.

Each device kind knows how to read an array's pointer, shape, strides and dtype, and how to
allocate a result of its own kind: CuPy in gives CuPy out, Numba device arrays (and any other
object with ``__cuda_array_interface__``) give Numba device arrays.  The lookups are cached per
type so the hot path is a dict lookup and a few attribute reads.
"""
from __future__ import annotations

import numpy as np

__all__ = ["Kind", "kind_of", "SCALAR_TYPES", "is_device", "stream_handle"]

SCALAR_TYPES = (bool, int, float, complex)


class Kind:
    """How to read and allocate one kind of array.

    name: 'host', 'scalar', 'cupy', 'numba', 'sim' or 'cai'.
    key(a): what the call cache keys on (dtype, shape, strides); ptr(a): the data pointer;
    host(a): the NumPy array behind a simulator array; describe(a) -> (shape, byte strides, dtype).
    """

    def __init__(self, name, key, ptr=None, describe=None, host=None):
        self.name = name
        self.key = key
        self.ptr = ptr
        self.describe = describe
        self.host = host

    @property
    def device(self) -> bool:
        return self.name in ("cupy", "numba", "sim", "cai")

    def __repr__(self) -> str:
        return f"<array kind {self.name}>"


def _scalar_key(a):
    return type(a)


def _np_key(a):
    return (np.ndarray, a.dtype, a.shape, a.strides)


def _npscalar_key(a):
    return type(a)


def _attr_key(a):
    return (type(a), a.dtype, a.shape, a.strides)


def _cai_key(a):
    d = a.__cuda_array_interface__
    return (type(a), d["typestr"], tuple(d["shape"]), d.get("strides"))


def _attr_describe(a):
    return tuple(a.shape), tuple(a.strides), np.dtype(a.dtype)


def _cai_describe(a):
    d = a.__cuda_array_interface__
    dtype = np.dtype(d["typestr"])
    shape = tuple(d["shape"])
    strides = d.get("strides")
    if strides is None:  # C-contiguous
        strides, acc = [], dtype.itemsize
        for s in reversed(shape):
            strides.append(acc)
            acc *= max(s, 1)
        strides = tuple(reversed(strides))
    return shape, tuple(strides), dtype


def _cai_ptr(a):
    return a.__cuda_array_interface__["data"][0]


def _cupy_ptr(a):
    return a.data.ptr


def _numba_ptr(a):
    return int(a.gpu_data.device_pointer) if a.size else 0


HOST = Kind("host", _np_key, describe=_attr_describe)
SCALAR = Kind("scalar", _scalar_key)
NPSCALAR = Kind("scalar", _npscalar_key)
CUPY = Kind("cupy", _attr_key, _cupy_ptr, _attr_describe)
NUMBA = Kind("numba", _attr_key, _numba_ptr, _attr_describe)
SIM = Kind("sim", _attr_key, None, lambda a: _attr_describe(a._ary), host=lambda a: a._ary)
CAI = Kind("cai", _cai_key, _cai_ptr, _cai_describe)

_BY_TYPE: dict = {t: SCALAR for t in SCALAR_TYPES}
_BY_TYPE[np.ndarray] = HOST


def kind_of(a) -> Kind | None:
    """The kind of a call argument, or None for things to convert with ``np.asarray`` first."""
    t = type(a)
    kind = _BY_TYPE.get(t)
    if kind is None:
        kind = _BY_TYPE[t] = _classify(t)
    return kind


def _classify(t: type) -> Kind | None:
    mod = t.__module__ or ""
    if issubclass(t, np.generic):
        return NPSCALAR
    if issubclass(t, np.ndarray):
        return HOST
    if mod.startswith("cupy") and t.__name__ == "ndarray":
        return CUPY
    if getattr(t, "__cuda_ndarray__", False):  # Numba's device arrays (gpu_data is set per instance)
        if "simulator" in mod:
            return SIM
        if mod.startswith("numba"):
            return NUMBA
    if hasattr(t, "__cuda_array_interface__"):
        return CAI
    return None


def is_device(a) -> bool:
    """True for arrays that live on a CUDA device (what ``target='auto'`` sends to cuda)."""
    kind = kind_of(a)
    return kind is not None and kind.device


def stream_handle(stream) -> int:
    """The raw ``CUstream`` of a Numba or CuPy stream (or anything with ``__cuda_stream__``)."""
    if stream is None or stream == 0:
        return 0
    if isinstance(stream, int):
        return stream
    proto = getattr(stream, "__cuda_stream__", None)
    if proto is not None:
        return int(proto()[1])
    ptr = getattr(stream, "ptr", None)  # CuPy
    if ptr is not None:
        return int(ptr)
    handle = getattr(stream, "handle", None)  # Numba
    if handle is not None:
        value = getattr(handle, "value", handle)
        return int(value or 0)
    raise TypeError(f"stream= must be a Numba or CuPy stream (or a raw CUstream int), not {type(stream).__name__}")
