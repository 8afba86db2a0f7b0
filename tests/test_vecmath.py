"""Vector math in the cpu loop (``backends/vecmath.py``): glibc's libmvec against scalar libm and NumPy.

Every function the loop hands to libmvec, float32 and float64, over random bit patterns (every
finite float and the specials), a log-uniform sweep and an edge grid: values within ``ULPS`` of the
correctly rounded result (float32: NumPy in float64, rounded) or of glibc's scalar function
(float64: the loop built without vector math), the same nan / inf / signed zero as the scalar
build, and the same floating-point warnings (but underflow where an argument is subnormal: glibc
raises it for inexact tiny results, the loop for any tiny result).  Then the fallback (``UFUNCGEN_VECTOR_MATH=0``, no
libmvec) and the disk cache across processes.
"""
from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

import ufuncgen as ug
from ufuncgen.backends import vecmath
from ufuncgen.memcache import LOOPS

ROOT = Path(__file__).resolve().parent.parent
ON = vecmath.state() != "off"
needs_libmvec = pytest.mark.skipif(not ON, reason=f"no vector math here ({vecmath.state()})")

ULPS = 4  # glibc documents up to 4 ulp for libmvec; measured worst: 4 (logf), 3 elsewhere
_erf = np.vectorize(math.erf, otypes=[float])
_erfc = np.vectorize(math.erfc, otypes=[float])
# libmvec function -> (formula, NumPy reference)
CASES = {
    "exp": ("exp(x)", np.exp), "exp2": ("exp2(x)", np.exp2), "expm1": ("expm1(x)", np.expm1),
    "log": ("log(x)", np.log), "log2": ("log2(x)", np.log2), "log10": ("log10(x)", np.log10),
    "log1p": ("log1p(x)", np.log1p), "pow": ("x**y", np.power),
    "sin": ("sin(x)", np.sin), "cos": ("cos(x)", np.cos), "tan": ("tan(x)", np.tan),
    "asin": ("asin(x)", np.arcsin), "acos": ("acos(x)", np.arccos), "atan": ("atan(x)", np.arctan),
    "atan2": ("atan2(x, y)", np.arctan2), "sinh": ("sinh(x)", np.sinh), "cosh": ("cosh(x)", np.cosh),
    "tanh": ("tanh(x)", np.tanh), "asinh": ("asinh(x)", np.arcsinh), "acosh": ("acosh(x)", np.arccosh),
    "atanh": ("atanh(x)", np.arctanh), "erf": ("erf(x)", _erf), "erfc": ("erfc(x)", _erfc),
}
EDGES = [0.0, -0.0, 1.0, -1.0, 0.5, 2.0, 3.0, -2.5, np.inf, -np.inf, np.nan, 1e-45, -1e-45, 1e-40, 1e-38,
         1e-310, 5e-324, 1e-30, 88.72, 88.73, 89.0, -87.3, -103.9, -104.0, 709.78, 709.79, -745.1, -746.0,
         1e30, -1e30, 3.4e38, 1.7e308, 1e5, 1e6, 1e8, 1e10, 1e22, 1e100, 1e300, np.pi, -np.pi, np.pi / 2,
         1e-8, 0.999999, 1.000001, -0.999999]


def test_table_covers_cases():
    assert set(vecmath.FUNCTIONS) == set(CASES)


def test_state_names_what_is_used():
    s = vecmath.state()
    assert s == "off" or re.fullmatch(r"libmvec:[bd]", s), s
    if sys.platform.startswith("linux") and os.path.exists("/lib/x86_64-linux-gnu/libmvec.so.1") \
            and os.environ.get(vecmath.ENV, "1") != "0":
        assert ON


def _build(formula: str, dt, on: bool):
    """The loop for ``formula`` with vector math on or off, outside the memory cache."""
    name = np.dtype(dt).name
    saved = vecmath.state
    if not on:
        vecmath.state = lambda: "off"
    try:
        LOOPS.clear()
        return ug.ufunc(formula, args=("x", "y"), signatures=f"{name}({name}, {name})", cache=False)
    finally:
        vecmath.state = saved
        LOOPS.clear()


def _edges(dt):
    with np.errstate(over="ignore"):  # 1e300 is inf in float32
        return np.array(EDGES, dt)


