"""CPU benchmark: ufuncgen against NumPy, numexpr, sympy.lambdify and hand-written Numba, in one process.

Run:  python benchmarks/cpu.py [--sizes 1e5,1e6,1e7] [--repeat 5] [--markdown]

Prints, per formula, dtype and size: the time per element of each tool, its speed relative to
NumPy (>1 is faster), and the fraction of the machine's copy bandwidth it reaches (bytes of the
array operands and the output, divided by time, over the measured copy bandwidth).  Then the
first-call latencies: ``import ufuncgen``, a cold compile, a second signature, one-element calls.
Needs the ``[bench]`` extra (numexpr).
"""
from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import time
import timeit
from concurrent.futures import ThreadPoolExecutor

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import numba  # noqa: E402
import numexpr as ne  # noqa: E402
import sympy as sp  # noqa: E402

import ufuncgen as ug  # noqa: E402
from ufuncgen.parallel import num_threads  # noqa: E402

# name -> (formula, array args, scalar args with values, numpy implementation, hand-written numba loop)
SCALARS = {"a": 2.5, "b": -0.5, "c": 1.25}


@numba.njit(cache=False)
def _nb_axpy(a, x, y, out):
    for i in range(x.size):
        out[i] = a * x[i] + y[i]


@numba.njit(cache=False)
def _nb_trans(x, y, out):
    for i in range(x.size):
        out[i] = np.sin(x[i]) ** 2 + np.cos(y[i]) * np.exp(-x[i] * y[i])


@numba.njit(cache=False)
def _nb_poly(x, out):
    for i in range(x.size):
        v = x[i]
        out[i] = 0.5 * v ** 4 - 1.5 * v ** 3 + 2.0 * v ** 2 - v + 3.0


@numba.njit(cache=False)
def _nb_where(x, out):
    for i in range(x.size):
        v = x[i]
        out[i] = np.sqrt(v) if v > 0 else -v ** 2


@numba.njit(cache=False)
def _nb_rational(a, b, c, x, y, z, out):
    for i in range(x.size):
        out[i] = (a * x[i] + b * y[i] + c * z[i]) / (1 + x[i] * x[i] + y[i] * y[i] + z[i] * z[i])


CASES = {
    "axpy": ("a*x + y", ["x", "y"], ["a"],
             lambda a, x, y: a * x + y, lambda a, x, y, out: _nb_axpy(a, x, y, out)),
    "transcendental": ("sin(x)**2 + cos(y)*exp(-x*y)", ["x", "y"], [],
                       lambda x, y: np.sin(x) ** 2 + np.cos(y) * np.exp(-x * y),
                       lambda x, y, out: _nb_trans(x, y, out)),
    "poly4": ("0.5*x**4 - 1.5*x**3 + 2*x**2 - x + 3", ["x"], [],
              lambda x: 0.5 * x ** 4 - 1.5 * x ** 3 + 2 * x ** 2 - x + 3, lambda x, out: _nb_poly(x, out)),
    "where": ("where(x > 0, sqrt(x), -x**2)", ["x"], [],
              lambda x: np.where(x > 0, np.sqrt(np.abs(x)), -x ** 2), lambda x, out: _nb_where(x, out)),
    "rational": ("(a*x + b*y + c*z)/(1 + x*x + y*y + z*z)", ["x", "y", "z"], ["a", "b", "c"],
                 lambda a, b, c, x, y, z: (a * x + b * y + c * z) / (1 + x * x + y * y + z * z),
                 lambda a, b, c, x, y, z, out: _nb_rational(a, b, c, x, y, z, out)),
}


def best(fn, budget=0.25, repeat=5) -> float:
    fn()
    t0 = time.perf_counter()
    fn()
    once = max(time.perf_counter() - t0, 1e-7)
    number = max(1, int(budget / once / repeat))
    return min(timeit.repeat(fn, number=number, repeat=repeat)) / number


