"""Accuracy of the cpu loop's vector math (libmvec) against NumPy and a reference.

    PYTHONPATH=. python benchmarks/vecmath_accuracy.py [--n 2000000] [--mp 20000]
    PYTHONPATH=. python benchmarks/vecmath_accuracy.py --flags

For each function in ``backends/vecmath.FUNCTIONS`` and float32/float64: the worst error in ulp of
the result dtype against the correctly rounded value (float32: NumPy in float64, rounded; float64:
mpmath at 40 digits on a subsample), for ufuncgen with vector math on, off (scalar libm) and
NumPy; and the count of special-value mismatches against the reference (nan / inf / signed zero).
Inputs: random bit patterns (every finite float and the specials), a log-uniform sweep, and the
edge cases of ``EDGES``.

``--flags``: how ``FUNCTIONS``' plain ranges were measured: libmvec called directly for every
vector, decade by decade of argument magnitude (both signs; the other argument in [0.5, 2]), the
decades where its warnings differ from the scalar loop's.
"""
from __future__ import annotations

import argparse

import mpmath
import numpy as np

import ufuncgen as ug
from ufuncgen.backends import vecmath
from ufuncgen.memcache import LOOPS

# formula, NumPy reference, mpmath reference, nargs
CASES = {
    "exp": ("exp(x)", np.exp, mpmath.exp), "log": ("log(x)", np.log, mpmath.log),
    "sin": ("sin(x)", np.sin, mpmath.sin), "cos": ("cos(x)", np.cos, mpmath.cos),
    "tan": ("tan(x)", np.tan, mpmath.tan), "asin": ("asin(x)", np.arcsin, mpmath.asin),
    "acos": ("acos(x)", np.arccos, mpmath.acos), "atan": ("atan(x)", np.arctan, mpmath.atan),
    "sinh": ("sinh(x)", np.sinh, mpmath.sinh), "cosh": ("cosh(x)", np.cosh, mpmath.cosh),
    "tanh": ("tanh(x)", np.tanh, mpmath.tanh), "asinh": ("asinh(x)", np.arcsinh, mpmath.asinh),
    "acosh": ("acosh(x)", np.arccosh, mpmath.acosh), "atanh": ("atanh(x)", np.arctanh, mpmath.atanh),
    "exp2": ("exp2(x)", np.exp2, lambda v: mpmath.power(2, v)), "expm1": ("expm1(x)", np.expm1, mpmath.expm1),
    "log2": ("log2(x)", np.log2, lambda v: mpmath.log(v, 2)), "log10": ("log10(x)", np.log10, mpmath.log10),
    "log1p": ("log1p(x)", np.log1p, mpmath.log1p), "erf": ("erf(x)", None, mpmath.erf),
    "erfc": ("erfc(x)", None, mpmath.erfc),
    "atan2": ("atan2(x, y)", np.arctan2, mpmath.atan2), "hypot": ("hypot(x, y)", np.hypot, mpmath.hypot),
    "pow": ("x**y", np.power, mpmath.power),
}
EDGES = [0.0, -0.0, 1.0, -1.0, 0.5, 2.0, np.inf, -np.inf, np.nan, 1e-45, -1e-45, 1e-40, 1e-310, 5e-324,
         1e-30, 88.72, 88.73, 89.0, -87.3, -103.9, -104.0, 709.78, 709.79, -745.1, -746.0, 1e30, 3.4e38,
         1.7e308, -1e30, 1e5, 1e6, 1e8, 1e10, 1e22, 1e100, 1e300, np.pi, -np.pi, np.pi / 2, 1e-8, 0.999999, 1.000001]


def _mp_ref(mpf, args, dt):
    out = np.empty(len(args[0]))
    with mpmath.workdps(40):
        for k in range(len(out)):
            try:
                v = mpf(*(mpmath.mpf(float(a[k])) for a in args))
                out[k] = np.nan if isinstance(v, mpmath.mpc) else float(v)  # a domain error
            except (ValueError, ZeroDivisionError, OverflowError):
                out[k] = np.nan
    return out.astype(dt)


def inputs(nargs, dt, n, rng):
    bits = np.uint32 if dt == np.float32 else np.uint64
    info = np.iinfo(bits)
    raw = rng.integers(0, info.max, size=(nargs, n), dtype=bits, endpoint=True).view(dt)
    mag = np.exp(rng.uniform(np.log(1e-6), np.log(1e4), size=(nargs, n))) * rng.choice([-1, 1], size=(nargs, n))
    edges = np.array(EDGES, dtype=dt)
    grid = np.array(np.meshgrid(*([edges] * nargs))).reshape(nargs, -1)
    return np.concatenate([raw, mag.astype(dt), grid], axis=1)