def _inputs(dt, n: int, seed: int = 0) -> tuple:
    rng = np.random.default_rng(seed)
    bits = np.uint32 if dt == np.float32 else np.uint64
    raw = rng.integers(0, np.iinfo(bits).max, size=(2, n), dtype=bits, endpoint=True).view(dt)
    sweep = (np.exp(rng.uniform(np.log(1e-6), np.log(1e4), size=(2, n))) * rng.choice([-1, 1], (2, n))).astype(dt)
    grid = np.array(np.meshgrid(_edges(dt), _edges(dt))).reshape(2, -1)
    x, y = np.concatenate([raw, sweep, grid], axis=1)
    return x, y


def _ulps(got, ref, dt):
    """Worst ulp distance where ``ref`` is finite and non-zero."""
    fin = np.isfinite(ref) & (ref != 0) & np.isfinite(got)
    wide = np.float64 if dt == np.float32 else np.longdouble
    err = np.abs(got[fin].astype(wide) - ref[fin].astype(wide)) / np.spacing(np.abs(ref[fin]).astype(dt)).astype(wide)
    return float(err.max()) if err.size else 0.0


def _same_specials(a, b):
    """Indices where a and b differ in kind: nan, inf (with sign), or zero (with sign; a zero against a
    result within ``ULPS`` subnormal steps of it is an ulp question, not a special value)."""
    tiny = np.finfo(a.dtype).smallest_subnormal * ULPS
    nan = np.isnan(a) != np.isnan(b)
    inf = (np.isinf(a) | np.isinf(b)) & ~(a == b) & ~(np.isnan(a) | np.isnan(b))
    zero = ((a == 0) & (b == 0) & (np.signbit(a) != np.signbit(b))) | \
           (((a == 0) & (np.abs(b) > tiny)) | ((b == 0) & (np.abs(a) > tiny))) & np.isfinite(a) & np.isfinite(b)
    return np.flatnonzero(nan | inf | zero)


def _subnormal(a) -> bool:
    return bool(np.any((a != 0) & (np.abs(a) < np.finfo(a.dtype).tiny)))


def _ir(f) -> str:
    return "\n".join(map(str, f.inspect_llvm().values()))


def _warnings(fn, *args) -> set:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with np.errstate(all="warn"):
            fn(*args)
    return {str(w.message).split(" encountered")[0] for w in caught if issubclass(w.category, RuntimeWarning)}


@pytest.fixture(params=sorted(CASES), scope="class")
def built(request):
    """(name, formula, reference, loop with vector math, loop without) for the test class's dtype."""
    name = request.param
    formula, ref = CASES[name]
    dtype = request.cls.dtype
    return name, formula, ref, _build(formula, dtype, True), _build(formula, dtype, False)


class VecmathCase:
    """One libmvec function for one dtype: values, specials and warnings against the scalar build."""

    dtype = None

    @needs_libmvec
    def test_calls_libmvec(self, built):
        name, *_rest, on, off = built
        base = name + ("f" if self.dtype == np.float32 else "")
        assert re.search(rf"call [^\n]*@_ZGV[bd]N\d+v+_{base}\(", _ir(on))
        assert "_ZGV" not in _ir(off)

    def test_values(self, built):
        name, _formula, ref, on, off = built
        dt = self.dtype
        x, y = _inputs(dt, 200_000)
        if name == "pow":  # keep most of the pairs away from overflow and nan (checked by the specials)
            with np.errstate(invalid="ignore"):
                y = np.where(np.abs(y) > 8, y % 8, y).astype(dt)
        with np.errstate(all="ignore"):
            got, scalar = on(x, y), off(x, y)
            args = (x, y) if "y" in CASES[name][0] else (x,)
            if dt == np.float32:
                want = ref(*(a.astype(np.float64) for a in args)).astype(dt)
            else:
                want = scalar
            numpy = ref(*args)
        bad = _same_specials(got, scalar)
        assert bad.size == 0, f"{name}: specials differ at x={x[bad[:5]]}, y={y[bad[:5]]}: " \
                              f"{got[bad[:5]]} vs {scalar[bad[:5]]}"
        assert _ulps(got, want, dt) <= ULPS, name
        assert _ulps(got, numpy, dt) <= ULPS + 4, name  # NumPy's own SIMD loops are a few ulp off too

    def test_warnings_as_scalar(self, built):
        """libmvec's own status flags are not C's; the loop's warnings must be the scalar loop's."""
        name, _formula, _ref, on, off = built
        dt = self.dtype
        x, y = _inputs(dt, 2000, seed=1)
        with np.errstate(all="ignore"):
            grid = _edges(dt)
        cases = [(x, y), (grid, np.ones_like(grid)), (np.ones_like(grid), grid)]
        cases += [(np.full(64, v), np.full(64, w, dt)) for v in grid for w in (1.0, 0.5, np.inf, 0.0)]
        for a, b in cases:
            w_on, w_off = _warnings(on, a, b), _warnings(off, a, b)
            if _subnormal(a) or _subnormal(b):  # underflow is raised on inexact tiny results: glibc knows, we guess
                w_on.discard("underflow"), w_off.discard("underflow")
            assert w_on == w_off, (name, a[:4], b[:4])

    def test_warnings_none_on_ordinary_values(self, built):
        name, *_rest, on, _off = built
        rng = np.random.default_rng(2)
        x = rng.uniform(0.1, 0.9, 10_000).astype(self.dtype) + (1 if name == "acosh" else 0)
        assert _warnings(on, x, x) == set(), name


