"""Compiled derivatives (``diff``/``grad``) of ufuncs and gufuncs.

The reference is SymPy's own ``diff`` of the expression with real symbols, evaluated with NumPy
through ``sympy.lambdify``; for gufuncs, the same on the expression written out element by element
in plain SymPy (no index notation), so the reference shares nothing with our code generation.
"""
import pickle

import numpy as np
import pytest
import sympy as sp

import ufuncgen as ug
from ufuncgen.ufunc import ufunc  # not ug.ufunc: see test_gufunc on lazy names shadowed by submodules

RNG = np.random.default_rng(20240611)

# formula, {argument: sampling range}
UFUNC_CASES = [
    ("sin(x)*y + exp(-x*y)", {"x": (-2, 2), "y": (-2, 2)}),
    ("log(x)/y", {"x": (0.5, 3), "y": (0.5, 3)}),
    ("sqrt(x**2 + y**2)", {"x": (0.5, 3), "y": (-3, -0.5)}),
    ("atan2(y, x)", {"x": (0.5, 3), "y": (-3, 3)}),
    ("x**y", {"x": (0.5, 3), "y": (-2, 2)}),
    ("hypot(x, y)", {"x": (-3, 3), "y": (0.5, 3)}),
    ("tanh(x)*cosh(y)", {"x": (-2, 2), "y": (-2, 2)}),
    ("erf(x) + erfc(x*y)", {"x": (-2, 2), "y": (-2, 2)}),
    ("log1p(x) + expm1(y)", {"x": (-0.5, 3), "y": (-2, 2)}),
    ("exp2(x)*log2(y) + log10(y)", {"x": (-2, 2), "y": (0.5, 3)}),
    ("asin(x)*acos(y)", {"x": (-0.9, 0.9), "y": (-0.9, 0.9)}),
    ("asinh(x) + acosh(y) + atanh(x/2)", {"x": (-1.5, 1.5), "y": (1.2, 4)}),
    ("where(x > 0, x**2, -x) * y", {"x": (-2, 2), "y": (-2, 2)}),
    ("abs(x)*y", {"x": (-2, 2), "y": (-2, 2)}),
    ("Max(x, y)", {"x": (-2, 2), "y": (-2, 2)}),
    ("Min(x, 2*y, 1)", {"x": (-2, 2), "y": (-2, 2)}),
    ("1/(1 + exp(-x))", {"x": (-5, 5)}),
    ("x**3 - 2*x*y + 5", {"x": (-2, 2), "y": (-2, 2)}),
    ("tan(x)/cos(y)", {"x": (-1.2, 1.2), "y": (-1.2, 1.2)}),
]


def _reference(f, name, n=1):
    """SymPy's derivative of f.expr with real symbols, lambdified with NumPy."""
    real = [sp.Symbol(a, real=True) for a in f.args]
    exprs = f.expr if isinstance(f.expr, tuple) else (f.expr,)
    plain = {sp.Symbol(a): r for a, r in zip(f.args, real)}
    ds = [sp.diff(e.xreplace(plain), real[f.args.index(name)], n) for e in exprs]
    fns = [sp.lambdify(real, d, modules="numpy") for d in ds]
    return lambda *xs: tuple(np.broadcast_to(fn(*xs), np.broadcast(*xs).shape) for fn in fns)


def _sample(domain, args, size=64, dtype=np.float64):
    return [RNG.uniform(*domain[a], size).astype(dtype) if a in domain else np.ones(size, dtype) for a in args]


@pytest.mark.parametrize("formula,domain", UFUNC_CASES, ids=[c[0] for c in UFUNC_CASES])
def test_ufunc_diff_against_sympy(formula, domain, target):
    f = ufunc(formula, target=target)
    xs = _sample(domain, f.args)
    for name in f.args:
        d = f.diff(name)
        assert d.target == target and d.args == f.args
        want = _reference(f, name)(*xs)[0]
        np.testing.assert_allclose(d(*xs), want, rtol=1e-10, atol=1e-12, err_msg=f"d/d{name}")


