# ruff: noqa: B023 - the timed lambdas run inside the loop iteration that made them
"""GPU benchmark of the cuda target against Numba's CUDA vectorize and CuPy, in one process.

Measures: device copy bandwidth; axpy (a*x + y) and sin(x)**2 + cos(y)*exp(-x*y) in float32 and
float64 at 1e8 elements; the time of one call on 1000 device elements; the host-array round trip
at 1e7 elements.  Kernel times are CUDA-event medians over rotating input sets (the arrays are
far larger than L2); call times are wall-clock over thousands of back-to-back calls.  Gufuncs:
norm and softmax over the rows of a (1e6, 64) array (one CUDA thread per row) against CuPy
expressions and Numba's CUDA guvectorize.

    python benchmarks/gpu.py [--n 100000000] [--sweep] [--json out.json]

Needs a CUDA GPU, numba-cuda and CuPy.  ``--sweep`` also times launch configurations
(``ufuncgen.backends.cuda.TUNING``: unroll, block, blocks per SM) for the two formulas;
``--gu-sweep`` the gufunc launch configurations for norm and softmax: rows read in place (block
size, blocks per SM) and rows staged in shared memory (block size, blocks per SM).
"""
from __future__ import annotations

import argparse
import json
import math
import platform
import statistics
import sys
import time

import numpy as np

AXPY = "a*x + y"
TRANS = "sin(x)**2 + cos(y)*exp(-x*y)"


def parse():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=float, default=1e8)
    p.add_argument("--n-host", type=float, default=1e7)
    p.add_argument("--reps", type=int, default=20)
    p.add_argument("--calls", type=int, default=20000)
    p.add_argument("--gu-rows", type=float, default=1e6)
    p.add_argument("--gu-n", type=int, default=64)
    p.add_argument("--sweep", action="store_true")
    p.add_argument("--gu-sweep", action="store_true", help="time gufunc launch configurations (rows in place "
                   "and staged in shared memory) for norm and softmax")
    p.add_argument("--profile", default=None, help="write a cProfile of the 1000-element calls to this file")
    p.add_argument("--json", default=None)
    return p.parse_args()


class Timer:
    """Median CUDA-event time (ms) of fn(i) over reps, i rotating over input sets."""

    def __init__(self, cupy):
        self.cp = cupy

    def __call__(self, fn, reps, sets=1, warmup=3):
        cp = self.cp
        for i in range(warmup):
            fn(i % sets)
        cp.cuda.runtime.deviceSynchronize()
        start, end = cp.cuda.Event(), cp.cuda.Event()
        times = []
        for r in range(reps):
            start.record()
            fn(r % sets)
            end.record()
            end.synchronize()
            times.append(cp.cuda.get_elapsed_time(start, end))
        return statistics.median(times)


def wall_per_call(fn, calls, cp, rounds=5):
    """Median over rounds of (wall time of `calls` back-to-back calls, then one sync) / calls, in us."""
    fn()
    cp.cuda.runtime.deviceSynchronize()
    out = []
    for _ in range(rounds):
        t = time.perf_counter()
        for _ in range(calls):
            fn()
        cp.cuda.runtime.deviceSynchronize()
        out.append((time.perf_counter() - t) / calls * 1e6)
    return statistics.median(out)