class TestFloat32(VecmathCase):
    dtype = np.float32


class TestFloat64(VecmathCase):
    dtype = np.float64


@pytest.mark.parametrize("dt", [np.float32, np.float64])
def test_formula_strided_and_broadcast(dt):
    """The block path (strided, broadcast scalar) calls the same vector code; compare with NumPy."""
    f = ug.ufunc("sin(x)**2 + cos(y)*exp(-x*y)", signatures=f"{np.dtype(dt).name}({np.dtype(dt).name}, "
                                                          f"{np.dtype(dt).name})", cache=False)
    rng = np.random.default_rng(3)
    x = rng.uniform(-10, 10, (300, 40)).astype(dt)
    y = rng.uniform(0, 3, 300).astype(dt)
    want = np.sin(x.T.astype(float)) ** 2 + np.cos(y.astype(float)) * np.exp(-x.T.astype(float) * y)
    np.testing.assert_allclose(f(x.T, y), want, rtol=5e-6 if dt == np.float32 else 1e-13, atol=5e-6 if
                               dt == np.float32 else 1e-13)
    np.testing.assert_allclose(f(x[::3, 1], dt(0.5)), np.sin(x[::3, 1].astype(float)) ** 2 +
                               np.cos(0.5) * np.exp(-x[::3, 1].astype(float) * 0.5), rtol=5e-6, atol=5e-6)


def test_gufunc_reduction():
    g = ug.gufunc("sum(exp(x[i]) * sin(x[i]), i)", cache=False)
    x = np.random.default_rng(4).uniform(-3, 3, (500, 37)).astype(np.float32)
    np.testing.assert_allclose(g(x), (np.exp(x.astype(float)) * np.sin(x.astype(float))).sum(1), rtol=1e-5,
                               atol=1e-5)


def test_mark_calls_golden():
    """The marking on a small kernel text: intrinsic and libm spellings, once-declared variants."""
    if not ON:
        pytest.skip("no vector math here")
    text = ("define float @k(float %x) {\n  %a = tail call float @llvm.exp.f32(float %x)\n"
            "  %b = call float @atan2f(float %a, float %x) #1\n  ret float %b\n}\n"
            "declare float @llvm.exp.f32(float)\ndeclare float @atan2f(float, float)\n")
    out = vecmath.mark_calls(text)
    (isa, lanes, _), = vecmath.variants()
    assert 'call float @llvm.exp.f32(float %x) "vector-function-abi-variant"=' \
           f'"_ZGV_LLVM_N{lanes}v_llvm.exp.f32(ufuncgen_vecmath__ZGV{isa}N{lanes}v_expf)"' in out
    assert f'@atan2f(float %a, float %x) "vector-function-abi-variant"="_ZGV_LLVM_N{lanes}vv_atan2f(' in out
    assert out.count(f"declare <{lanes} x float> @_ZGV{isa}N{lanes}v_expf(<{lanes} x float>)") == 1
    assert "@llvm.compiler.used" in out
    assert vecmath.mark_calls("define float @k(float %x) {\n  ret float %x\n}\n").count("ZGV") == 0
    # a fast-math pow with a constant exponent is LLVM's to rewrite (Numba's cbrt: pow(x, 1/3) -> cbrt)
    cbrt = ("define double @k(double %x) {\n  %a = call fast double @llvm.pow.f64(double %x, double "
            "0x3FD5555555555555)\n  ret double %a\n}\ndeclare double @llvm.pow.f64(double, double)\n")
    assert "ZGV" not in vecmath.mark_calls(cbrt)
    assert "ZGV" in vecmath.mark_calls(cbrt.replace("call fast", "call"))


