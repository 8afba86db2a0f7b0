"""Cold compile against warm disk-cache load, in fresh processes.

For 1, 10 and 50 formulas, each with 2 signatures (float64 and float32), one process compiles into
an empty cache directory (cold) and further processes load from it (warm).  Each process imports
NumPy, SymPy and ufuncgen first and triggers SymPy's lazy imports on its first addition (not
timed: both sides pay it, and it belongs to the front end, not the cache) and then times ``ug.ufunc(...)`` for
every formula; Numba is imported by the first formula, so its one-time start-up is inside the
"first formula" column (warm processes time it on its own too).  Warm processes check that nothing was compiled
(``cache_info()["compiles"] == 0``).

A last row does the same for a few gufuncs (norm, dot, softmax, log-sum-exp, matrix-vector,
Horner), each with the same 2 signatures: gufunc loops are disk-cached the same way.

    PYTHONPATH=. python benchmarks/cache.py [--sizes 1 10 50] [--warm-runs 3] [--no-gufuncs]

Targets (issue 3): a warm load after the first <= 10 ms per signature; the first warm load in a
fresh process, Numba start-up included, <= 200 ms; 50 formulas warm >= 10x faster than cold.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SIGNATURES = ["float64(float64, float64, float64)", "float32(float32, float32, float32)"]

CHILD = r"""
import json, sys, time
import numpy as np, sympy
import ufuncgen as ug
ug.ufunc, ug.gufunc  # the front end is loaded; Numba is not
t0 = time.perf_counter()
sympy.Symbol("u") + sympy.Symbol("v")  # SymPy imports sympy.tensor & co. on its first Add (front end, not cache)
sympy_first_add = time.perf_counter() - t0
assert "numba" not in sys.modules
formulas, sigs, split = json.loads(sys.argv[1]), json.loads(sys.argv[2]), sys.argv[3] == "split"
startup = 0.0
if split:  # time Numba's one-time start-up on its own, in this same process
    t0 = time.perf_counter()
    import numba
    from numba.core.registry import cpu_target
    cpu_target.target_context.codegen()
    startup = time.perf_counter() - t0
times = []
if isinstance(formulas[0], str):
    for formula in formulas:
        t0 = time.perf_counter()
        f = ug.ufunc(formula, signatures=sigs)
        times.append(time.perf_counter() - t0)
    x = np.linspace(0.1, 1.0, 5)
    assert np.isfinite(f(x, x, x)).all()
else:  # gufuncs: (formula, layout, number of inputs); signatures given per dtype
    for formula, layout, nin in formulas:
        t0 = time.perf_counter()
        g = ug.gufunc(formula, layout, signatures=[f"{d}({', '.join([d] * nin)})" for d in sigs])
        times.append(time.perf_counter() - t0)
    assert np.isfinite(g(np.linspace(0.1, 1.0, 12).reshape(3, 4))).all()
print(json.dumps({"times": times, "startup": startup, "sympy": sympy_first_add,
                  "compiles": ug.cache_info()["compiles"]}))
