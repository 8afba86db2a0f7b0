"""Benchmark: ufuncgen gufuncs against NumPy and hand-written Numba guvectorize, cpu and parallel.

    PYTHONPATH=. python benchmarks/gufunc.py [--scale 1.0] [--repeat 7] [--dtype float64]

Prints one row per case: best-of-``repeat`` times in milliseconds (compile excluded) and speedups
(reference time / ufuncgen time; above 1 means ufuncgen is faster).  Every result is checked
against NumPy before it is timed.
"""
from __future__ import annotations

import argparse
import os
import platform
import time

import numba
import numpy as np
from numba import guvectorize

import ufuncgen as ug

# ---- hand-written Numba kernels (what a user would write) -------------------------------------------


def _nb_norm(x, out):
    s = 0.0
    for i in range(x.shape[0]):
        s += x[i] * x[i]
    out[0] = np.sqrt(s)


def _nb_dot(x, y, out):
    s = 0.0
    for i in range(x.shape[0]):
        s += x[i] * y[i]
    out[0] = s


def _nb_softmax(x, out):
    m = -np.inf
    for i in range(x.shape[0]):
        m = max(m, x[i])
    s = 0.0
    for i in range(x.shape[0]):
        out[i] = np.exp(x[i] - m)
        s += out[i]
    for i in range(x.shape[0]):
        out[i] /= s


def _nb_logsumexp(x, out):
    m = -np.inf
    for i in range(x.shape[0]):
        m = max(m, x[i])
    s = 0.0
    for i in range(x.shape[0]):
        s += np.exp(x[i] - m)
    out[0] = m + np.log(s)


def _nb_horner(c, x, out):
    acc = 0.0
    for k in range(c.shape[0] - 1, -1, -1):
        acc = acc * x + c[k]
    out[0] = acc


def _nb_matvec(A, x, out):
    for i in range(A.shape[0]):
        s = 0.0
        for j in range(A.shape[1]):
            s += A[i, j] * x[j]
        out[i] = s


def _nb_cross(a, b, out):
    out[0] = a[1] * b[2] - a[2] * b[1]
    out[1] = a[2] * b[0] - a[0] * b[2]
    out[2] = a[0] * b[1] - a[1] * b[0]


def _np_softmax(x):
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def _np_logsumexp(x):
    m = x.max(axis=-1, keepdims=True)
    return m[..., 0] + np.log(np.exp(x - m).sum(axis=-1))