def copy_bandwidth(n=20_000_000) -> tuple[float, float]:
    """Bytes/s of np.copyto (read + write) on one thread and on all threads."""
    src = np.random.default_rng(0).random(n)
    dst = np.empty_like(src)
    one = 2 * src.nbytes / best(lambda: np.copyto(dst, src), budget=1.0)
    k = num_threads()
    bounds = np.linspace(0, n, k + 1).astype(int)
    pool = ThreadPoolExecutor(k)

    def par():
        list(pool.map(lambda i: np.copyto(dst[bounds[i]:bounds[i + 1]], src[bounds[i]:bounds[i + 1]]), range(k)))

    allt = 2 * src.nbytes / best(par, budget=1.0)
    pool.shutdown()
    return one, allt


def run_case(name, dtype, n, bw1, bwall, rows):
    formula, arrays, scalars, np_impl, nb_impl = CASES[name]
    rng = np.random.default_rng(1)
    dt = np.dtype(dtype)
    data = {v: (rng.random(n) * 2 - 0.5).astype(dt) for v in arrays}
    consts = {s: dt.type(SCALARS[s]) for s in scalars}
    order = scalars + arrays
    call_args = [consts.get(v, data.get(v)) for v in order]
    out = np.empty(n, dt)
    f_cpu = ug.ufunc(formula, args=order, target="cpu")
    f_par = ug.ufunc(formula, args=order, target="parallel")
    syms = sp.symbols(order)
    lam = sp.lambdify(syms, f_cpu.expr, "numpy")
    ne_expr = formula
    ne_locals = {v: consts.get(v, data.get(v)) for v in order}
    nthreads = num_threads()
    with np.errstate(all="ignore"):
        ref = np_impl(*call_args)
        got = f_cpu(*call_args, out=out).copy()
        rtol = 1e-4 if dt == np.float32 else 1e-10
        assert np.allclose(got, ref, rtol=rtol, atol=rtol, equal_nan=True), name
        tools = {
            "numpy": lambda: np_impl(*call_args),
            "numexpr-1": lambda: (ne.set_num_threads(1), ne.evaluate(ne_expr, local_dict=ne_locals, out=out)),
            f"numexpr-{nthreads}": lambda: (ne.set_num_threads(nthreads),
                                            ne.evaluate(ne_expr, local_dict=ne_locals, out=out)),
            "lambdify": lambda: lam(*call_args),
            "numba-loop": lambda: nb_impl(*call_args, out),
            "ug-cpu": lambda: f_cpu(*call_args, out=out),
            "ug-parallel": lambda: f_par(*call_args, out=out),
        }
        times = {k: best(v) for k, v in tools.items()}
    moved = (len(arrays) + 1) * dt.itemsize * n
    for tool, t in times.items():
        bw = bwall if tool.endswith(f"-{nthreads}") or tool == "ug-parallel" else bw1
        rows.append((name, dtype, n, tool, t / n * 1e9, times["numpy"] / t, moved / t / bw))