"""

def formulas(n: int) -> list:
    """n distinct formulas over (a, x, y), of the size a config file holds."""
    return [f"sin(x)**{k % 4 + 1} + a*exp(-y*{k + 1}) + {k + 2}*x*y - sqrt(a*a + {k}*x*x)" for k in range(n)]


GUFUNCS = [  # (formula, layout, number of inputs); the last one is called once as a check
    ("sum(x[i]*y[i], i)", "(n),(n)->()", 2),
    ("exp(x[i] - max(x[j], j)) / sum(exp(x[k] - max(x[j], j)), k)", "(n)->(n)", 1),
    ("max(x[j], j) + log(sum(exp(x[i] - max(x[j], j)), i))", "(n)->()", 1),
    ("sum(A[i,j]*x[j], j)", "(m,n),(n)->(m)", 2),
    ("sum(c[k]*x**k, k)", "(n),()->()", 2),
    ("sqrt(sum(x[i]**2, i))", "(n)->()", 1),
]
GU_DTYPES = ["float64", "float32"]


# ufuncgen's bytecode goes to a private folder, as an installed package has its .pyc files
# (with PYTHONDONTWRITEBYTECODE set, every process would compile ufuncgen's modules from source)
PYCACHE = tempfile.mkdtemp(prefix="ufuncgen-bench-pycache-")


def child(code: str, args: list, cache_dir: str) -> dict:
    env = dict(os.environ, UFUNCGEN_CACHE_DIR=cache_dir, PYTHONPYCACHEPREFIX=PYCACHE,
               PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    env.pop("UFUNCGEN_DISABLE_CACHE", None)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    proc = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, env=env, check=False)
    if proc.returncode:
        sys.exit(f"benchmark child failed:\n{proc.stderr}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def measure(n: int, warm_runs: int, gufuncs: bool = False) -> dict:
    """n formulas (or the first n gufuncs), cold once and warm ``warm_runs`` times, 2 signatures each."""
    args = ([json.dumps(GUFUNCS[:n]), json.dumps(GU_DTYPES)] if gufuncs
            else [json.dumps(formulas(n)), json.dumps(SIGNATURES)])
    with tempfile.TemporaryDirectory(prefix="ufuncgen-bench-") as cache_dir:
        cold = child(CHILD, args + ["whole"], cache_dir)
        assert cold["compiles"] == 2 * n, cold
        warm = [child(CHILD, args + ["split"], cache_dir) for _ in range(warm_runs)]
    for w in warm:
        assert w["compiles"] == 0, w
    med = statistics.median
    return {"n": n, "cold": sum(cold["times"]), "warm": med(w["startup"] + sum(w["times"]) for w in warm),
            "startup": med(w["startup"] for w in warm), "sympy": med(w["sympy"] for w in warm),
            "first_load": med(w["times"][0] for w in warm),
            "warm_per_sig": med(med(w["times"][1:]) / 2 for w in warm) if n > 1 else None,
            "cold_per_sig": med(cold["times"][1:]) / 2 if n > 1 else None}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1, 10, 50])
    parser.add_argument("--warm-runs", type=int, default=3, help="warm processes per size (median reported)")
    parser.add_argument("--no-gufuncs", dest="gufuncs", action="store_false", help="skip the gufunc row")
    opts = parser.parse_args()

    import llvmlite
    import numba
    import numpy
    print(f"# {platform.machine()}, {os.cpu_count()} cores; Python {platform.python_version()}, "
          f"Numba {numba.__version__}, llvmlite {llvmlite.__version__}, NumPy {numpy.__version__}")
    print(f"# each formula has {len(SIGNATURES)} signatures; warm = median of {opts.warm_runs} fresh processes")
    head = ("formulas", "cold", "warm", "speed-up", "warm 1st formula*", "of which Numba start-up",
            "warm per sig**", "cold per sig**")
    print("| " + " | ".join(head) + " |")
    print("|" + "---:|" * len(head))
    sympy_ms = 0.0
    measure(1, 1)  # untimed: writes ufuncgen's bytecode
    rows = [(str(n), n, False) for n in opts.sizes]
    if opts.gufuncs:
        rows.append((f"{len(GUFUNCS)} gufuncs", len(GUFUNCS), True))
    for label, n, gufuncs in rows:
        r = measure(n, opts.warm_runs, gufuncs)
        sympy_ms = r["sympy"] * 1e3
        per = "-" if r["warm_per_sig"] is None else f"{r['warm_per_sig'] * 1e3:.1f} ms"
        cper = "-" if r["cold_per_sig"] is None else f"{r['cold_per_sig'] * 1e3:.0f} ms"
        print(f"| {label} | {r['cold']:.2f} s | {r['warm']:.3f} s | {r['cold'] / r['warm']:.1f}x | "
              f"{(r['startup'] + r['first_load']) * 1e3:.0f} ms | {r['startup'] * 1e3:.0f} ms | {per} | {cper} |",
              flush=True)
    print("\n\\* first formula (2 signatures) in a fresh process, Numba's import and CPU-target start-up included."
          "\n\\** median over the formulas after the first, per signature; includes parsing the formula."
          "\nNot timed on either side: starting Python, importing NumPy, SymPy and ufuncgen (from .pyc), and SymPy's"
          f" lazy imports on its first addition ({sympy_ms:.0f} ms, median of the warm processes).")


if __name__ == "__main__":
    try:
        main()
    finally:
        shutil.rmtree(PYCACHE, ignore_errors=True)