# name: (ufuncgen formula, layout, numba kernel, numba types (per dtype letter), NumPy reference, inputs(n, rng, dt))
CASES = {
    "norm": ("sqrt(sum(x[i]**2, i))", "(n)->()", _nb_norm, "void({0}[:], {0}[:])",
             lambda x: np.linalg.norm(x, axis=-1),
             lambda n, r, dt: (r.normal(size=(n, 64)).astype(dt),)),
    "dot": ("sum(x[i]*y[i], i)", "(n),(n)->()", _nb_dot, "void({0}[:], {0}[:], {0}[:])",
            lambda x, y: np.einsum("ij,ij->i", x, y),
            lambda n, r, dt: (r.normal(size=(n, 64)).astype(dt), r.normal(size=(n, 64)).astype(dt))),
    "softmax": ("exp(x[i] - max(x[j], j)) / sum(exp(x[k] - max(x[j], j)), k)", "(n)->(n)", _nb_softmax,
                "void({0}[:], {0}[:])", _np_softmax, lambda n, r, dt: (r.normal(size=(n, 64)).astype(dt),)),
    "logsumexp": ("max(x[j], j) + log(sum(exp(x[i] - max(x[j], j)), i))", "(n)->()", _nb_logsumexp,
                  "void({0}[:], {0}[:])", _np_logsumexp, lambda n, r, dt: (r.normal(size=(n, 64)).astype(dt),)),
    "horner": ("sum(c[k]*x**k, k)", "(n),()->()", _nb_horner, "void({0}[:], {0}, {0}[:])",
               lambda c, x: np.polynomial.polynomial.polyval(x, c.T, tensor=False),
               lambda n, r, dt: (r.normal(size=(n, 8)).astype(dt), r.uniform(-1, 1, n).astype(dt))),
    "matvec": ("sum(A[i,j]*x[j], j)", "(m,n),(n)->(m)", _nb_matvec, "void({0}[:,:], {0}[:], {0}[:])",
               lambda A, x: np.einsum("bij,bj->bi", A, x),
               lambda n, r, dt: (r.normal(size=(n // 16, 16, 16)).astype(dt), r.normal(size=(n // 16, 16)).astype(dt))),
    "cross": ("a[i+1]*b[i+2] - a[i+2]*b[i+1]", "(3),(3)->(3)", _nb_cross, "void({0}[:], {0}[:], {0}[:])",
              lambda a, b: np.cross(a, b),
              lambda n, r, dt: (r.normal(size=(4 * n, 3)).astype(dt), r.normal(size=(4 * n, 3)).astype(dt))),
}


def best_time(fn, args, repeat: int) -> float:
    fn(*args)
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn(*args)
        times.append(time.perf_counter() - t0)
    return min(times) * 1e3


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--scale", type=float, default=1.0, help="multiplies the batch sizes (default 1: 2**15 rows)")
    p.add_argument("--repeat", type=int, default=7)
    p.add_argument("--dtype", default="float64", choices=["float32", "float64"])
    p.add_argument("--cases", default=",".join(CASES))
    args = p.parse_args()
    dt = np.dtype(args.dtype)
    n = int(2 ** 15 * args.scale)
    rng = np.random.default_rng(0)
    tol = 1e-4 if dt == np.float32 else 1e-10
    rows = []
    for name in args.cases.split(","):
        formula, layout, nb_kernel, nb_sig, reference, make = CASES[name]
        inputs = make(n, rng, dt)
        want = reference(*[a.astype(np.float64) for a in inputs])
        fns = {"numpy": reference}
        for target in ("cpu", "parallel"):
            g = ug.gufunc(formula, layout=layout, target=target)
            t0 = time.perf_counter()
            got = g(*inputs)
            compile_ms = (time.perf_counter() - t0) * 1e3
            np.testing.assert_allclose(got, want, rtol=tol, atol=tol)
            fns[f"ug_{target}"] = g
            nb = guvectorize([nb_sig.format(dt.name)], layout.replace("3", "k"), target=target)(nb_kernel)
            np.testing.assert_allclose(nb(*inputs), want, rtol=tol, atol=tol)
            fns[f"nb_{target}"] = nb
        t = {k: best_time(f, inputs, args.repeat) for k, f in fns.items()}
        shape = " ".join("x".join(map(str, a.shape)) for a in inputs)
        rows.append((name, shape, t, compile_ms))

    print(f"# ufuncgen {ug.__version__}, numba {numba.__version__} (threading layer {numba.threading_layer()}), "
          f"numpy {np.__version__}, python {platform.python_version()}, {os.cpu_count()} cpus, {platform.machine()}")
    print(f"# dtype {dt.name}; best of {args.repeat}; times in ms; speedup = reference time / ufuncgen time")
    head = ["case", "inputs", "numpy", "numba cpu", "numba par", "ug cpu", "ug par",
            "ug cpu vs numpy", "ug cpu vs numba cpu", "ug par vs numba par", "ug par vs numpy"]
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for name, shape, t, _ in rows:
        cells = [name, shape] + [f"{t[k]:.2f}" for k in ("numpy", "nb_cpu", "nb_parallel", "ug_cpu", "ug_parallel")]
        cells += [f"{t['numpy'] / t['ug_cpu']:.2f}x", f"{t['nb_cpu'] / t['ug_cpu']:.2f}x",
                  f"{t['nb_parallel'] / t['ug_parallel']:.2f}x", f"{t['numpy'] / t['ug_parallel']:.2f}x"]
        print("| " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