@pytest.mark.parametrize("formula,domain", UFUNC_CASES[:6], ids=[c[0] for c in UFUNC_CASES[:6]])
def test_ufunc_grad_against_sympy(formula, domain):
    f = ufunc(formula)
    xs = _sample(domain, f.args)
    got = f.grad()(*xs)
    assert isinstance(got, tuple) and len(got) == f.nin
    for name, g in zip(f.args, got):
        np.testing.assert_allclose(g, _reference(f, name)(*xs)[0], rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("formula,n", [("sin(x)**2*y", 2), ("exp(-x**2)", 3), ("x**5", 4)])
def test_higher_derivatives(formula, n):
    f = ufunc(formula)
    xs = _sample({"x": (-2, 2), "y": (-2, 2)}, f.args)
    np.testing.assert_allclose(f.diff("x", n)(*xs), _reference(f, "x", n)(*xs)[0], rtol=1e-10, atol=1e-10)


def test_float32_derivative_stays_float32():
    f = ufunc("sin(x)*y", signatures="float32(float32, float32)")
    d = f.diff("x")
    assert d.signatures == ["float32(float32, float32)"]
    x = np.linspace(-2, 2, 9, dtype=np.float32)
    got = d(x, np.float32(3))
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, 3 * np.cos(x.astype(np.float64)), rtol=1e-6, atol=1e-6)


def test_several_outputs_and_unused_argument():
    f = ufunc(["x*y", "sin(x)"], args=("x", "y", "z"))
    x, y, z = _sample({"x": (-2, 2), "y": (-2, 2), "z": (-2, 2)}, f.args)
    dx = f.diff("x")(x, y, z)
    np.testing.assert_allclose(dx[0], y)
    np.testing.assert_allclose(dx[1], np.cos(x))
    dz = f.diff("z")(x, y, z)
    assert all(np.shape(a) == x.shape and not np.any(a) for a in dz)


def test_cube_root_derivative_is_finite_below_zero():
    """SymPy's x**(-2/3)/3 is nan for x < 0 in NumPy; cbrt is the real cube root, so its derivative
    is 1/(3*cbrt(x)**2) there (x**(1/3) compiles to the real cube root too)."""
    x = np.array([-8.0, -1.0, 0.5, 27.0])
    for formula in ("cbrt(x)", "x**(1/3)"):
        d = ufunc(formula).diff("x")
        np.testing.assert_allclose(d(x), 1 / (3 * np.cbrt(x) ** 2), rtol=1e-12)
    chain = ufunc("sin(cbrt(x))").diff("x")(x)
    np.testing.assert_allclose(chain, np.cos(np.cbrt(x)) / (3 * np.cbrt(x) ** 2), rtol=1e-12)


@pytest.mark.parametrize("formula", ["floor(x)*y", "ceiling(x**2) + y", "sign(x)*y"])
def test_step_functions_have_zero_derivative_away_from_jumps(formula):
    """SymPy answers DiracDelta or an unevaluated Derivative; between the jumps it is 0."""
    f = ufunc(formula)
    x = np.array([-1.7, -0.3, 0.4, 2.2])
    np.testing.assert_array_equal(f.diff("x")(x, 2.0), np.zeros(4))


def test_max_derivative_at_ties_is_half():
    d = ufunc("Max(x, y)").diff("x")
    np.testing.assert_array_equal(d(np.array([1.0, 2.0, 3.0]), 2.0), np.heaviside([-1.0, 0.0, 1.0], 0.5))


@pytest.mark.parametrize("formula,name,match", [
    ("x > 0", "x", "condition"),
    ("isfinite(x)", "x", "condition"),
    ("gamma(x)", "x", "polygamma"),
    ("fmod(x, y)", "y", "no closed form"),
    ("x*y", "q", "not an argument"),
])
def test_derivative_errors(formula, name, match):
    with pytest.raises(ug.FormulaError, match=match):
        ufunc(formula).diff(name)


def test_grad_needs_one_output():
    with pytest.raises(ug.FormulaError, match="one output"):
        ufunc(["x", "y"]).grad()


def test_derivative_pickles():
    d = ufunc("x**3*y", target="parallel").diff("x")
    e = pickle.loads(pickle.dumps(d))
    assert e.target == "parallel"
    np.testing.assert_allclose(e(np.array([2.0]), 5.0), [60.0])
