"""Build gufunc loops: generated kernel source -> Numba -> a real NumPy gufunc; the parallel target.

The kernel is compiled with the core compiler's flags (``error_model='numpy'``: a division by zero
gives inf/nan as in NumPy, never an exception; no NRT), then wrapped in our own gufunc inner loop,
written in LLVM IR (``backends/gucpu.py``), and handed to NumPy as a ``numpy.ufunc`` with a core
signature, so NumPy's broadcasting over loop dimensions, ``out=``, ``axes=`` and casting apply
unchanged.  Fixed sizes such as ``(3)`` are kept in the NumPy signature, so NumPy checks them.

Compiled loops go through the same caches as elementwise loops: memory (``memcache.LOOPS``), then
the disk cache, keyed by ``guloop_key`` (canonical formula with its layout and output indices,
dtypes, options, CPU, versions) before any code generation.  A disk hit loads the loop's machine
code (``backends/cpustore.py``, unchanged: the loop needs no Numba environment) and the kernel
source, and compiles nothing.  ``cache=False`` or ``UFUNCGEN_DISABLE_CACHE=1`` skip the disk.

The parallel target splits the loop dimensions over the same thread pool as the ufunc parallel
target (NumPy releases the GIL around our loops), rather than Numba's ``target='parallel'``, whose
default OpenMP layer schedules one core element per task.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import diskcache
from .build import _COMPILES, _compile_errors, _decode_loop, _encode_loop
from .codegen import KernelSource, load_kernel
from .gucodegen import generate_gukernel
from .indexing import IndexedFormula, Layout
from .memcache import LOOPS

__all__ = ["GuLoopRequest", "compiled_guloop", "gukernel_source", "guloop_key", "make_numpy_gufunc",
           "parallel_gufunc_call"]


@dataclass(frozen=True)
class GuLoopRequest:
    formula: IndexedFormula
    in_dtypes: tuple
    out_dtypes: tuple
    fastmath: bool = False
    cse: bool = True
    cache: bool = True  # may use the disk cache (not part of the key: the loop is the same)

    def key(self) -> tuple:
        return ("gufunc", self.formula.canonical(), tuple(d.str for d in self.in_dtypes),
                tuple(d.str for d in self.out_dtypes), self.fastmath, self.cse)


def gukernel_source(req: GuLoopRequest) -> KernelSource:
    return generate_gukernel(req.formula, req.in_dtypes, req.out_dtypes, cse=req.cse)


def guloop_key(req: GuLoopRequest, memory_key: tuple) -> str:
    """Disk key of one gufunc loop: the memory key (canonical formula, layout, output indices, dtypes,
    options) with the index dimensions, Numba's bounds-check switch (array kernels, unlike scalar
    ones, change with it), the CPU, the versions and ufuncgen's code fingerprint."""
    from numba.core import config

    from .cachekey import KEY_FORMAT, code_fingerprint, cpu_device, digest, versions
    f = req.formula
    return digest("ufuncgen-guloop", KEY_FORMAT, memory_key, ("layout", str(f.layout)), ("dims", f.dims),
                  ("multi", bool(f.multi)), ("boundscheck", config.BOUNDSCHECK), cpu_device(), versions(),
                  code_fingerprint())


def _compile(req: GuLoopRequest):
    from .backends import gucpu

    src = gukernel_source(req)
    pyfunc = load_kernel(src)
    _COMPILES.add()
    with _compile_errors("the gufunc", req.in_dtypes):
        cres = gucpu.compile_gukernel(pyfunc, req.formula.layout, req.in_dtypes, req.out_dtypes, req.fastmath)
    # named by content (the source holds the layout and the signature), so loops loaded from disk
    # into one JIT never share a symbol
    name = "gu_" + src.digest + ("_fastmath" if req.fastmath else "")
    loop = gucpu.build_guloop(cres, req.formula.layout, req.in_dtypes, req.out_dtypes, name)
    loop.source = src
    loop.keepalive += (pyfunc,)  # keeps the kernel's linecache entry while the loop lives
    return loop


def _build(req: GuLoopRequest, memory_key: tuple):
    if not req.cache or diskcache.disabled_by_env():
        return _compile(req)
    return diskcache.cached(guloop_key(req, memory_key), lambda: _compile(req), _encode_loop,
                            lambda data: _decode_loop(data, req, "ufuncgen gukernel"))


def compiled_guloop(req: GuLoopRequest):
    """The compiled loop for ``req`` (memory, then disk; one compile per key per process)."""
    key = req.key()
    return LOOPS.get_or_build(key, lambda: _build(req, key))


def make_numpy_gufunc(name: str, doc: str, loops: list, nin: int, nout: int, layout: Layout) -> np.ufunc:
    """A real ``numpy.ufunc`` with core signature ``layout`` over compiled loops."""
    from numba.np.ufunc import _internal
    keep = tuple(loop.keepalive for loop in loops)
    return _internal.fromfunc(name, doc, [loop.address for loop in loops], [loop.typenums for loop in loops],
                              nin, nout, [None] * len(loops), keep, _internal.PyUFunc_None, str(layout), ())


# ---- the parallel target -----------------------------------------------------------------------------
def _core_sizes(args, layout: Layout):
    """Loop shape of each argument, and the size of each named core dimension."""
    loops, sizes = [], {}
    for a, dims in zip(args, layout.inputs, strict=True):
        shape = np.shape(a)
        if len(shape) < len(dims):
            return None
        for d, n in zip(dims, shape[len(shape) - len(dims):], strict=True):
            if sizes.setdefault(d, n) != n:
                return None
        loops.append(shape[:len(shape) - len(dims)])
    return loops, sizes


def parallel_gufunc_call(uf: np.ufunc, layout: Layout, out_dtypes, args, kwargs):
    """Call the gufunc on thread-sized slices of the loop dimensions; one call where it must."""
    from .parallel import MIN_PARALLEL_SIZE, _call_in_slices, _overlap, _plain, num_threads

    nthreads = num_threads()
    if nthreads < 2 or set(kwargs) - {"out", "casting"} or not all(_plain(a) for a in args):
        return uf(*args, **kwargs)
    found = _core_sizes(args, layout)
    if found is None:
        return uf(*args, **kwargs)  # let NumPy say what does not fit
    loops, sizes = found
    try:
        loop_shape = np.broadcast_shapes(*loops)
    except ValueError:
        return uf(*args, **kwargs)
    core_in = max((int(np.prod([sizes[d] for d in dims])) for dims in layout.inputs), default=1)
    if not loop_shape or int(np.prod(loop_shape)) * max(core_in, 1) < MIN_PARALLEL_SIZE:
        return uf(*args, **kwargs)
    out_shapes = [loop_shape + tuple(sizes.get(d, d) for d in dims) for dims in layout.outputs]
    out = kwargs.get("out")
    outs = out if isinstance(out, tuple) else ((out,) if out is not None else None)
    if outs is None or all(o is None for o in outs):
        outs = tuple(np.empty(s, dtype=dt) for s, dt in zip(out_shapes, out_dtypes, strict=True))
    elif (not all(type(o) is np.ndarray and o.shape == s for o, s in zip(outs, out_shapes, strict=True))
          or _overlap(outs, args)):
        return uf(*args, **kwargs)  # NumPy copies overlapping operands; threads would race
    full = [a if not isinstance(a, np.ndarray) or a.ndim == 0 else
            np.broadcast_to(a, loop_shape + a.shape[a.ndim - len(dims):])
            for a, dims in zip(args, layout.inputs, strict=True)]
    return _call_in_slices(uf, full, outs, kwargs, loop_shape, nthreads)