def latency_rows():
    rows = []
    env = dict(os.environ, PYTHONPATH=os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
    code = "import time; t=time.perf_counter(); import ufuncgen; print(time.perf_counter()-t)"
    imp = min(float(subprocess.check_output([sys.executable, "-c", code], env=env)) for _ in range(3))
    rows.append(("import ufuncgen", imp * 1e3, "ms"))
    code = ("import time, numpy as np, numba; numba.njit(lambda v: v)(1.0); import ufuncgen as ug; "
            "f = ug.ufunc('sin(x)**2 + a*exp(-y) + 0.25'); x = np.ones(3); "
            "t = time.perf_counter(); f(1.0, x, x); t1 = time.perf_counter(); "
            "f(np.float32(1), x.astype('f4'), x.astype('f4')); t2 = time.perf_counter(); "
            "g = numba.vectorize(['float64(float64,float64,float64)'])(lambda a, x, y: np.sin(x)**2 + a*np.exp(-y) + 0.5); "
            "t3 = time.perf_counter(); print(t1 - t, t2 - t1, t3 - t2)")
    cold_env = dict(env, UFUNCGEN_DISABLE_CACHE="1")  # a cold compile: the disk cache would serve it
    vals = [list(map(float, subprocess.check_output([sys.executable, "-c", code], env=cold_env).split()))
            for _ in range(3)]
    cold, second, nb = (min(v[i] for v in vals) for i in range(3))
    rows.append(("cold compile, first signature", cold * 1e3, "ms"))
    rows.append(("compile of a second signature", second * 1e3, "ms"))
    rows.append(("numba.vectorize compile (same formula, for reference)", nb * 1e3, "ms"))
    import tempfile
    warm_env = dict(env, UFUNCGEN_CACHE_DIR=tempfile.mkdtemp(prefix="ufuncgen-bench-"))
    subprocess.check_output([sys.executable, "-c", code], env=warm_env)  # fills the disk cache
    warm = min(float(subprocess.check_output([sys.executable, "-c", code], env=warm_env).split()[0])
               for _ in range(3))
    rows.append(("first signature loaded from the disk cache (new process)", warm * 1e3, "ms"))
    a1 = np.ones(1)
    lazy = ug.ufunc("a*x + y")
    fixed = ug.ufunc("a*x + y", signatures="float64(float64, float64, float64)")
    dufunc = numba.vectorize(lambda a, x, y: a * x + y)
    lazy(a1, a1, a1)
    dufunc(a1, a1, a1)
    for label, fn in [("call on a 1-element array: ufuncgen lazy", lambda: lazy(a1, a1, a1)),
                      ("call on a 1-element array: ufuncgen with signatures", lambda: fixed(a1, a1, a1)),
                      ("call on a 1-element array: np.sin", lambda: np.sin(a1)),
                      ("call on a 1-element array: Numba DUFunc", lambda: dufunc(a1, a1, a1)),
                      ("call on a 1-element array: Numba DUFunc.ufunc", lambda: dufunc.ufunc(a1, a1, a1))]:
        rows.append((label, min(timeit.repeat(fn, number=20000, repeat=5)) / 20000 * 1e6, "us"))
    return rows


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", default="1e5,1e6,1e7")
    p.add_argument("--dtypes", default="float32,float64")
    p.add_argument("--cases", default=",".join(CASES))
    p.add_argument("--no-latency", action="store_true")
    args = p.parse_args(argv)
    sizes = [int(float(s)) for s in args.sizes.split(",")]
    print(f"# machine: {platform.processor() or platform.machine()}, {num_threads()} threads; python "
          f"{platform.python_version()}, numpy {np.__version__}, numba {numba.__version__}, numexpr {ne.__version__}, "
          f"sympy {sp.__version__}, ufuncgen {ug.__version__}")
    bw1, bwall = copy_bandwidth()
    print(f"# copy bandwidth: {bw1 / 1e9:.1f} GB/s on 1 thread, {bwall / 1e9:.1f} GB/s on {num_threads()} threads")
    rows = []
    for name in args.cases.split(","):
        for dtype in args.dtypes.split(","):
            for n in sizes:
                run_case(name, dtype, n, bw1, bwall, rows)
    print("| formula | dtype | n | tool | ns/elem | speed vs NumPy | fraction of copy bw |")
    print("|---|---|---|---|---|---|---|")
    for name, dtype, n, tool, ns, ratio, frac in rows:
        print(f"| {name} | {dtype} | {n:.0e} | {tool} | {ns:.3f} | {ratio:.2f}x | {frac:.2f} |")
    if not args.no_latency:
        print()
        print("| first-call latency | value | unit |")
        print("|---|---|---|")
        for label, v, unit in latency_rows():
            print(f"| {label} | {v:.2f} | {unit} |")


if __name__ == "__main__":
    main()
