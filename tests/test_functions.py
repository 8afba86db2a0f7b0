"""Every function of the table, compiled and compared with its NumPy reference.

The rows of ``ufuncgen.functions.FUNCTIONS`` drive this file: each row's name and aliases, its
sample domain, its NumPy reference and whether it takes complex input.  Inputs are random,
dtypes cover float32, float64, int64 and complex128, on the cpu and parallel targets.
"""
import numpy as np
import pytest

import ufuncgen as ug
from ufuncgen.functions import FUNCTIONS
from ufuncgen.parse import parse_formula

RNG = np.random.default_rng(1234)
N = 257  # odd, longer than one SIMD block, shorter than one loop block: exercises remainders

TESTED = [fn for fn in FUNCTIONS if fn.reference is not None and fn.name not in ("where",)]
DTYPES = ["float32", "float64", "int64", "complex128"]


def _formula(fn):
    arity = min(fn.nargs) if fn.nargs else 1
    return f"{fn.name}({', '.join('xyz'[:arity])})", arity


def _sample(fn, dtype, n=N):
    lo, hi = fn.domain
    dt = np.dtype(dtype)
    if dt.kind == "i":
        return RNG.integers(int(np.ceil(lo)), int(np.floor(hi)) + 1, n).astype(dt)
    re = RNG.uniform(lo, hi, n)
    if dt.kind == "c":
        return (re + 1j * RNG.uniform(lo, hi, n) * 0.5).astype(dt)
    if fn.name in ("isnan", "isinf", "isfinite"):
        re[::7] = np.nan
        re[::11] = np.inf
        re[::13] = -np.inf
    return re.astype(dt)


def _cases():
    for fn in TESTED:
        for dt in DTYPES:
            if dt == "complex128" and not fn.complex_ok:
                continue
            if dt == "int64" and fn.name in ("fmod",):
                continue  # NumPy's integer fmod by zero warns; covered by the edge-case tests
            yield pytest.param(fn, dt, id=f"{fn.name}-{dt}")


def _tolerance(dtype):
    return {"float32": 3e-6, "complex64": 3e-6}.get(str(dtype), 1e-12)


@pytest.mark.parametrize("fn,dtype", list(_cases()))
def test_function_matches_numpy(fn, dtype, target):
    text, arity = _formula(fn)
    args = [_sample(fn, dtype) for _ in range(arity)]
    f = ug.ufunc(text, args=list("xyz"[:arity]), target=target)
    with np.errstate(all="ignore"):
        got = f(*args)
        want = fn.reference(*args)
    want = np.asarray(want)
    if dtype != "int64" or fn.rule != "float":
        assert got.dtype == want.dtype or (want.dtype == np.float64 and fn.reference.__class__ is np.vectorize
                                           and got.dtype == np.dtype(dtype)), (got.dtype, want.dtype)
    else:
        assert got.dtype == np.float64
    if got.dtype == np.bool_:
        np.testing.assert_array_equal(got, want)
    else:
        np.testing.assert_allclose(got, want.astype(got.dtype), rtol=_tolerance(dtype), atol=10 * _tolerance(dtype), equal_nan=True)


@pytest.mark.parametrize("fn", FUNCTIONS, ids=lambda fn: fn.name)
def test_aliases_reach_the_same_expression(fn):
    if fn.name == "Piecewise":
        return
    arity = min(fn.nargs) if fn.nargs else 1
    call = "({})".format(", ".join("xyz"[:arity]) if fn.name != "where" else "x > 0, y, z")
    canonical = parse_formula(fn.name + call)
    for alias in fn.aliases:
        assert parse_formula(alias + call) == canonical


def test_two_argument_log_is_the_base_b_logarithm():
    x = RNG.uniform(0.1, 10, N)
    f = ug.ufunc("log(x, 3)")
    np.testing.assert_allclose(f(x), np.log(x) / np.log(3), rtol=1e-12)


def test_min_and_max_take_several_arguments():
    x, y, z = (RNG.normal(size=N) for _ in range(3))
    f = ug.ufunc("max(x, y, z) - min(x, y, z)")
    np.testing.assert_allclose(f(x, y, z), np.maximum(np.maximum(x, y), z) - np.minimum(np.minimum(x, y), z))


def test_constants():
    x = np.linspace(-1, 1, 5)
    f = ug.ufunc("pi*x + e + where(x > 0, inf, nan)")
    want = np.pi * x + np.e + np.where(x > 0, np.inf, np.nan)
    np.testing.assert_array_equal(f(x), want)


def test_language_table_lists_every_name():
    table = ug.FUNCTIONS and __import__("ufuncgen.functions", fromlist=["language_table"]).language_table()
    for fn in FUNCTIONS:
        assert f"`{fn.name}`" in table
        for alias in fn.aliases:
            assert f"`{alias}`" in table
