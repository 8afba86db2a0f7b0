"""Speed of the cpu loop with vector math (libmvec) on and off, against NumPy, in one process.

    PYTHONPATH=. python benchmarks/vecmath.py [--all] [--sizes 1e6,1e7] [--repeat 7]

Best of ``--repeat`` runs per case; ``on``/``off``: ufuncgen with ``backends/vecmath`` in use or
not (the off loops are the scalar-libm ones ufuncgen built before).  ``--all``: one line per
function ufuncgen maps to libmvec, at the first size, with the variant the loop calls.
"""
from __future__ import annotations

import argparse
import re
import time

import numpy as np

import ufuncgen as ug
from ufuncgen.backends import vecmath
from ufuncgen.memcache import LOOPS

FORMULAS = {
    "exp(x)": lambda x, y: np.exp(x),
    "sin(x)": lambda x, y: np.sin(x),
    "log(x)": lambda x, y: np.log(x),
    "sin(x)**2 + cos(y)*exp(-x*y)": lambda x, y: np.sin(x) ** 2 + np.cos(y) * np.exp(-x * y),
}
ALL = ["exp(x)", "log(x)", "sin(x)", "cos(x)", "tan(x)", "asin(x/20)", "acos(x/20)", "atan(x)", "sinh(x)", "cosh(x)",
       "tanh(x)", "asinh(x)", "acosh(x + 1)", "atanh(x/20)", "exp2(x)", "expm1(x)", "log2(x)", "log10(x)",
       "log1p(x)", "cbrt(x)", "erf(x)", "erfc(x)", "atan2(x, y)", "hypot(x, y)", "x**y"]


def best(fn, *args, repeat=7):
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn(*args)
        times.append(time.perf_counter() - t0)
    return min(times)


def build(formula, dt, on: bool):
    sig = f"{dt}({dt}, {dt})"
    saved = vecmath.state
    if not on:
        vecmath.state = lambda: "off"
    try:
        LOOPS.clear()
        return ug.ufunc(formula, args=("x", "y"), signatures=sig, cache=False)
    finally:
        vecmath.state = saved
        LOOPS.clear()


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--all", action="store_true")
    p.add_argument("--sizes", default="1e6,1e7")
    p.add_argument("--repeat", type=int, default=7)
    a = p.parse_args()
    sizes = [int(float(s)) for s in a.sizes.split(",")]
    rng = np.random.default_rng(0)
    print(f"vector math: {vecmath.state()}")
    formulas = ALL if a.all else list(FORMULAS)
    for dt in ("float32", "float64"):
        for n in sizes[:1] if a.all else sizes:
            x = rng.uniform(0.1, 10.0, n).astype(dt)
            y = rng.uniform(0.1, 10.0, n).astype(dt)
            for formula in formulas:
                on, off = build(formula, dt, True), build(formula, dt, False)
                t_on, t_off = best(on, x, y, repeat=a.repeat), best(off, x, y, repeat=a.repeat)
                line = f"{dt:8s} n={n:<9d} {formula:30s} on {t_on * 1e3:8.3f} ms  off {t_off * 1e3:8.3f} ms  " \
                       f"on/off x{t_off / t_on:5.2f}"
                npf = FORMULAS.get(formula)
                if npf is not None:
                    t_np = best(npf, x, y, repeat=a.repeat)
                    line += f"  numpy {t_np * 1e3:8.3f} ms  on vs numpy x{t_np / t_on:5.2f}"
                if a.all:
                    ir = on.inspect_llvm()
                    ir = ir if isinstance(ir, str) else "\n".join(map(str, ir.values()))
                    calls = sorted(set(re.findall(r"call [^@\n]*@(_ZGV\w+)\(", ir)))
                    line += f"  {','.join(calls) or '-'}"
                print(line, flush=True)


if __name__ == "__main__":
    main()
