"""Build gufunc loops: generated kernel source -> Numba -> a real NumPy gufunc; the parallel target.

The kernel is compiled with the core compiler's flags (``error_model='numpy'``: a division by zero
gives inf/nan as in NumPy, never an exception; no NRT), then wrapped in Numba's own gufunc inner
loop and handed to NumPy as a ``numpy.ufunc`` with a core signature, so NumPy's broadcasting over
loop dimensions, ``out=``, ``axes=`` and casting apply unchanged.  Fixed sizes such as ``(3)`` are
kept in the NumPy signature (Numba's layout parser would refuse them), so NumPy checks them.

The parallel target splits the loop dimensions over the same thread pool as the ufunc parallel
target (NumPy releases the GIL around our loops), rather than Numba's ``target='parallel'``, whose
default OpenMP layer schedules one core element per task.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .codegen import KernelSource, load_kernel
from .gucodegen import generate_gukernel
from .indexing import IndexedFormula, Layout
from .memcache import LOOPS

__all__ = ["GuLoopRequest", "GuLoop", "compiled_guloop", "gukernel_source", "make_numpy_gufunc",
           "parallel_gufunc_call"]


@dataclass(frozen=True)
class GuLoopRequest:
    formula: IndexedFormula
    in_dtypes: tuple
    out_dtypes: tuple
    fastmath: bool = False
    cse: bool = True

    def key(self) -> tuple:
        return ("gufunc", self.formula.canonical(), tuple(d.str for d in self.in_dtypes),
                tuple(d.str for d in self.out_dtypes), self.fastmath, self.cse)


@dataclass
class GuLoop:
    """One compiled gufunc inner loop and what keeps it alive."""

    address: int
    in_dtypes: tuple
    out_dtypes: tuple
    keepalive: tuple
    source: KernelSource

    @property
    def typenums(self) -> list:
        return [np.dtype(d).num for d in self.in_dtypes + self.out_dtypes]


def gukernel_source(req: GuLoopRequest) -> KernelSource:
    return generate_gukernel(req.formula, req.in_dtypes, req.out_dtypes, cse=req.cse)


def _numba_dims(layout: Layout):
    """Numba's wrapper wants names: a fixed size 3 becomes the name ``_3``."""
    def names(groups):
        return [tuple(d if isinstance(d, str) else f"_{d}" for d in g) for g in groups]
    return names(layout.inputs), names(layout.outputs)


def _build(req: GuLoopRequest) -> GuLoop:
    from numba.core import compiler, types
    from numba.core.compiler_lock import global_compiler_lock
    from numba.core.registry import cpu_target
    from numba.np import numpy_support
    from numba.np.ufunc.wrappers import build_gufunc_wrapper

    from .backends.cpu import _flags

    src = gukernel_source(req)
    pyfunc = load_kernel(src)
    lay = req.formula.layout
    argtys = []
    for dt, dims in zip(req.in_dtypes, lay.inputs, strict=True):
        ty = numpy_support.from_dtype(dt)
        argtys.append(types.Array(ty, len(dims), "A") if dims else ty)
    for dt, dims in zip(req.out_dtypes, lay.outputs, strict=True):
        argtys.append(types.Array(numpy_support.from_dtype(dt), max(1, len(dims)), "A"))
    sin, sout = _numba_dims(lay)
    with global_compiler_lock:
        typingctx = cpu_target.typing_context
        targetctx = cpu_target.target_context
        typingctx.refresh()
        targetctx.refresh()
        try:
            cres = compiler.compile_extra(typingctx, targetctx, pyfunc, tuple(argtys), types.void,
                                          _flags(req.fastmath), {})
        except Exception as err:  # Numba's typing errors are long: say what failed, keep the cause
            if type(err).__name__ in ("TypingError", "UnsupportedError", "LoweringError", "NumbaError"):
                first = str(err).splitlines()[0] if str(err) else type(err).__name__
                raise TypeError(f"the gufunc cannot be compiled for inputs "
                                f"({', '.join(d.name for d in req.in_dtypes)}): {first}") from err
            raise
        info = build_gufunc_wrapper(pyfunc, cres, sin, sout, cache=False, is_parfors=False)
        address = info.library.get_pointer_to_function(info.name)
    return GuLoop(address, req.in_dtypes, req.out_dtypes, (info.library, info.env, cres.library, cres), src)


def compiled_guloop(req: GuLoopRequest) -> GuLoop:
    """The compiled loop for ``req`` (cached in memory; one compile per key per process)."""
    return LOOPS.get_or_build(req.key(), lambda: _build(req))


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
    from .parallel import MIN_PARALLEL_SIZE, _executor, _plain, num_threads

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
    elif not all(type(o) is np.ndarray and o.shape == s for o, s in zip(outs, out_shapes, strict=True)):
        return uf(*args, **kwargs)
    axis = int(np.argmax(loop_shape))
    nchunks = min(nthreads, loop_shape[axis])
    bounds = np.linspace(0, loop_shape[axis], nchunks + 1).astype(int)
    full = [a if not isinstance(a, np.ndarray) or a.ndim == 0 else
            np.broadcast_to(a, loop_shape + a.shape[a.ndim - len(dims):])
            for a, dims in zip(args, layout.inputs, strict=True)]

    def piece(a, lo, hi):
        if not isinstance(a, np.ndarray) or a.ndim == 0:
            return a
        idx = [slice(None)] * a.ndim
        idx[axis] = slice(lo, hi)
        return a[tuple(idx)]

    extra = {k: v for k, v in kwargs.items() if k != "out"}

    def run(k):
        lo, hi = bounds[k], bounds[k + 1]
        uf(*[piece(a, lo, hi) for a in full], out=tuple(piece(o, lo, hi) for o in outs), **extra)

    futures = [_executor().submit(run, k) for k in range(1, nchunks)]
    run(0)
    for f in futures:
        f.result()
    return outs[0] if len(outs) == 1 else outs
