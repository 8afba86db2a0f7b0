"""Disk-cache keys: one sha256 over everything that decides the machine code.

A key is computed before any code generation or Numba work, so a disk hit skips all of it (the
flow is parse -> key -> codegen -> build).  Its parts:

* the memory cache's key: the canonical formula (``Formula.canonical()``: SymPy's canonical form of
  the expressions, and the argument order), so two spellings with one canonical form share an
  entry; the input and output dtypes; the backend; the options (fastmath, cse);
* the device: LLVM's target triple, CPU name and features as Numba's codegen sees them (so
  ``NUMBA_CPU_NAME`` is honoured), Numba's optimisation level, and the vector math library the
  loop calls (``backends/vecmath.py``; ``UFUNCGEN_VECTOR_MATH=0`` builds differ);
* the versions of ufuncgen, Numba, llvmlite, NumPy, SymPy and Python, and a hash of ufuncgen's own
  source files, which stands for the generated kernel source and the loop builder: changed code
  generation never loads an old entry, even in a checkout without a version bump.

Why not hash the generated kernel source itself: generating it (SymPy's CSE and printing) costs
about as much as loading the stored machine code, and it is a pure function of the parts above.

``digest(*parts)`` is the generic helper: parts are length-prefixed, so ``("ab", "c")`` and
``("a", "bc")`` differ.  Other backends build their keys with it and ``versions()``.
"""
from __future__ import annotations

import functools
import hashlib
import platform
import sys
from pathlib import Path

__all__ = ["KEY_FORMAT", "digest", "versions", "cpu_device", "code_fingerprint", "loop_key"]

KEY_FORMAT = 1  # bump when the key recipe changes


def digest(*parts) -> str:
    """sha256 (hex) over the parts, each length-prefixed; str parts are UTF-8, others ``repr``."""
    h = hashlib.sha256()
    for part in parts:
        data = part if isinstance(part, bytes) else (part if isinstance(part, str) else repr(part)).encode()
        h.update(len(data).to_bytes(8, "little"))
        h.update(data)
    return h.hexdigest()


@functools.cache
def _library_versions() -> tuple:
    import llvmlite
    import numba
    import numpy
    import sympy
    return (("numba", numba.__version__), ("llvmlite", llvmlite.__version__), ("numpy", numpy.__version__),
            ("sympy", sympy.__version__), ("python", f"{platform.python_implementation()} {sys.version}"))


def versions() -> tuple:
    """(name, version) pairs; ufuncgen's is read each time (it is a plain attribute)."""
    import ufuncgen
    return (("ufuncgen", ufuncgen.__version__),) + _library_versions()


@functools.cache
def cpu_device() -> tuple:
    """Numba's own description of the code it generates: (triple, CPU name, features), -O level, and
    the vector math in use (``backends/vecmath.state()``: a loop that calls libmvec differs from one
    that does not; computing it loads libmvec, which a stored loop that calls it needs)."""
    from numba.core import config
    from numba.core.registry import cpu_target

    from .backends import vecmath
    return tuple(cpu_target.target_context.codegen().magic_tuple()) + (("opt", config.OPT),
                                                                         ("vecmath", vecmath.state()))


@functools.cache
def code_fingerprint() -> str:
    """sha256 over ufuncgen's own ``.py`` files (names and contents), read once per process."""
    root = Path(__file__).resolve().parent
    h = hashlib.sha256()
    for path in sorted(root.rglob("*.py")):
        try:
            data = path.read_bytes()
        except OSError:
            continue
        h.update(path.relative_to(root).as_posix().encode() + b"\0" + len(data).to_bytes(8, "little") + data)
    return h.hexdigest()


def loop_key(req, memory_key: tuple) -> str:
    """The key of one compiled ufunc inner loop.

    ``memory_key`` is ``req.key(backend)``: canonical formula with its argument order, dtypes,
    backend and options, already computed for the memory cache (``canonical()`` is not free).
    """
    return digest("ufuncgen-loop", KEY_FORMAT, memory_key, ("multi", bool(req.formula.multi)),
                  cpu_device(), versions(), code_fingerprint())