@pytest.mark.parametrize("dt", [np.float32, np.float64])
def test_cbrt_keeps_llvm_cbrt(dt):
    x = np.array([-8.0, -1e-30, 27.0, 1e-20, 3.0, -np.inf, np.nan, -0.0] * 8, dt)
    f = ug.ufunc("cbrt(x)", signatures=f"{np.dtype(dt).name}({np.dtype(dt).name})", cache=False)
    with np.errstate(all="ignore"):
        np.testing.assert_allclose(f(x), np.cbrt(x), rtol=4 * np.finfo(dt).eps, equal_nan=True)


# ---- fallback and disk cache, in subprocesses ----------------------------------------------------
DRIVER = r"""
import json, re, sys
import numpy as np
import ufuncgen as ug
from ufuncgen.backends import vecmath
if sys.argv[1] == "nolib":
    from llvmlite import binding as ll
    def refuse(name):
        raise RuntimeError("no " + name)
    ll.load_library_permanently = refuse
f = ug.ufunc("sin(x)**2 + exp(-x)", signatures="float32(float32)", cache=sys.argv[2] == "cache")
x = np.linspace(-20, 20, 10001, dtype=np.float32)
with np.errstate(all="raise"):
    y = f(x)
compiles = ug.cache_info()["compiles"]
ir = "\n".join(map(str, f.inspect_llvm().values()))
print(json.dumps({"state": vecmath.state(), "y": y.astype(float).tolist(), "calls": bool(re.search(r"_ZGV", ir)),
                  "compiles": compiles}))
"""


def _run(mode: str, cache: str, env: dict) -> dict:
    full = {**os.environ, "PYTHONPATH": str(ROOT), **env}
    out = subprocess.run([sys.executable, "-c", DRIVER, mode, cache], capture_output=True, text=True, env=full,
                         cwd=ROOT, timeout=300)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


def _check(y):
    x = np.linspace(-20, 20, 10001, dtype=np.float32).astype(float)
    np.testing.assert_allclose(y, np.sin(x) ** 2 + np.exp(-x), rtol=2e-6, atol=1e-6)


def test_fallback_env_switch(tmp_path):
    r = _run("plain", "nocache", {vecmath.ENV: "0", "UFUNCGEN_CACHE_DIR": str(tmp_path)})
    assert r["state"] == "off" and not r["calls"]
    _check(r["y"])


def test_fallback_without_libmvec(tmp_path):
    r = _run("nolib", "nocache", {"UFUNCGEN_CACHE_DIR": str(tmp_path)})
    assert r["state"] == "off" and not r["calls"]
    _check(r["y"])


@needs_libmvec
def test_disk_cache_loads_in_new_process_and_keys_differ(tmp_path):
    env = {"UFUNCGEN_CACHE_DIR": str(tmp_path)}
    first = _run("plain", "cache", env)
    assert first["state"].startswith("libmvec") and first["calls"]
    assert first["compiles"] == 1
    # a fresh process loads the stored loop (which calls libmvec) without compiling it
    second = _run("plain", "cache", env)
    assert second["compiles"] == 0 and second["y"] == first["y"]
    # switched off: another key, so a compile, and a loop without libmvec calls
    off = _run("plain", "cache", {**env, vecmath.ENV: "0"})
    assert off["state"] == "off" and not off["calls"] and off["compiles"] == 1
    for r in (first, second, off):
        _check(r["y"])
