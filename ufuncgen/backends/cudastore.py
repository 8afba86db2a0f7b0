"""A compiled CUDA kernel to bytes and back, for the disk cache; loading compiles nothing.

The payload is what ``DriverKernel.artifact`` describes: the kernel's PTX and entry name, plus the
generated module text (for ``.source``), as length-prefixed fields (``diskcache.pack``, no
pickle).  Loading hands the PTX to the driver (``cuModuleLoadData``, which JIT-compiles it for the
device and keeps the machine code in its own compute cache) without calling numba-cuda or NVVM,
and without generating the source again.

The key (``kernel_key``) is computed before code generation, from:

* the memory cache's key: canonical formula, launch spec (argument kinds, dtypes, layout),
  options (fastmath, cse), block size, and the engine key (compute capability, numba-cuda version);
* the toolchain that made the PTX: NVVM's version and IR version, the CUDA runtime and driver versions;
* ufuncgen's versions and its source fingerprint (``cachekey``), as for cpu loops.

The simulator keeps no disk entries: its kernels are Python functions, rebuilt in microseconds.
"""
from __future__ import annotations

import hashlib

from .. import diskcache
from ..cachekey import KEY_FORMAT, code_fingerprint, digest, versions
from ..codegen import KernelSource

__all__ = ["kernel_key", "dumps", "loads", "cached"]

_TAG = b"ufuncgen-cuda-kernel/1"


def kernel_key(engine, memory_key: tuple) -> str:
    """The disk key of one kernel: the memory key plus toolchain, device and ufuncgen versions."""
    return digest("ufuncgen-cuda-kernel", KEY_FORMAT, memory_key, engine.cache_key, engine.toolchain(), versions(),
                  code_fingerprint())


def dumps(kernel) -> bytes:
    """Entry name, PTX and generated source of a compiled driver kernel."""
    if not kernel.ptx or not kernel.entry:
        raise ValueError("only driver kernels (PTX) can be stored")
    return diskcache.pack([_TAG, kernel.entry.encode(), kernel.ptx.encode(), kernel.source.text.encode(),
                           kernel.source.filename.encode()])


def loads(data: bytes, engine, spec):
    """A driver kernel from a ``dumps`` payload, loaded into the current context (ValueError if unusable)."""
    fields = diskcache.unpack(data)
    if len(fields) != 5 or fields[0] != _TAG:
        raise ValueError("not a ufuncgen cuda kernel payload of this version")
    _tag, entry, ptx, text, filename = (bytes(f).decode() for f in fields)
    kernel = engine.load(ptx, entry, spec)  # cuModuleLoadData: a bad payload fails here, not at a launch
    digest_ = hashlib.sha256(text.encode()).hexdigest()[:16]
    kernel.source = KernelSource(text, filename, digest_, tuple(spec.in_compute), tuple(spec.out_compute),
                                 func_name="launcher")
    return kernel


def cached(engine, memory_key: tuple, spec, build, use: bool = True):
    """``build()`` through the disk cache (off with ``use=False`` or ``UFUNCGEN_DISABLE_CACHE``)."""
    if not use or diskcache.disabled_by_env():
        return build()
    return diskcache.cached(kernel_key(engine, memory_key), build, dumps, lambda data: loads(data, engine, spec))
