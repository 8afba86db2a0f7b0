"""Numeric edge cases against NumPy: division by zero, overflow, NaN/inf, negative bases,
complex branch cuts, and ``out=`` that aliases an input.

Where NumPy defines a result, ufuncgen must give it (same values, same dtype).  Where ufuncgen
deliberately differs, the test says so in its docstring and pins ufuncgen's rule; the README's
SECURITY/numeric section lists the same rules.
"""
from __future__ import annotations

import math
import warnings

import numpy as np
import pytest

import ufuncgen as ug
from ufuncgen.errors import FormulaError

SIGNED = [np.int8, np.int16, np.int32, np.int64]
UNSIGNED = [np.uint8, np.uint64]
FLOATS = [np.float32, np.float64]
COMPLEX = [np.complex64, np.complex128]
NAN, INF = np.nan, np.inf

_cache: dict = {}


def uf(text, args=None, target="cpu"):
    """One UFunc per formula and target for the whole module (its loops compile once per dtype)."""
    key = (tuple(text) if isinstance(text, list) else text, args, target)
    if key not in _cache:
        _cache[key] = ug.ufunc(text, args=args, target=target)
    return _cache[key]


def numpy_ref(f, *args):
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return f(*args)


def same(got, want, rtol=0.0):
    """Equal values (NaN equal to NaN, -0.0 told from 0.0 for floats) and equal dtype."""
    got, want = np.asarray(got), np.asarray(want)
    assert got.dtype == want.dtype, (got.dtype, want.dtype)
    if rtol:
        np.testing.assert_allclose(got, want, rtol=rtol, equal_nan=True)
    else:
        np.testing.assert_array_equal(got, want)
    if got.dtype.kind == "f":
        finite = np.isfinite(want) & (want == 0)
        np.testing.assert_array_equal(np.signbit(got[finite]), np.signbit(want[finite]))


def call(f, *args):
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return f(*args)


# ---- integer division and modulo by zero -----------------------------------------------------
@pytest.mark.parametrize("dtype", SIGNED + UNSIGNED)
@pytest.mark.parametrize("text, ref", [("x // y", np.floor_divide), ("x % y", np.remainder), ("fmod(x, y)", np.fmod),
                                       ("x / y", np.true_divide)])
def test_integer_division_by_zero_as_numpy(text, ref, dtype):
    info = np.iinfo(dtype)
    x = np.array([7, info.max, info.min, 0, 5, 6, info.min, 100], dtype)
    y = np.array([0, 0, 0, 0, 2, 3 if info.min == 0 else -4, 1, 7], dtype)
    same(call(uf(text), x, y), numpy_ref(ref, x, y))


@pytest.mark.parametrize("dtype", SIGNED)
def test_integer_min_floor_divided_by_minus_one_wraps_as_numpy(dtype):
    info = np.iinfo(dtype)
    x = np.array([info.min, info.min, -7, info.max], dtype)
    y = np.array([-1, 1, -1, -1], dtype)
    same(call(uf("x // y"), x, y), numpy_ref(np.floor_divide, x, y))
    same(call(uf("x % y"), x, y), numpy_ref(np.remainder, x, y))


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("text, ref", [("x // y", np.floor_divide), ("x % y", np.remainder), ("fmod(x, y)", np.fmod),
                                       ("x / y", np.true_divide)])
def test_float_division_by_zero_and_infinities_as_numpy(text, ref, dtype):
    x = np.array([7, -7, 0, INF, -INF, NAN, 5.5, -5.5, 7, -7], dtype)
    y = np.array([0, 0, 0, 0, 0, 0, -2, 2, INF, INF], dtype)
    same(call(uf(text), x, y), numpy_ref(ref, x, y))


@pytest.mark.parametrize("dtype", [np.int64, np.float64])
def test_floor_division_by_a_constant_as_numpy(dtype):
    """x // 2 keeps the integer dtype (SymPy holds x/2 as x*(1/2): it used to become float)."""
    x = np.array([5, -5, 7, -8, 0], dtype)
    if dtype == np.float64:
        x = np.append(x, [INF, -INF, NAN])
    same(call(uf("x // 2"), x), numpy_ref(np.floor_divide, x, 2))
    same(call(uf("x // -3"), x), numpy_ref(np.floor_divide, x, -3))


