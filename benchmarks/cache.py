"""Cold compile against warm disk-cache load, in fresh processes.

For 1, 10 and 50 formulas, each with 2 signatures (float64 and float32), one process compiles into
an empty cache directory (cold) and further processes load from it (warm).  Each process imports
NumPy, SymPy and ufuncgen first (not timed: both sides pay it) and then times ``ug.ufunc(...)`` for
every formula; Numba is imported by the first formula, so its one-time start-up is inside the
"first formula" column.  Warm processes check that nothing was compiled
(``cache_info()["compiles"] == 0``).

    PYTHONPATH=. python benchmarks/cache.py [--sizes 1 10 50] [--warm-runs 3]

Targets (issue 3): a warm load after the first <= 10 ms per signature; the first warm load in a
fresh process, Numba start-up included, <= 200 ms; 50 formulas warm >= 10x faster than cold.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
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
ug.ufunc  # the front end is loaded; Numba is not
assert "numba" not in sys.modules
formulas, sigs = json.loads(sys.argv[1]), json.loads(sys.argv[2])
times = []
for formula in formulas:
    t0 = time.perf_counter()
    f = ug.ufunc(formula, signatures=sigs)
    times.append(time.perf_counter() - t0)
x = np.linspace(0.1, 1.0, 5)
assert np.isfinite(f(x, x, x)).all()
print(json.dumps({"times": times, "compiles": ug.cache_info()["compiles"]}))
"""

NUMBA_STARTUP = r"""
import time, json
t0 = time.perf_counter()
import numba
from numba.core.registry import cpu_target
cpu_target.target_context.codegen()
print(json.dumps({"startup": time.perf_counter() - t0}))
"""


def formulas(n: int) -> list:
    """n distinct formulas over (a, x, y), of the size a config file holds."""
    return [f"sin(x)**{k % 4 + 1} + a*exp(-y*{k + 1}) + {k + 2}*x*y - sqrt(a*a + {k}*x*x)" for k in range(n)]


def child(code: str, args: list, cache_dir: str) -> dict:
    env = dict(os.environ, UFUNCGEN_CACHE_DIR=cache_dir,
               PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    env.pop("UFUNCGEN_DISABLE_CACHE", None)
    proc = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, env=env, check=False)
    if proc.returncode:
        sys.exit(f"benchmark child failed:\n{proc.stderr}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def measure(n: int, warm_runs: int) -> dict:
    args = [json.dumps(formulas(n)), json.dumps(SIGNATURES)]
    with tempfile.TemporaryDirectory(prefix="ufuncgen-bench-") as cache_dir:
        cold = child(CHILD, args, cache_dir)
        assert cold["compiles"] == 2 * n, cold
        warm = [child(CHILD, args, cache_dir) for _ in range(warm_runs)]
    for w in warm:
        assert w["compiles"] == 0, w
    warm_total = statistics.median(sum(w["times"]) for w in warm)
    warm_first = statistics.median(w["times"][0] for w in warm)
    rest = [statistics.median(w["times"][1:]) / 2 for w in warm if n > 1]
    return {"n": n, "cold": sum(cold["times"]), "warm": warm_total, "speedup": sum(cold["times"]) / warm_total,
            "warm_first": warm_first, "warm_per_sig": statistics.median(rest) if rest else None,
            "cold_per_sig": statistics.median(cold["times"][1:]) / 2 if n > 1 else None}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1, 10, 50])
    parser.add_argument("--warm-runs", type=int, default=3, help="warm processes per size (median reported)")
    opts = parser.parse_args()

    import llvmlite
    import numba
    import numpy
    startup = statistics.median(child(NUMBA_STARTUP, [], tempfile.gettempdir())["startup"] for _ in range(3))
    print(f"# {platform.processor() or platform.machine()}, {os.cpu_count()} cores; Python {platform.python_version()}, "
          f"Numba {numba.__version__}, llvmlite {llvmlite.__version__}, NumPy {numpy.__version__}")
    print(f"# Numba start-up alone (import + CPU target), median of 3 fresh processes: {startup * 1e3:.0f} ms")
    print(f"# each formula has {len(SIGNATURES)} signatures; warm = median of {opts.warm_runs} fresh processes")
    head = ("formulas", "cold total", "warm total", "speed-up", "warm 1st formula*", "warm per sig**", "cold per sig**")
    print("| " + " | ".join(head) + " |")
    print("|" + "---:|" * len(head))
    for n in opts.sizes:
        r = measure(n, opts.warm_runs)
        per = "-" if r["warm_per_sig"] is None else f"{r['warm_per_sig'] * 1e3:.1f} ms"
        cper = "-" if r["cold_per_sig"] is None else f"{r['cold_per_sig'] * 1e3:.0f} ms"
        print(f"| {n} | {r['cold']:.2f} s | {r['warm']:.3f} s | {r['speedup']:.1f}x | "
              f"{r['warm_first'] * 1e3:.0f} ms | {per} | {cper} |", flush=True)
    print("\n\\* first formula (2 signatures) in a fresh process, Numba start-up included."
          "\n\\** median over the formulas after the first, divided by 2 signatures; includes parsing the formula.")


if __name__ == "__main__":
    main()
