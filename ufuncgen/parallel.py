"""The parallel target: the cpu loop, run on slices of the broadcast shape by a thread pool.

NumPy releases the GIL inside our compiled loops, so threads scale.  This avoids Numba's
parallel ufunc, which under its default OpenMP layer schedules one element per task (0.05-0.3x
NumPy), and a second Numba compile of a prange kernel.  Small calls stay on the calling thread.
"""
from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np

__all__ = ["parallel_call", "num_threads", "MIN_PARALLEL_SIZE"]

MIN_PARALLEL_SIZE = int(os.environ.get("UFUNCGEN_PARALLEL_MIN_SIZE", 1 << 15))
_pool = None
_pool_lock = threading.Lock()


def num_threads() -> int:
    env = os.environ.get("UFUNCGEN_NUM_THREADS")
    if env:
        return max(1, int(env))
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _executor() -> ThreadPoolExecutor:
    global _pool
    if _pool is None:
        with _pool_lock:
            if _pool is None:
                _pool = ThreadPoolExecutor(max_workers=max(1, num_threads() - 1),
                                           thread_name_prefix="ufuncgen")
    return _pool


def _plain(a) -> bool:
    return type(a) is np.ndarray or isinstance(a, (int, float, complex, bool, np.generic))


def _same_view(a, b) -> bool:
    return (a.__array_interface__["data"][0] == b.__array_interface__["data"][0]
            and a.shape == b.shape and a.strides == b.strides and a.dtype == b.dtype)


def _overlap(outs, args) -> bool:
    """True when an output overlaps an input or another output other than element by element.

    NumPy copies such operands before computing; slices computed at once by several threads
    would read elements another thread has already written (out=x[1:] with input x[:-1]).
    """
    arrays = [a for a in args if isinstance(a, np.ndarray)]
    for i, o in enumerate(outs):
        if any(np.may_share_memory(o, a) and not _same_view(o, a) for a in arrays):
            return True
        if any(np.may_share_memory(o, p) for p in outs[:i]):
            return True
    return False


def parallel_call(uf, out_dtypes, args, kwargs):
    """Call the np.ufunc ``uf`` on thread-sized slices; falls back to one call where it must."""
    nthreads = num_threads()
    out = kwargs.get("out")
    if nthreads < 2 or set(kwargs) - {"out", "casting"} or not all(_plain(a) for a in args):
        return uf(*args, **kwargs)
    shapes = [np.shape(a) for a in args]
    try:
        shape = np.broadcast_shapes(*shapes)
    except ValueError:
        return uf(*args, **kwargs)  # let NumPy raise its own message
    size = int(np.prod(shape)) if shape else 1
    if size < MIN_PARALLEL_SIZE or not shape:
        return uf(*args, **kwargs)
    outs = out if isinstance(out, tuple) else ((out,) if out is not None else None)
    if outs is None or all(o is None for o in outs):
        outs = tuple(np.empty(shape, dtype=dt) for dt in out_dtypes)
    elif not all(type(o) is np.ndarray and o.shape == shape for o in outs) or _overlap(outs, args):
        return uf(*args, **kwargs)
    full = [np.broadcast_to(a, shape) if isinstance(a, np.ndarray) and a.ndim and a.shape != shape else a
            for a in args]
    return _call_in_slices(uf, full, outs, kwargs, shape, nthreads)


def _call_in_slices(uf, args, outs: tuple, kwargs: dict, loop_shape: tuple, nthreads: int):
    """Call ``uf`` on slices of the longest loop axis, one slice per thread (this one included).

    Array ``args`` and ``outs`` start with the loop dimensions, broadcast already (a gufunc's core
    dimensions follow); scalars pass whole.  Shared by the ufunc and gufunc parallel targets.
    """
    axis = int(np.argmax(loop_shape))
    nchunks = min(nthreads, loop_shape[axis])
    bounds = np.linspace(0, loop_shape[axis], nchunks + 1).astype(int)

    def piece(a, lo, hi):
        if not isinstance(a, np.ndarray) or a.ndim == 0:
            return a
        idx = [slice(None)] * a.ndim
        idx[axis] = slice(lo, hi)
        return a[tuple(idx)]

    extra = {k: v for k, v in kwargs.items() if k != "out"}

    def run(k):
        lo, hi = bounds[k], bounds[k + 1]
        uf(*[piece(a, lo, hi) for a in args], out=tuple(piece(o, lo, hi) for o in outs), **extra)

    futures = [_executor().submit(run, k) for k in range(1, nchunks)]
    run(0)
    for f in futures:
        f.result()
    return outs[0] if len(outs) == 1 else outs