def ulps(got, ref, dt):
    """Worst finite ulp error and the count of special-value mismatches."""
    got, ref = got.astype(dt), ref.astype(dt)
    special = ~np.isfinite(ref) | (ref == 0)
    bad = (special & ~((got == ref) & (np.signbit(got) == np.signbit(ref)) | np.isnan(got) & np.isnan(ref))).sum()
    fin = ~special
    bad += (fin & ~np.isfinite(got)).sum()
    ok = fin & np.isfinite(got)
    wide = np.float64 if dt == np.float32 else np.longdouble
    err = np.abs(got[ok].astype(wide) - ref[ok].astype(wide)) / np.spacing(np.abs(ref[ok])).astype(wide)
    return float(err.max()) if err.size else 0.0, int(bad)


def compile_both(formula, dt):
    sig = f"{dt.__name__}({', '.join([dt.__name__] * 2)})"
    LOOPS.clear()
    on = ug.ufunc(formula, args=("x", "y"), signatures=sig, cache=False)
    saved = vecmath.state
    vecmath.state = lambda: "off"
    try:
        LOOPS.clear()
        off = ug.ufunc(formula, args=("x", "y"), signatures=sig, cache=False)
    finally:
        vecmath.state = saved
        LOOPS.clear()
    return on, off


def _warned(fn, *args) -> set:
    import warnings
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with np.errstate(all="warn"):
            fn(*args)
    return {str(w.message).split(" encountered")[0] for w in caught}


def flag_scan():
    """Decades of |x| where libmvec called on every vector warns unlike the scalar loop."""
    inf = float("inf")
    vecmath._plain_range = lambda fn, ty: (0.0, inf)
    for name, fn in list(vecmath.FUNCTIONS.items()):
        vecmath.FUNCTIONS[name] = fn._replace(odd=(), zero_ok=True, positive_x=name == "pow")
    rng = np.random.default_rng(5)
    for name, fn in vecmath.FUNCTIONS.items():
        formula = CASES[name][0]
        for dt, (lo, hi) in ((np.float32, (-45, 38)), (np.float64, (-323, 308))):
            on, off = compile_both(formula, dt)
            bad = []
            for k in range(lo, hi + 1):
                for which in range(fn.nargs):
                    with np.errstate(all="ignore"):
                        mag = (10.0 ** rng.uniform(k, k + 1, 20000)).astype(dt)
                    mag = mag[np.isfinite(mag)]
                    sign = rng.choice([-1, 1], mag.size) if (which or name != "pow") else 1
                    args = [rng.uniform(0.5, 2, mag.size).astype(dt) for _ in range(2)]
                    args[which] = (mag * sign).astype(dt)
                    if _warned(on, *args) != _warned(off, *args):
                        bad.append(k)
            print(f"{name:6s} {dt.__name__:8s} decades where libmvec warns differently: {sorted(set(bad))}", flush=True)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--flags", action="store_true")
    p.add_argument("--n", type=int, default=2_000_000)
    p.add_argument("--mp", type=int, default=20_000, help="float64 values checked against mpmath")
    a = p.parse_args()
    if a.flags:
        return flag_scan()
    names = list(vecmath.FUNCTIONS)
    print(f"vector math: {vecmath.state()}")
    print(f"{'function':8s} {'dtype':8s} {'on ulp':>8s} {'off ulp':>8s} {'numpy ulp':>9s}  special mismatches on/off/numpy")
    rng = np.random.default_rng(1)
    with np.errstate(all="ignore"):
        for name in names:
            formula, npf, mpf = CASES[name]
            nargs = 2 if "y" in formula else 1
            for dt in (np.float32, np.float64):
                on, off = compile_both(formula, dt)
                xs = inputs(nargs, dt, a.n if dt == np.float32 else a.mp, rng)
                args = list(xs) + ([np.ones_like(xs[0])] if nargs == 1 else [])
                if dt == np.float32 and npf is not None:
                    ref = npf(*(x.astype(np.float64) for x in xs)).astype(dt)
                else:
                    ref = _mp_ref(mpf, xs, dt)
                r_on, r_off = ulps(on(*args), ref, dt), ulps(off(*args), ref, dt)
                r_np = ulps(npf(*xs), ref, dt) if npf is not None else (float("nan"), 0)
                print(f"{name:8s} {dt.__name__:8s} {r_on[0]:8.2f} {r_off[0]:8.2f} {r_np[0]:9.2f}  "
                      f"{r_on[1]}/{r_off[1]}/{r_np[1]}", flush=True)


if __name__ == "__main__":
    main()
