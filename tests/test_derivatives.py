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
    plain = {sp.Symbol(a): r for a, r in zip(f.args, real, strict=True)}
    ds = [sp.diff(e.xreplace(plain), real[f.args.index(name)], n) for e in exprs]
    fns = [sp.lambdify(real, d, modules="numpy") for d in ds]
    return lambda *xs: tuple(np.broadcast_to(fn(*xs), np.broadcast(*xs).shape) for fn in fns)


def _sample(domain, args, size=64, dtype=np.float64):
    return [RNG.uniform(*domain[a], size).astype(dtype) if a in domain else np.ones(size, dtype) for a in args]


@pytest.mark.parametrize("formula,domain", UFUNC_CASES, ids=[c[0] for c in UFUNC_CASES])
def test_ufunc_diff_against_sympy(formula, domain, target):
    f = ug.ufunc(formula, target=target)
    xs = _sample(domain, f.args)
    for name in f.args:
        d = f.diff(name)
        assert d.target == target and d.args == f.args
        want = _reference(f, name)(*xs)[0]
        np.testing.assert_allclose(d(*xs), want, rtol=1e-10, atol=1e-12, err_msg=f"d/d{name}")


@pytest.mark.parametrize("formula,domain", UFUNC_CASES[:6], ids=[c[0] for c in UFUNC_CASES[:6]])
def test_ufunc_grad_against_sympy(formula, domain):
    f = ug.ufunc(formula)
    xs = _sample(domain, f.args)
    got = f.grad()(*xs)
    assert isinstance(got, tuple) and len(got) == f.nin
    for name, g in zip(f.args, got, strict=True):
        np.testing.assert_allclose(g, _reference(f, name)(*xs)[0], rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("formula,n", [("sin(x)**2*y", 2), ("exp(-x**2)", 3), ("x**5", 4)])
def test_higher_derivatives(formula, n):
    f = ug.ufunc(formula)
    xs = _sample({"x": (-2, 2), "y": (-2, 2)}, f.args)
    np.testing.assert_allclose(f.diff("x", n)(*xs), _reference(f, "x", n)(*xs)[0], rtol=1e-10, atol=1e-10)


def test_float32_derivative_stays_float32():
    f = ug.ufunc("sin(x)*y", signatures="float32(float32, float32)")
    d = f.diff("x")
    assert d.signatures == ["float32(float32, float32)"]
    x = np.linspace(-2, 2, 9, dtype=np.float32)
    got = d(x, np.float32(3))
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, 3 * np.cos(x.astype(np.float64)), rtol=1e-6, atol=1e-6)


def test_several_outputs_and_unused_argument():
    f = ug.ufunc(["x*y", "sin(x)"], args=("x", "y", "z"))
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
        d = ug.ufunc(formula).diff("x")
        np.testing.assert_allclose(d(x), 1 / (3 * np.cbrt(x) ** 2), rtol=1e-12)
    chain = ug.ufunc("sin(cbrt(x))").diff("x")(x)
    np.testing.assert_allclose(chain, np.cos(np.cbrt(x)) / (3 * np.cbrt(x) ** 2), rtol=1e-12)


@pytest.mark.parametrize("formula", ["floor(x)*y", "ceiling(x**2) + y", "sign(x)*y"])
def test_step_functions_have_zero_derivative_away_from_jumps(formula):
    """SymPy answers DiracDelta or an unevaluated Derivative; between the jumps it is 0."""
    f = ug.ufunc(formula)
    x = np.array([-1.7, -0.3, 0.4, 2.2])
    np.testing.assert_array_equal(f.diff("x")(x, 2.0), np.zeros(4))


def test_max_derivative_at_ties_is_half():
    d = ug.ufunc("Max(x, y)").diff("x")
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
        ug.ufunc(formula).diff(name)


def test_grad_needs_one_output():
    with pytest.raises(ug.FormulaError, match="one output"):
        ug.ufunc(["x", "y"]).grad()


def test_derivative_pickles():
    d = ug.ufunc("x**3*y", target="parallel").diff("x")
    e = pickle.loads(pickle.dumps(d))
    assert e.target == "parallel"
    np.testing.assert_allclose(e(np.array([2.0]), 5.0), [60.0])


# ---- gufuncs ----------------------------------------------------------------------------------------
N = 6


def _elements(name, n=N):
    return [sp.Symbol(f"{name}{k}", real=True) for k in range(n)]


def _lambdify(symbols, expr):
    fn = sp.lambdify(symbols, expr, modules="numpy")
    return lambda *cols: np.broadcast_to(fn(*cols), np.broadcast(*cols).shape)