@pytest.mark.parametrize("text", ["x // 0", "x % 0", "x / 0", "x / 0.0", "x // (1 - 1)", "0**-1 + x"])
def test_a_literal_zero_divisor_is_a_formula_error(text):
    """Deliberate: NumPy divides by a zero array element at run time (inf, nan or 0, with a
    warning); a divisor that is zero in the formula itself is a mistake, reported at once."""
    with pytest.raises(FormulaError, match="zero"):
        ug.ufunc(text, args=("x",))


# ---- overflow -------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", SIGNED + UNSIGNED)
@pytest.mark.parametrize("text, ref", [("x + y", np.add), ("x * y", np.multiply), ("x - y", np.subtract),
                                       ("-x", None), ("x * 3", None), ("x**2", None), ("x**y", np.power),
                                       ("x**11", None), ("abs(x)", None)])
def test_integer_overflow_wraps_as_numpy(text, ref, dtype):
    info = np.iinfo(dtype)
    x = np.array([info.max, info.min, info.max // 2 + 1, 3, 7, 2], dtype)
    y = np.array([1, 1, 2, 40, 22, info.bits - 1], dtype)
    f = uf(text, args=("x", "y"))
    want = {"-x": lambda: -x, "x * 3": lambda: x * dtype(3), "x**2": lambda: x ** 2, "x**11": lambda: x ** 11,
            "abs(x)": lambda: np.abs(x)}.get(text)
    same(call(f, x, y), numpy_ref(want) if want else numpy_ref(ref, x, y))


def test_integer_power_is_exact():
    """Numba's np.power on integers goes through float (3**40 came out 33 too large)."""
    x = np.array([3, 7, 10, 2], np.int64)
    y = np.array([40, 22, 18, 62], np.int64)
    same(call(uf("x**y"), x, y), x ** y)
    same(call(uf("x**22"), x), x ** 22)


def test_negative_integer_power_of_an_integer_is_the_integer_part():
    """Deliberate: NumPy raises ValueError for an integer to a negative integer power; a kernel
    cannot raise, so the result is the integer part of the real power: +-1 for a base of +-1,
    else 0 (0 ** -1 too).  A constant exponent (x**-1) gives float64, as x**-1.0 would."""
    x = np.array([2, 1, -1, -1, -2, 0, 3, 5], np.int64)
    y = np.array([-1, -3, -3, -2, -2, -1, 0, 2], np.int64)
    with pytest.raises(ValueError):
        x ** y
    want = np.array([math.trunc(float(a) ** int(b)) if a else 0 for a, b in zip(x, y, strict=True)], np.int64)
    want[(x == 0) & (y == 0)] = 1
    same(call(uf("x**y"), x, y), want)
    same(call(uf("x**-1"), x), numpy_ref(np.divide, 1.0, x.astype(np.float64)))


@pytest.mark.parametrize("dtype", FLOATS)
def test_float_overflow_and_underflow_as_numpy(dtype):
    big = np.finfo(dtype).max
    x = np.array([big, -big, big / 4, np.finfo(dtype).tiny, 1e-30], dtype)
    for text, ref in [("x * 10", lambda v: v * dtype(10)), ("x + x", lambda v: v + v), ("x**2", lambda v: v * v),
                      ("exp(x)", np.exp), ("x / 1e30", lambda v: v / dtype(1e30)), ("cosh(x)", np.cosh)]:
        same(call(uf(text), x), numpy_ref(ref, x), rtol=1e-6 if dtype == np.float32 else 1e-15)


def test_integers_converted_to_float_overflow_as_numpy():
    x = np.array([10, -10, 2], np.int64)
    same(call(uf("x * 1e308"), x), numpy_ref(np.multiply, x, 1e308))
    same(call(uf("exp(x * 100)"), x), numpy_ref(np.exp, x * 100.0))


def test_constants_are_folded_before_float64_arithmetic():
    """Deliberate: numbers in a formula are combined exactly (SymPy) before the kernel runs, so
    x*1e300*1e300 is x*inf, where NumPy's (x*1e300)*1e300 can stay finite for tiny x."""
    x = np.array([1e-300, 1.0])
    same(call(uf("x*1e300*1e300"), x), np.array([INF, INF]))
    same(call(uf("x*3*(1/3)"), x), x)  # exactly x, where NumPy's (x*3)*(1/3) may differ in the last bit


# ---- NaN and inf propagation -----------------------------------------------------------------
V = np.array([NAN, INF, -INF, 0.0, -0.0, 1.0, -2.5])
PROPAGATION = {
    "x + 1": lambda v: v + 1, "x * 2": lambda v: v * 2, "x / 2": lambda v: v / 2, "sin(x)": np.sin,
    "exp(x)": np.exp, "log(x)": np.log, "sqrt(x)": np.sqrt, "x**2": lambda v: v ** 2, "x**-1": lambda v: v ** -1.0,
    "abs(x)": np.abs, "floor(x)": np.floor, "ceil(x)": np.ceil, "tanh(x)": np.tanh, "atan(x)": np.arctan,
    "Max(x, 0)": lambda v: np.maximum(v, 0), "Min(x, 0)": lambda v: np.minimum(v, 0), "Max(x, nan)": lambda v: np.maximum(v, NAN),
    "where(x > 0, x, 0)": lambda v: np.where(v > 0, v, 0), "x > 0": lambda v: v > 0, "x != 0": lambda v: v != 0,
    "isnan(x)": np.isnan, "isinf(x)": np.isinf, "isfinite(x)": np.isfinite, "atan2(x, 1)": lambda v: np.arctan2(v, 1),
    "atan2(1, x)": lambda v: np.arctan2(1, v), "hypot(x, inf)": lambda v: np.hypot(v, INF),
    "hypot(x, nan)": lambda v: np.hypot(v, NAN), "fmod(x, 2)": lambda v: np.fmod(v, 2), "x % 2": lambda v: np.mod(v, 2),
    "x // 2": lambda v: np.floor_divide(v, 2), "exp2(x)": np.exp2, "log1p(x)": np.log1p, "x + inf": lambda v: v + INF,
    "x * nan + 1": None, "erf(x)": np.vectorize(math.erf), "sign(x)": np.sign,
}


@pytest.mark.parametrize("text", [k for k, f in PROPAGATION.items() if f is not None])
def test_nan_and_inf_propagate_as_numpy(text):
    same(call(uf(text, args=("x",)), V), numpy_ref(PROPAGATION[text], V), rtol=1e-15)


@pytest.mark.parametrize("op", ["==", "!=", "<", "<=", ">", ">="])
@pytest.mark.parametrize("side", ["x {} inf", "x {} -inf", "inf {} x", "-inf {} x"])
def test_comparisons_with_infinity_as_ieee(op, side):
    """NaN compares false except for !=; the parser writes these without infinity (SymPy's own
    test of y**n == inf never finishes), which must not change a single result."""
    text = side.format(op)
    got = call(uf(f"where({text}, 1, 0)", args=("x",)), V)
    want = np.where(eval(text.replace("inf", "INF"), {"INF": INF, "x": V}), 1.0, 0.0)  # noqa: S307 - test's own text
    same(got, want)


@pytest.mark.parametrize("text, ref", [("where(not (x > 0), 1, 0)", lambda v: np.where(~(v > 0), 1.0, 0.0)),
                                       ("~(x >= 1) & (x < 3)", lambda v: ~(v >= 1) & (v < 3)),
                                       ("where(~(x > 0), sin(x), cos(x)) + sin(x)",
                                        lambda v: np.where(~(v > 0), np.sin(v), np.cos(v)) + np.sin(v))])
def test_negated_comparison_with_nan_as_numpy(text, ref):
    """~(x > 0) is True at NaN; SymPy would make it x <= 0, which is False there."""
    same(call(uf(text, args=("x",)), V), numpy_ref(ref, V))


def test_where_inside_a_condition_as_numpy():
    x = np.array([1.0, -1, NAN, 3, NAN, -5])
    y = np.array([NAN, -2, 5, NAN, 1, 0.5])
    cases = {
        "where(where(x > y, y, x) > 0, x, y)": lambda: np.where(np.where(x > y, y, x) > 0, x, y),
        "where(where(x > 0, y, x) + 1 >= where(y < 0, x, 2), 1, 0)":
            lambda: np.where(np.where(x > 0, y, x) + 1 >= np.where(y < 0, x, 2), 1.0, 0.0),
        "where(isnan(where(x > 0, y, x)), 1, 0)": lambda: np.where(np.isnan(np.where(x > 0, y, x)), 1.0, 0.0),
        "where(exp2(where(x > 0, where(y > 0, y, -y), x)) > 1.5, 1, 0)":
            lambda: np.where(np.exp2(np.where(x > 0, np.where(y > 0, y, -y), x)) > 1.5, 1.0, 0.0),
        "where(~(where(x > 0, y, x) < 1), 1, 0)": lambda: np.where(~(np.where(x > 0, y, x) < 1), 1.0, 0.0),
        "where(~((x > 0) | (y < 1)), x, y)": lambda: np.where(~((x > 0) | (y < 1)), x, y),
    }
    for text, ref in cases.items():
        same(call(uf(text, args=("x", "y")), x, y), numpy_ref(ref))


@pytest.mark.parametrize("text, value", [("x - x", 0.0), ("x / x", 1.0), ("x * 0", 0.0), ("x == x", True),
                                         ("x * nan + 1", NAN), ("Max(x, x)", None)])
def test_sympy_simplification_happens_before_nan_and_inf(text, value):
    """Deliberate: SymPy simplifies a formula as it is read, so x - x is 0, x/x is 1, x*0 is 0 and
    x == x is True even where x is NaN or inf (NumPy: NaN); x*nan + 1 is nan everywhere."""
    got = call(uf(text, args=("x",)), V)
    want = V if value is None else np.full(V.shape, value)
    np.testing.assert_array_equal(got, want)


def test_square_root_spelled_as_a_power_as_numpy():
    """NumPy's power with exponent 0.5 is its sqrt (nan at -inf, -0.0 at -0.0), not C's pow."""
    for text in ["x**0.5", "x**(1/2)", "sqrt(x)", "pow(x, 0.5)"]:
        same(call(uf(text), V), numpy_ref(np.power, V, 0.5))
    same(call(uf("x**-0.5"), V[np.isfinite(V)]), numpy_ref(np.power, V[np.isfinite(V)], -0.5))


# ---- negative base, fractional power ---------------------------------------------------------
@pytest.mark.parametrize("dtype", FLOATS)
def test_negative_base_fractional_power_is_nan_as_np_power(dtype):
    x = np.array([-8, -1, -0.5, 8, 0, -INF], dtype)
    for text, p in [("x**(1/3)", 1 / 3), ("x**2.5", 2.5), ("x**-0.25", -0.25)]:
        same(call(uf(text), x), numpy_ref(np.power, x, dtype(p)), rtol=1e-6 if dtype == np.float32 else 1e-15)
    y = np.full(x.shape, 1 / 3, dtype)
    same(call(uf("x**y"), x, y), numpy_ref(np.power, x, y), rtol=1e-6 if dtype == np.float32 else 1e-15)


def test_real_cube_root_is_cbrt():
    x = np.array([-8.0, -1e-300, 27.0, -INF, NAN, -0.0])
    same(call(uf("cbrt(x)"), x), np.cbrt(x), rtol=4e-16)  # Numba's cbrt may be 1 ulp off NumPy's


@pytest.mark.parametrize("dtype", COMPLEX)
def test_negative_base_fractional_power_of_complex_is_the_principal_value(dtype):
    x = np.array([-8 + 0j, -8 - 0j, -1 + 0j, 4j, -2.5 + 1e-300j], dtype)
    same(call(uf("x**(1/3)"), x), numpy_ref(np.power, x, dtype(1 / 3)), rtol=1e-5 if dtype == np.complex64 else 1e-14)


def test_negative_constant_to_a_fractional_power_is_complex_as_in_python():
    """Deliberate: a constant is Python arithmetic, (-8)**(1/3) is the complex principal root
    (Python: (1+1.732j)); NumPy's np.power(-8.0, 1/3) would be nan."""
    x = np.array([1.0, 2.0])
    got = call(uf("x + (-8)**(1/3)"), x)
    assert got.dtype == np.complex128
    np.testing.assert_allclose(got, x + (-8) ** (1 / 3), rtol=1e-14)


# ---- complex branch cuts ------------------------------------------------------------------------
ON_CUTS = np.array([-2 + 0j, -2 - 0j, 2 + 0j, 2 - 0j, 2j, -0.0 + 2j, -2j, -0.0 - 2j, -0.5 + 0j, -0.5 - 0j,
                    1.5 + 0j, 1.5 - 0j, -1.5 + 0j, -1.5 - 0j, 0j, -0.0 - 0j, 1e-300 - 3j, 3 + 1e-300j])
CUT_FUNCTIONS = {"sqrt(x)": np.sqrt, "log(x)": np.log, "asin(x)": np.arcsin, "acos(x)": np.arccos, "atan(x)": np.arctan,
                 "asinh(x)": np.arcsinh, "acosh(x)": np.arccosh, "atanh(x)": np.arctanh, "arg(x)": np.angle,
                 "x**0.5": lambda v: np.power(v, 0.5), "log(x)*0.5": lambda v: np.log(v) * 0.5}


def _signs_of_zero(got, want):
    for part in ("real", "imag"):
        g, w = getattr(got, part), getattr(want, part)
        zero = w == 0
        np.testing.assert_array_equal(np.signbit(g[zero]), np.signbit(w[zero]), err_msg=f"sign of zero {part}")


@pytest.mark.parametrize("dtype", COMPLEX)
@pytest.mark.parametrize("text", CUT_FUNCTIONS)
def test_complex_branch_cuts_as_numpy(text, dtype):
    """The side of each cut (the sign of a zero imaginary part) picks the branch, as in NumPy."""
    z = ON_CUTS.astype(dtype)
    got = call(uf(text), z)
    want = numpy_ref(CUT_FUNCTIONS[text], z)
    assert got.dtype == want.dtype
    np.testing.assert_allclose(got, want, rtol=2e-6 if dtype == np.complex64 else 1e-14, atol=1e-300)
    if np.asarray(want).dtype.kind == "c":
        _signs_of_zero(got, want)


@pytest.mark.parametrize("dtype", COMPLEX)
def test_complex_division_by_zero_is_not_finite_as_numpy(dtype):
    """Numba's complex '/' raises for a zero denominator, which a ufunc loop cannot report: it
    returned 0.  Division is NumPy's (np.divide): infinite or NaN, never a silent number."""
    z = np.array([0j, -0j, 1 + 1j], dtype)
    for text in ["1/x", "(x + 2)/x", "x**-2"]:
        got = call(uf(text), z)
        want = numpy_ref({"1/x": lambda v: 1 / v, "(x + 2)/x": lambda v: (v + 2) / v, "x**-2": lambda v: v ** -2.0}[text], z)
        np.testing.assert_array_equal(np.isfinite(got), np.isfinite(want))
        np.testing.assert_allclose(got[2], want[2], rtol=1e-6)


# ---- out= aliasing an input --------------------------------------------------------------------
N = 100_000  # above the parallel target's threshold, so it really splits the work


def _aliasing_cases(x):
    return {
        "out is x": ((x, x[::-1].copy()), x),
        "out is x and y": ((x, x), x),
        "out = x[1:], inputs x[:-1]": ((x[:-1], x[:-1]), x[1:]),
        "out = x[:-1], inputs x[1:]": ((x[1:], x[1:]), x[:-1]),
        "out reversed x": ((x, x), x[::-1]),
        "strided halves": ((x[::2], x[1::2]), x[: (len(x) + 1) // 2]),
    }


@pytest.mark.parametrize("case", list(_aliasing_cases(np.zeros(4))))
def test_out_aliasing_an_input_as_numpy(case, target):
    f = uf("x + 2*y", target=target)
    mine, ref = np.arange(N, dtype=np.float64), np.arange(N, dtype=np.float64)
    (a, b), out = _aliasing_cases(mine)[case]
    (ra, rb), rout = _aliasing_cases(ref)[case]
    result = f(a, b, out=out)
    np.add(ra, 2 * rb, out=rout)
    assert result is out
    np.testing.assert_array_equal(mine, ref)


def test_two_outputs_overlapping_an_input_as_numpy(target):
    f = uf(["x // y", "x % y"], target=target)
    mine, ref = np.arange(1, N + 1, dtype=np.float64), np.arange(1, N + 1, dtype=np.float64)
    f(mine[1:], mine[:-1], out=(mine[:-1], mine[1:]))
    np.divmod(ref[1:], ref[:-1], out=(ref[:-1], ref[1:]))
    np.testing.assert_array_equal(mine, ref)


def test_out_with_where_aliasing_an_input(target):
    f = uf("x * 3 - y", target=target)
    mine = np.linspace(-1, 1, N)
    ref = mine.copy()
    mask = mine > 0
    f(mine, mine[::-1].copy(), out=mine, where=mask)
    np.subtract(ref * 3, ref[::-1].copy(), out=ref, where=mask)
    np.testing.assert_array_equal(mine, ref)
