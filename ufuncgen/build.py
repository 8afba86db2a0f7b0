"""From a checked formula and dtypes to a compiled loop, through the compile caches.

This is the seam between the front end (parse, types, codegen) and the backends: everything a
target needs is a ``LoopRequest``; ``compiled_loop`` returns the same object for the same
request, compiling at most once per process (memory cache) and, with the disk cache, at most once
per machine: the disk key (``cachekey.loop_key``) is computed before code generation and before any
Numba work, and a disk hit loads the stored machine code (and the kernel source, for
``UFunc.source``) instead of generating and compiling.
"""
from __future__ import annotations

import hashlib
import threading
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np

from . import diskcache
from .codegen import KernelSource, generate_kernel, load_kernel, register_source
from .dtypes import infer_output_dtypes
from .errors import FormulaError
from .formula import Formula
from .memcache import LOOPS

__all__ = ["LoopRequest", "compiled_loop", "kernel_source", "output_dtypes", "compile_count", "loop_llvm_ir"]


@dataclass(frozen=True)
class LoopRequest:
    formula: Formula
    in_dtypes: tuple
    out_dtypes: tuple
    fastmath: bool = False
    cse: bool = True
    cache: bool = True  # may use the disk cache (not part of the key: the loop is the same)

    def key(self, backend: str) -> tuple:
        return (self.formula.canonical(), tuple(d.str for d in self.in_dtypes),
                tuple(d.str for d in self.out_dtypes), backend, self.fastmath, self.cse)


def output_dtypes(formula: Formula, in_dtypes: tuple) -> tuple:
    """NumPy's result dtypes for the formula; TypeError where a function refuses a dtype."""
    try:
        return infer_output_dtypes(formula.exprs, formula.symbols, in_dtypes)
    except TypeError as err:
        names = ", ".join(np.dtype(d).name for d in in_dtypes)
        raise TypeError(f"{err} (inputs: {names})") from None


def kernel_source(req: LoopRequest) -> KernelSource:
    return generate_kernel(req.formula, req.in_dtypes, req.out_dtypes, cse=req.cse)


class _Counter:
    def __init__(self):
        self._lock = threading.Lock()
        self.value = 0

    def add(self) -> None:
        with self._lock:
            self.value += 1


_COMPILES = _Counter()


def compile_count() -> int:
    """Loops really compiled by Numba in this process (a disk-cache load is not one)."""
    return _COMPILES.value


@contextmanager
def _compile_errors(what: str, in_dtypes: tuple):
    """Numba's typing errors are long: say what failed (first line only) and keep the cause."""
    try:
        yield
    except Exception as err:
        if type(err).__name__ in ("TypingError", "UnsupportedError", "LoweringError", "NumbaError"):
            first = str(err).splitlines()[0] if str(err) else type(err).__name__
            raise TypeError(f"{what} cannot be compiled for inputs "
                            f"({', '.join(d.name for d in in_dtypes)}): {first}") from err
        raise


def _compile_cpu(req: LoopRequest):
    from .backends import cpu
    src = kernel_source(req)
    pyfunc = load_kernel(src)
    _COMPILES.add()
    with _compile_errors("the formula", req.in_dtypes):
        cres = cpu.compile_kernel(pyfunc, req.in_dtypes, req.out_dtypes, fastmath=req.fastmath)
    # the symbol names everything that changes the machine code (the digest covers source and dtypes),
    # so two loops in one JIT never share a name, however they got there (compiled or loaded)
    name = src.digest + ("_fastmath" if req.fastmath else "")
    loop = cpu.build_loop(cres, req.in_dtypes, req.out_dtypes, name)
    loop.source = src
    loop.keepalive += (pyfunc,)  # keeps the kernel's linecache entry while the loop lives
    return loop


def _encode_loop(loop) -> bytes:
    """Disk payload of a cpu loop (ufunc or gufunc): the kernel source (for ``.source``) and the
    loop's machine code."""
    from .backends import cpustore
    return diskcache.pack([loop.source.text.encode(), cpustore.dumps(loop)])


def _decode_loop(data: bytes, req, label: str):
    """The loop of an ``_encode_loop`` payload; ``label`` names its source as the generator does
    (``"ufuncgen kernel"``: ``<ufuncgen kernel {digest}>``)."""
    from .backends import cpustore
    fields = diskcache.unpack(data)
    if len(fields) != 2:
        raise ValueError(f"expected 2 fields, found {len(fields)}")
    loop = cpustore.loads(fields[1], req.in_dtypes, req.out_dtypes)
    text = bytes(fields[0]).decode()
    digest = hashlib.sha256(text.encode()).hexdigest()[:16]  # as the generator names it
    loop.source = KernelSource(text, f"<{label} {digest}>", digest, loop.in_dtypes, loop.out_dtypes)
    register_source(loop.source, owner=loop)  # linecache shows the kernel, as for a compiled one
    return loop


def _build_cpu(req: LoopRequest, memory_key: tuple):
    if not req.cache or diskcache.disabled_by_env():
        return _compile_cpu(req)
    from .cachekey import loop_key
    return diskcache.cached(loop_key(req, memory_key), lambda: _compile_cpu(req), _encode_loop,
                            lambda data: _decode_loop(data, req, "ufuncgen kernel"))


def compiled_loop(req: LoopRequest, backend: str = "cpu"):
    """The compiled loop for ``req`` (memory, then disk; one compile per key per process)."""
    if backend != "cpu":
        raise FormulaError(f"unknown backend {backend!r}")
    key = req.key(backend)
    return LOOPS.get_or_build(key, lambda: _build_cpu(req, key))


def loop_llvm_ir(req: LoopRequest, loop=None) -> str:
    """The optimised LLVM IR of the loop for ``req`` (kernel inlined).

    A loop loaded from the disk cache holds machine code only, so its IR comes from a fresh
    compile, which is not cached (inspection is for debugging).
    """
    loop = loop if loop is not None else compiled_loop(req)
    if loop.from_disk:
        loop = _compile_cpu(req)
    return loop.keepalive[0].get_llvm_str()