def test_horner_derivative_wrt_scalar(target):
    c, x = _elements("c"), sp.Symbol("x", real=True)
    poly = sum(ck * x ** k for k, ck in enumerate(c))
    cs, xs = RNG.normal(size=(5, N)), RNG.uniform(-1.5, 1.5, 5)
    g = ug.gufunc("sum(c[k]*x**k, k)", target=target)
    for order in (1, 2):
        d = g.diff("x", order)
        assert d.layout == "(n),()->()" and d.target == target
        want = _lambdify(c + [x], sp.diff(poly, x, order))(*cs.T, xs)
        np.testing.assert_allclose(d(cs, xs), want, rtol=1e-10)


def test_softmax_temperature_derivative(target):
    """d softmax(x/T)/dT; the stabilising max is differentiated too and cancels."""
    x, T = _elements("x"), sp.Symbol("T", positive=True)
    den = sum(sp.exp(xk / T) for xk in x)
    refs = [_lambdify(x + [T], sp.diff(sp.exp(xi / T) / den, T)) for xi in x]
    g = ug.gufunc("exp(x[i]/T - max(x[j]/T, j)) / sum(exp(x[k]/T - max(x[j]/T, j)), k)", target=target)
    d = g.diff("T")
    assert d.layout == "(),(n)->(n)"
    xs, Ts = RNG.normal(scale=3, size=(4, N)), RNG.uniform(0.5, 2.0, 4)
    want = np.stack([r(*xs.T, Ts) for r in refs], axis=-1)
    np.testing.assert_allclose(d(Ts, xs), want, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("formula,reference", [
    ("sqrt(sum((a*x[i])**2, i))", lambda x, a: sp.sqrt(sum((a * xk) ** 2 for xk in x))),
    ("max(a*x[i], i)", lambda x, a: sp.Max(*[a * xk for xk in x])),
    ("min(a*x[i] + a**2, i)", lambda x, a: sp.Min(*[a * xk + a ** 2 for xk in x])),
    ("prod(x[i] + a, i)", lambda x, a: sp.Mul(*[xk + a for xk in x])),
    ("log(sum(exp(a*x[i]), i))", lambda x, a: sp.log(sum(sp.exp(a * xk) for xk in x))),
])
def test_reduction_derivative_wrt_scalar(formula, reference):
    """SymPy's derivative of Max/Min of many terms does not lambdify: evaluate it by substitution."""
    x, a = _elements("x"), sp.Symbol("a", real=True)
    deriv = sp.diff(reference(x, a), a)
    xs, As = RNG.normal(size=(7, N)), RNG.uniform(-2, 2, 7)
    want = [float(deriv.evalf(30, subs=dict(zip(x + [a], [*row, av], strict=True)))) for row, av in zip(xs, As, strict=True)]
    d = ug.gufunc(formula).diff("a")
    np.testing.assert_allclose(d(As, xs), want, rtol=1e-9, atol=1e-12)


def test_product_derivative_with_a_zero_factor():
    """The product rule is applied without dividing by the factors."""
    d = ug.gufunc("prod(x[i] + a, i)").diff("a")
    x = np.array([-1.0, 2.0, 3.0, -1.0])
    assert d(1.0, x) == 0.0  # two zero factors
    x[3] = 5.0
    assert d(1.0, x) == pytest.approx(3.0 * 4.0 * 6.0)  # only the zero factor's term survives


def test_elementwise_array_derivative(target):
    x, y, a = _elements("x"), _elements("y", 4), sp.Symbol("a", real=True)
    g = ug.gufunc("a*x[i]**2 + sin(x[i])*sum(y[j], j)", target=target)
    xs, ys, As = RNG.normal(size=(3, N)), RNG.normal(size=(3, 4)), RNG.normal(size=3)
    for name, wrt in (("x", x), ("a", [a] * N)):
        refs = [_lambdify(x + y + [a], sp.diff(a * xi ** 2 + sp.sin(xi) * sum(y), w)) for xi, w in zip(x, wrt, strict=True)]
        want = np.stack([r(*xs.T, *ys.T, As) for r in refs], axis=-1)
        d = g.diff(name)
        assert d.layout == g.layout == "(),(n),(m)->(n)"
        np.testing.assert_allclose(d(As, xs, ys), want, rtol=1e-12, atol=1e-14)


def test_outer_product_derivative_keeps_the_layout():
    d = ug.gufunc("x[i]*y[j]**2").diff("y")
    assert d.layout == "(n),(m)->(n,m)"
    xs, ys = RNG.normal(size=3), RNG.normal(size=4)
    np.testing.assert_allclose(d(xs, ys), 2 * np.outer(xs, ys), rtol=1e-14)


def test_gufunc_grad():
    g = ug.gufunc("a*x[i]**2")
    grad = g.grad()
    assert grad.layout == "(),(n)->(n),(n)" and grad.nout == 2
    xs = RNG.normal(size=5)
    da, dx = grad(1.5, xs)
    np.testing.assert_allclose(da, xs ** 2, rtol=1e-14)
    np.testing.assert_allclose(dx, 3.0 * xs, rtol=1e-14)


def test_gufunc_derivative_keeps_signatures_and_dtype():
    g = ug.gufunc("sum(c[k]*x**k, k)", signatures="float32(float32, float32)")
    d = g.diff("x")
    assert d.signatures == ["float32(float32, float32)"]
    c = np.array([1.0, 2.0, 3.0], dtype=np.float32)
    got = d(c, np.float32(0.5))
    assert got.dtype == np.float32 and got == pytest.approx(2.0 + 6.0 * 0.5)


def test_gufunc_derivative_pickles():
    d = ug.gufunc("prod(x[i] + a, i)", target="parallel").diff("a")
    e = pickle.loads(pickle.dumps(d))
    assert e.layout == d.layout and e.target == "parallel"
    x = np.array([-0.5, 2.5, 3.5])
    np.testing.assert_allclose(e(0.0, x), d(0.0, x))
    np.testing.assert_allclose(e(0.0, x), 2.5 * 3.5 - 0.5 * 3.5 - 0.5 * 2.5)


GRADIENT_CASES = [  # scalar output; reference: the same in plain SymPy over elements x0..x5
    ("sqrt(sum(x[i]**2, i))", lambda x: sp.sqrt(sum(xk ** 2 for xk in x))),
    ("max(x[j], j) + log(sum(exp(x[i] - max(x[j], j)), i))", lambda x: sp.log(sum(sp.exp(xk) for xk in x))),
    ("sum((x[i] - sum(x[j], j)/sum(1, j))**2, i) / sum(1, i)",
     lambda x: sum((xk - sum(x) / N) ** 2 for xk in x) / N),
    ("sum((x[i+1] - x[i])**2, i)", lambda x: sum((x[(k + 1) % N] - x[k]) ** 2 for k in range(N))),
    ("prod(x[i], i)", lambda x: sp.Mul(*x)),
    ("max(x[i]**2, i)", lambda x: sp.Max(*[xk ** 2 for xk in x])),
]


@pytest.mark.parametrize("formula,reference", GRADIENT_CASES, ids=[c[0] for c in GRADIENT_CASES])
def test_gradient_of_scalar_output(formula, reference, target):
    """d out / d x[k] for a scalar output: an output with x's core dimensions."""
    x = _elements("x")
    expr = reference(x)
    xs = RNG.normal(size=(4, N))
    want = np.stack([[float(sp.diff(expr, xk).evalf(30, subs=dict(zip(x, row, strict=True)))) for xk in x]
                     for row in xs])
    d = ug.gufunc(formula, target=target).diff("x")
    assert d.layout == "(n)->(n)"
    np.testing.assert_allclose(d(xs), want, rtol=1e-9, atol=1e-12)


def test_logsumexp_gradient_is_softmax_in_linear_time():
    d = ug.gufunc("max(x[j], j) + log(sum(exp(x[i] - max(x[j], j)), i))").diff("x")
    body = d.source.split("def kernel", 1)[1]
    assert body.count("for ") == 4 and "    for i" not in body.split("for k", 1)[1]  # no loop inside the k loop
    x = np.array([1.0, 3.0, 3.0, 2.0])  # tied maxima: the max's derivative cancels
    e = np.exp(x - 3.0)
    np.testing.assert_allclose(d(x), e / e.sum(), rtol=1e-14)


def test_gradients_of_dot_and_horner():
    dot = ug.gufunc("sum(x[i]*y[i], i)").grad()
    assert dot.layout == "(n),(n)->(n),(n)"
    xs, ys = RNG.normal(size=5), RNG.normal(size=5)
    for got, want in zip(dot(xs, ys), (ys, xs), strict=True):
        np.testing.assert_array_equal(got, want)
    horner = ug.gufunc("sum(c[k]*x**k, k)").grad()
    assert horner.layout == "(n),()->(n),()"
    dc, dx = horner(np.array([1.0, 2.0, 3.0]), 2.0)
    np.testing.assert_allclose(dc, [1.0, 2.0, 4.0])
    assert dx == pytest.approx(2.0 + 2 * 3.0 * 2.0)


def test_matrix_gradient_has_two_new_dimensions():
    d = ug.gufunc("sum(sum(A[i,j]*x[i]*x[j], j), i)").diff("A")
    assert d.layout == "(n,n),(n)->(n,n)"
    xs = RNG.normal(size=3)
    np.testing.assert_allclose(d(np.eye(3), xs), np.outer(xs, xs), rtol=1e-14)


@pytest.mark.parametrize("formula,name,match", [
    ("sum(x[j], j) * x[i]", "x", "reduced over index j"),
    ("x[i] / sum(x[j], j)", "x", "reduced over index j"),
    ("x[i+1] - x[i]", "x", "shifted"),
    ("x[i]*x[j]", "x", "as x\\[i\\] and as x\\[j\\]"),
    ("sum(x[i], i) > 0", "x", "condition"),
    ("x[i]*a", "b", "not an argument"),
])
def test_gufunc_derivative_errors(formula, name, match):
    with pytest.raises(ug.FormulaError, match=match):
        ug.gufunc(formula).diff(name)