def main():
    args = parse()
    import cupy as cp
    import numba
    from numba import cuda, vectorize

    import ufuncgen as ug
    from ufuncgen.backends import cuda as ugcuda

    timer = Timer(cp)
    dev = cp.cuda.Device()
    props = cp.cuda.runtime.getDeviceProperties(dev.id)
    info = {"device": props["name"].decode(), "cc": f"{props['major']}.{props['minor']}",
            "sms": props["multiProcessorCount"], "python": platform.python_version(),
            "numpy": np.__version__, "numba": numba.__version__, "cupy": cp.__version__,
            "numba_cuda": __import__("numba_cuda").__version__, "tuning": dict(ugcuda.TUNING)}
    print("# " + ", ".join(f"{k}={v}" for k, v in info.items()), flush=True)
    results = {"info": info, "rows": []}

    def row(what, impl, ms=None, gbs=None, frac=None, us=None, note=""):
        r = {"what": what, "impl": impl, "ms": ms, "GB/s": gbs, "frac_copy": frac, "us": us, "note": note}
        results["rows"].append(r)
        cells = [f"{what:<24}", f"{impl:<26}"]
        cells.append(f"{ms:9.4f} ms" if ms is not None else " " * 12)
        cells.append(f"{gbs:8.1f} GB/s" if gbs is not None else " " * 13)
        cells.append(f"{frac:6.3f} of copy" if frac is not None else " " * 14)
        cells.append(f"{us:8.2f} us/call" if us is not None else "")
        print(" | ".join(cells) + (f"  {note}" if note else ""), flush=True)

    n = int(args.n)
    sets = 2

    # ---- copy bandwidth ------------------------------------------------------------------
    src = [cp.random.random(n, dtype=cp.float32) for _ in range(sets)]
    dst = [cp.empty_like(s) for s in src]
    nbytes = src[0].nbytes
    t_memcpy = timer(lambda i: dst[i].data.copy_from_device(src[i].data, nbytes), args.reps, sets)
    t_kernel = timer(lambda i: cp.copyto(dst[i], src[i]), args.reps, sets)
    copy_bw = 2 * nbytes / t_memcpy / 1e6
    row("copy 4e8 B", "cudaMemcpy D2D", t_memcpy, copy_bw, 1.0)
    row("copy 4e8 B", "cupy.copyto kernel", t_kernel, 2 * nbytes / t_kernel / 1e6, 2 * nbytes / t_kernel / 1e6 / copy_bw)
    results["copy_bw_GBs"] = copy_bw
    src = dst = None  # free the memory

    # ---- the formulas at n -----------------------------------------------------------------
    ek_axpy = cp.ElementwiseKernel("T a, T x, T y", "T z", "z = a * x + y", "ek_axpy")
    ek_trans = cp.ElementwiseKernel("T x, T y", "T z", "T s = sin(x); z = s * s + cos(y) * exp(-x * y)", "ek_trans")

    @vectorize(["float32(float32, float32, float32)", "float64(float64, float64, float64)"], target="cuda")
    def nv_axpy(a, x, y):
        return a * x + y

    @vectorize(["float32(float32, float32)", "float64(float64, float64)"], target="cuda")
    def nv_trans(x, y):
        return math.sin(x) ** 2 + math.cos(y) * math.exp(-x * y)

    ug_axpy = ug.ufunc(AXPY, args=("a", "x", "y"), target="cuda")
    ug_trans = ug.ufunc(TRANS, target="cuda")

    for dtype in ("float32", "float64"):
        dt = np.dtype(dtype)
        a = dt.type(2.5)
        xs = [cp.random.uniform(-3, 3, n).astype(dt) for _ in range(sets)]
        ys = [cp.random.uniform(-3, 3, n).astype(dt) for _ in range(sets)]
        os_ = [cp.empty(n, dt) for _ in range(sets)]
        nxs = [cuda.as_cuda_array(x) for x in xs]
        nys = [cuda.as_cuda_array(y) for y in ys]
        nos = [cuda.as_cuda_array(o) for o in os_]
        for name, ugf, ekf, nvf, expr, nin in (
                ("axpy", ug_axpy, ek_axpy, nv_axpy, lambda i: a * xs[i] + ys[i], 3),
                ("sin2+cos*exp", ug_trans, ek_trans, nv_trans,
                 lambda i: cp.sin(xs[i]) ** 2 + cp.cos(ys[i]) * cp.exp(-xs[i] * ys[i]), 2)):
            moved = 3 * n * dt.itemsize
            what = f"{name} {dtype} n={n:.0e}"
            pre = (a,) if nin == 3 else ()
            # correctness once, on poisoned outputs
            os_[0].fill(np.nan)
            ugf(*pre, xs[0], ys[0], out=os_[0])
            ref = expr(0)
            err = float(cp.max(cp.abs(os_[0] - ref)) / cp.max(cp.abs(ref)))
            variants = {
                "ufuncgen cuda (out=)": lambda i: ugf(*pre, xs[i], ys[i], out=os_[i]),
                "ufuncgen cuda": lambda i: ugf(*pre, xs[i], ys[i]),
                "numba vectorize (out=)": lambda i: nvf(*pre, nxs[i], nys[i], out=nos[i]),
                "cupy ElementwiseKernel": lambda i: ekf(*pre, xs[i], ys[i], os_[i]),
                "cupy expression": expr,
            }
            for impl, fn in variants.items():
                try:
                    t = timer(fn, args.reps, sets)
                except Exception as e:  # noqa: BLE001 - report and go on
                    row(what, impl, note=f"FAILED: {type(e).__name__}: {str(e)[:120]}")
                    continue
                bw = moved / t / 1e6
                row(what, impl, t, bw, bw / copy_bw, note=f"max rel err {err:.1e}" if impl.startswith("ufuncgen cuda (") else "")
        xs = ys = os_ = nxs = nys = nos = None  # free the memory
        cp.get_default_memory_pool().free_all_blocks()

    # ---- gufuncs: norm and softmax over rows ---------------------------------------------------
    try:
        gufuncs(args, cp, ug, cuda, timer, row, copy_bw)
        if args.gu_sweep:
            gu_sweep(args, cp, ug, ugcuda, timer, row, copy_bw)
    except Exception:  # noqa: BLE001 - the other sections still run
        import traceback
        traceback.print_exc()

    # ---- launch configuration sweep ------------------------------------------------------------
    if args.sweep:
        sweep(args, cp, ug, ugcuda, timer, row, copy_bw, n)

    # ---- one call on 1000 elements ----------------------------------------------------------------
    small = 1000
    for dtype in ("float32",):
        dt = np.dtype(dtype)
        a = dt.type(2.5)
        x = cp.random.random(small).astype(dt)
        y = cp.random.random(small).astype(dt)
        o = cp.empty(small, dt)
        nx, ny, no = cuda.as_cuda_array(x), cuda.as_cuda_array(y), cuda.as_cuda_array(o)
        nx2, ny2 = cuda.to_device(x.get()), cuda.to_device(y.get())
        calls = {
            "ufuncgen cuda, cupy in/out": lambda: ug_axpy(a, x, y),
            "ufuncgen cuda, cupy out=": lambda: ug_axpy(a, x, y, out=o),
            "ufuncgen cuda, numba in/out": lambda: ug_axpy(a, nx2, ny2),
            "ufuncgen cuda, numba out=": lambda: ug_axpy(a, nx, ny, out=no),
            "numba vectorize": lambda: nv_axpy(a, nx2, ny2),
            "numba vectorize out=": lambda: nv_axpy(a, nx, ny, out=no),
            "cupy ElementwiseKernel": lambda: ek_axpy(a, x, y),
            "cupy expression": lambda: a * x + y,
        }
        for impl, fn in calls.items():
            k = args.calls if not impl.startswith("numba vectorize") else max(200, args.calls // 50)
            us = wall_per_call(fn, k, cp)
            row(f"axpy {dtype} n=1000", impl, us=us)
        # where the time goes: allocation, launch alone, the Python path alone
        disp = ug_axpy._device_impl
        plan = disp._plans[disp._key((a, x, y), (o,))]
        row("axpy n=1000 parts", "cupy.empty(1000)", us=wall_per_call(lambda: cp.empty(small, dt), args.calls, cp))
        launcher = plan.launcher
        row("axpy n=1000 parts", "bare cuLaunchKernel", us=wall_per_call(
            lambda: launcher.launch(plan.grid, plan.block, 0), args.calls, cp))
        saved = launcher.launch
        launcher.launch = lambda grid, block, stream: None
        row("axpy n=1000 parts", "python path, out= (no launch)", us=wall_per_call(
            lambda: ug_axpy(a, x, y, out=o), args.calls, cp))
        launcher.launch = saved
        # CPU time of launches alone: 500 back-to-back launches (fewer than the queue holds), no sync
        cp.cuda.runtime.deviceSynchronize()
        t0 = time.perf_counter()
        for _ in range(500):
            launcher.launch(plan.grid, plan.block, 0)
        row("axpy n=1000 parts", "cuLaunchKernel CPU time", us=(time.perf_counter() - t0) / 500 * 1e6)
        cp.cuda.runtime.deviceSynchronize()
        if args.profile:
            import cProfile
            import io
            import pstats
            with open(args.profile, "w") as fh:
                for impl in ("ufuncgen cuda, cupy in/out", "ufuncgen cuda, cupy out=", "ufuncgen cuda, numba out=",
                             "ufuncgen cuda, numba in/out"):
                    fn = calls[impl]
                    prof = cProfile.Profile()
                    prof.enable()
                    for _ in range(3000):
                        fn()
                    prof.disable()
                    cp.cuda.runtime.deviceSynchronize()
                    buf = io.StringIO()
                    pstats.Stats(prof, stream=buf).sort_stats("tottime").print_stats(14)
                    fh.write(f"==== {impl}\n{buf.getvalue()}\n")

    # ---- host round trip -----------------------------------------------------------------------
    nh = int(args.n_host)
    xh = np.random.default_rng(1).uniform(-3, 3, nh)
    yh = np.random.default_rng(2).uniform(-3, 3, nh)
    ug_cpu = ug.ufunc(AXPY, args=("a", "x", "y"), target="cpu")
    trips = {
        "ufuncgen cuda": lambda: ug_axpy(2.5, xh, yh),
        "numba vectorize": lambda: nv_axpy(2.5, xh, yh),
        "cupy ElementwiseKernel": lambda: cp.asnumpy(ek_axpy(2.5, cp.asarray(xh), cp.asarray(yh))),
        "cupy expression": lambda: cp.asnumpy(2.5 * cp.asarray(xh) + cp.asarray(yh)),
        "ufuncgen cpu (1 thread)": lambda: ug_cpu(2.5, xh, yh),
    }
    want = 2.5 * xh + yh
    for impl, fn in trips.items():
        try:
            got = fn()
            ok = np.allclose(got, want, rtol=1e-12)
            times = []
            for _ in range(5):
                t = time.perf_counter()
                fn()
                times.append((time.perf_counter() - t) * 1e3)
            row(f"axpy float64 host n={nh:.0e}", impl, statistics.median(times), 3 * nh * 8 / statistics.median(times) / 1e6,
                note="" if ok else "WRONG RESULT")
        except Exception as e:  # noqa: BLE001
            row(f"axpy float64 host n={nh:.0e}", impl, note=f"FAILED: {type(e).__name__}: {str(e)[:120]}")

    if args.json:
        with open(args.json, "w") as fh:
            json.dump(results, fh, indent=1)
    summary(results, copy_bw)


def gufuncs(args, cp, ug, cuda, timer, row, copy_bw):
    """norm (n)->() and softmax (n)->(n) per row, against CuPy and Numba's CUDA guvectorize."""
    from numba import guvectorize

    @guvectorize(["void(float32[:], float32[:])", "void(float64[:], float64[:])"], "(n)->()", target="cuda")
    def nv_norm(x, out):
        s = x[0] * 0
        for i in range(x.shape[0]):
            s += x[i] * x[i]
        out[0] = math.sqrt(s)

    @guvectorize(["void(float32[:], float32[:])", "void(float64[:], float64[:])"], "(n)->(n)", target="cuda")
    def nv_softmax(x, out):
        m = x[0]
        for i in range(x.shape[0]):
            m = max(m, x[i])
        s = x[0] * 0
        for i in range(x.shape[0]):
            out[i] = math.exp(x[i] - m)
            s += out[i]
        for i in range(x.shape[0]):
            out[i] = out[i] / s

    ug_norm = ug.gufunc("sqrt(sum(x[i]**2, i))", target="cuda")
    ug_softmax = ug.gufunc("exp(x[i] - max(x[j], j)) / sum(exp(x[k] - max(x[j], j)), k)", target="cuda")

    def cp_softmax(x):
        e = cp.exp(x - x.max(axis=-1, keepdims=True))
        return e / e.sum(axis=-1, keepdims=True)

    rows, n = int(args.gu_rows), args.gu_n
    sets = 2
    for dtype in ("float32", "float64"):
        dt = np.dtype(dtype)
        xs = [cp.random.normal(size=(rows, n)).astype(dt) for _ in range(sets)]
        nxs = [cuda.as_cuda_array(x) for x in xs]
        for name, ugf, nvf, cpf, ref, out_shape in (
                ("norm", ug_norm, nv_norm, lambda x: cp.sqrt((x * x).sum(axis=-1)),
                 lambda x: cp.linalg.norm(x.astype(cp.float64), axis=-1), (rows,)),
                ("softmax", ug_softmax, nv_softmax, cp_softmax, lambda x: cp_softmax(x.astype(cp.float64)),
                 (rows, n))):
            os_ = [cp.empty(out_shape, dt) for _ in range(sets)]
            nos = [cuda.as_cuda_array(o) for o in os_]
            moved = (rows * n + int(np.prod(out_shape))) * dt.itemsize  # read once, write once
            what = f"{name} {dtype} {rows:.0e}x{n}"
            os_[0].fill(np.nan)
            ugf(xs[0], out=os_[0])
            want = ref(xs[0])
            err = float(cp.max(cp.abs(os_[0] - want)) / cp.max(cp.abs(want)))
            variants = {
                "ufuncgen cuda gufunc (out=)": lambda i: ugf(xs[i], out=os_[i]),
                "ufuncgen cuda gufunc": lambda i: ugf(xs[i]),
                "numba guvectorize (out=)": lambda i: nvf(nxs[i], out=nos[i]),
                "cupy expression": lambda i: cpf(xs[i]),
            }
            if name == "norm":
                variants["cupy.linalg.norm"] = lambda i: cp.linalg.norm(xs[i], axis=-1)
            for impl, fn in variants.items():
                try:
                    t = timer(fn, args.reps, sets)
                except Exception as e:  # noqa: BLE001 - report and go on
                    row(what, impl, note=f"FAILED: {type(e).__name__}: {str(e)[:120]}")
                    continue
                bw = moved / t / 1e6
                row(what, impl, t, bw, bw / copy_bw, note=f"max rel err {err:.1e}" if impl.endswith("(out=)")
                    and impl.startswith("ufuncgen") else "")
            os_ = nos = None
        xs = nxs = None  # free the memory
        cp.get_default_memory_pool().free_all_blocks()
    # the time of one call on a small batch (1000 rows of 16)
    xsm = cp.random.normal(size=(1000, 16)).astype(cp.float32)
    osm = cp.empty(1000, cp.float32)
    nxsm, nosm = cuda.as_cuda_array(xsm), cuda.as_cuda_array(osm)
    calls = {"ufuncgen cuda gufunc, cupy in/out": lambda: ug_norm(xsm),
             "ufuncgen cuda gufunc, cupy out=": lambda: ug_norm(xsm, out=osm),
             "numba guvectorize out=": lambda: nv_norm(nxsm, out=nosm),
             "cupy.linalg.norm": lambda: cp.linalg.norm(xsm, axis=-1)}
    for impl, fn in calls.items():
        k = args.calls if not impl.startswith("numba") else max(200, args.calls // 50)
        row("norm float32 1000x16", impl, us=wall_per_call(fn, k, cp))


def gu_sweep(args, cp, ug, ugcuda, timer, row, copy_bw):
    """One thread per row: how block size and resident blocks per SM (L1 reuse of a row) change the time."""
    base = dict(ugcuda.TUNING)
    rows, n = int(args.gu_rows), args.gu_n
    formulas = {"norm": ("sqrt(sum(x[i]**2, i))", (rows,)),
                "softmax": ("exp(x[i] - max(x[j], j)) / sum(exp(x[k] - max(x[j], j)), k)", (rows, n))}
    sets = 2
    best = {}
    for dtype in ("float32", "float64"):
        dt = np.dtype(dtype)
        xs = [cp.random.normal(size=(rows, n)).astype(dt) for _ in range(sets)]
        for name, (formula, out_shape) in formulas.items():
            os_ = [cp.empty(out_shape, dt) for _ in range(sets)]
            moved = (rows * n + int(np.prod(out_shape))) * dt.itemsize
            configs = [dict(gu_stage_smem=0, gu_block=block, gu_blocks_per_sm=bps)  # rows read in place
                       for block in (128, 256) for bps in (2, 8, 0)]
            configs += [dict(gu_stage_block=block, gu_stage_blocks_per_sm=bps)       # rows staged
                        for block in (32, 64, 128, 256) for bps in (4, 8, 16, 32, 64)]
            for conf in configs:
                ugcuda.TUNING.clear()
                ugcuda.TUNING.update(base, **conf)
                g = ug.gufunc(formula, target="cuda")
                t = timer(lambda i: g(xs[i], out=os_[i]), args.reps, sets)
                bw = moved / t / 1e6
                label = " ".join(f"{k.replace('gu_', '')}={v}" for k, v in conf.items())
                row(f"gu-sweep {name} {dtype}", label, t, bw, bw / copy_bw)
                if t < best.get((name, dtype), (np.inf,))[0]:
                    best[(name, dtype)] = (t, label)
            os_ = None
        xs = None  # free the memory
        cp.get_default_memory_pool().free_all_blocks()
    ugcuda.TUNING.clear()
    ugcuda.TUNING.update(base)
    for (name, dtype), (t, label) in best.items():
        print(f"# gu-sweep best {name} {dtype}: {label} {t:.4f} ms", flush=True)


def sweep(args, cp, ug, ugcuda, timer, row, copy_bw, n):
    base = dict(ugcuda.TUNING)
    sets = 2
    for dtype in ("float32", "float64"):
        dt = np.dtype(dtype)
        xs = [cp.random.uniform(-3, 3, n).astype(dt) for _ in range(sets)]
        ys = [cp.random.uniform(-3, 3, n).astype(dt) for _ in range(sets)]
        os_ = [cp.empty(n, dt) for _ in range(sets)]
        for name, formula, nin in (("axpy", AXPY, 3), ("sin2+cos*exp", TRANS, 2)):
            pre = (dt.type(2.5),) if nin == 3 else ()
            for block in (256, 512):
                for unroll in (1, 2, 4):
                    for bps in (16, 64, 256, 0):
                        ugcuda.TUNING.update(block=block, unroll=unroll, blocks_per_sm=bps)
                        f = ug.ufunc(formula, args=("a", "x", "y") if nin == 3 else None, target="cuda")
                        t = timer(lambda i: f(*pre, xs[i], ys[i], out=os_[i]), args.reps, sets)
                        bw = 3 * n * dt.itemsize / t / 1e6
                        row(f"sweep {name} {dtype}", f"block={block} unroll={unroll} bps={bps}", t, bw, bw / copy_bw)
        xs = ys = os_ = None  # free the memory
        cp.get_default_memory_pool().free_all_blocks()
    ugcuda.TUNING.clear()
    ugcuda.TUNING.update(base)


def summary(results, copy_bw):
    rows = results["rows"]

    def get(what_prefix, impl):
        for r in rows:
            if r["what"].startswith(what_prefix) and r["impl"] == impl:
                return r
        return None

    print("\n# targets")
    for dtype in ("float32", "float64"):
        r = get(f"axpy {dtype} n=", "ufuncgen cuda (out=)")
        if r and r["frac_copy"] is not None:
            print(f"axpy {dtype}: {r['frac_copy']:.3f} of copy bandwidth (target >= 0.92)")
        ours = get(f"sin2+cos*exp {dtype}", "ufuncgen cuda (out=)")
        ek = get(f"sin2+cos*exp {dtype}", "cupy ElementwiseKernel")
        if ours and ek and ours["ms"] and ek["ms"]:
            print(f"sin2+cos*exp {dtype}: {ek['ms'] / ours['ms']:.3f}x CuPy ElementwiseKernel speed (target >= 1)")
    for impl in ("ufuncgen cuda, cupy in/out", "ufuncgen cuda, numba in/out", "ufuncgen cuda, cupy out="):
        r = get("axpy float32 n=1000", impl)
        if r:
            print(f"1000-element call, {impl}: {r['us']:.2f} us (target <= 10)")
    nv = get("axpy float32 n=1000", "numba vectorize")
    if nv:
        print(f"numba vectorize 1000-element call: {nv['us']:.1f} us")
    for name in ("norm", "softmax"):
        for dtype in ("float32", "float64"):
            ours = get(f"{name} {dtype}", "ufuncgen cuda gufunc (out=)")
            peers = [get(f"{name} {dtype}", impl) for impl in ("cupy expression", "numba guvectorize (out=)")]
            if ours and ours["ms"]:
                parts = [f"{p['impl']} {p['ms'] / ours['ms']:.2f}x" for p in peers if p and p["ms"]]
                print(f"gufunc {name} {dtype}: {ours['ms']:.3f} ms, {ours['frac_copy']:.2f} of copy; speed-up over "
                      + ", ".join(parts))


if __name__ == "__main__":
    sys.exit(main())
