"""@ug.vectorize: Python functions traced once with symbols, compiled as ug.ufunc, checked against NumPy."""
import inspect
import math
import os
import pickle

import numpy as np
import pytest
import sympy as sp

import ufuncgen as ug
from ufuncgen.elementwise import UFunc

RNG = np.random.default_rng(12345)
X = RNG.uniform(-2.0, 2.0, 64)
Y = RNG.uniform(0.5, 3.0, 64)


# ---- compiling what the function computes ----------------------------------------------------
class TestVectorize:
    """One behaviour set, run for every CPU-side target (the ``target`` fixture: cpu, parallel)."""

    def test_bare_decorator_matches_numpy(self, target):
        def f(x, y):
            return ug.sin(x) * y + 1

        uf = ug.vectorize(target=target)(f)
        # atol: sin is within a few ulp (vector math), a larger relative error where sin(x)*y + 1 is near 0
        np.testing.assert_allclose(uf(X, Y), np.sin(X) * Y + 1, rtol=1e-15, atol=1e-15)
        assert uf.target == target

    @pytest.mark.parametrize("dtype", [np.float32, np.float64])
    def test_signatures_compile_at_once(self, target, dtype):
        name = np.dtype(dtype).name
        sig = f"{name}({name}, {name})"

        @ug.vectorize([sig], target=target)
        def g(x, y):
            return ug.exp(-x * x) / y

        assert g.signatures == [sig]
        x, y = X.astype(dtype), Y.astype(dtype)
        out = g(x, y)
        assert out.dtype == dtype
        np.testing.assert_allclose(out, np.exp(-x * x) / y, rtol=1e-6 if dtype == np.float32 else 1e-15)

    def test_tuple_return_gives_several_outputs(self, target):
        @ug.vectorize(target=target)
        def polar(x, y):
            return ug.hypot(x, y), ug.arctan2(y, x)

        assert polar.nout == 2
        r, theta = polar(X, Y)
        np.testing.assert_allclose(r, np.hypot(X, Y), rtol=1e-15)
        np.testing.assert_allclose(theta, np.arctan2(Y, X), rtol=1e-15)


def test_bare_form_without_parentheses():
    @ug.vectorize
    def f(x, y):
        return x * y + 2.5

    assert isinstance(f, UFunc)
    np.testing.assert_allclose(f(X, Y), X * Y + 2.5, rtol=1e-15)


def test_positional_signature_string_and_keyword_forms():
    @ug.vectorize("float64(float64)")
    def a(x):
        return ug.sqrt(ug.abs(x))

    @ug.vectorize(signatures=["float64(float64)"], fastmath=False)
    def b(x):
        return ug.sqrt(ug.abs(x))

    assert a.signatures == b.signatures == ["float64(float64)"]
    np.testing.assert_allclose(a(X), np.sqrt(np.abs(X)), rtol=1e-15)
    np.testing.assert_allclose(b(X), np.sqrt(np.abs(X)), rtol=1e-15)


def test_result_is_the_ufunc_that_ug_ufunc_returns():
    @ug.vectorize
    def f(x, y):
        """Scaled sine."""
        return ug.sin(x) * y + 1

    x, y = sp.symbols("x y")
    plain = ug.ufunc("sin(x)*y + 1")
    assert type(f) is type(plain)
    assert f.expr == sp.sin(x) * y + 1 == plain.expr
    assert f.args == ("x", "y")
    assert f.source == plain.source and "def " in f.source
    assert f.__name__ == "f" and f.__doc__ == "Scaled sine." and f.__wrapped__.__name__ == "f"
    assert f.diff("x").expr == sp.cos(x) * y
    g = pickle.loads(pickle.dumps(f))
    np.testing.assert_allclose(g(X, Y), np.sin(X) * Y + 1, rtol=1e-15, atol=1e-15)  # atol: as above


def test_argument_order_is_the_parameter_order():
    @ug.vectorize
    def f(y, x):
        return y - 2 * x

    assert f.args == ("y", "x")
    np.testing.assert_allclose(f(Y, X), Y - 2 * X, rtol=1e-15)


def test_conditions_with_where_and_operators():
    @ug.vectorize
    def f(x, y):
        inside = (x > -1) & (x < 1) | ~(y < 2)
        return ug.where(inside, x * y, ug.max(x, y) - ug.min(x, 0.0))

    inside = ((X > -1) & (X < 1)) | ~(Y < 2)
    expected = np.where(inside, X * Y, np.maximum(X, Y) - np.minimum(X, 0.0))
    np.testing.assert_allclose(f(X, Y), expected, rtol=1e-15)


def test_numpy_sympy_math_and_closure_constants_trace():
    scale = np.float64(0.5)
    offset = 3

    @ug.vectorize
    def f(x, y):
        return (np.sin(x) + sp.exp(-y) + scale * np.float32(2.0) * x ** 2 + offset
                + math.floor(y) + abs(x) + ug.pi + np.hypot(x, y))

    expected = (np.sin(X) + np.exp(-Y) + 0.5 * 2.0 * X ** 2 + 3 + np.floor(Y) + np.abs(X) + np.pi
                + np.hypot(X, Y))
    np.testing.assert_allclose(f(X, Y), expected, rtol=1e-14)


def test_keyword_only_parameter_with_default_is_a_constant():
    def f(x, *, k=2.0):
        return k * x

    uf = ug.vectorize(f)
    assert uf.args == ("x",)
    np.testing.assert_allclose(uf(X), 2.0 * X, rtol=1e-15)


def test_boolean_output():
    @ug.vectorize
    def f(x, y):
        return (x > 0) & (y > 1)

    out = f(X, Y)
    assert out.dtype == np.bool_
    np.testing.assert_array_equal(out, (X > 0) & (Y > 1))


# ---- Python control flow on traced values ----------------------------------------------------
def uses_if(x, y):
    if x > 0:  # flow
        return x
    return y


def uses_and(x, y):
    return x > 0 and y < 1  # flow


def uses_or(x, y):
    return (x > 0) or (y < 1)  # flow


def uses_not(x, y):
    return not (x > y)  # flow


def uses_while(x, y):
    while x < y:  # flow
        x = x + 1
    return x


def uses_bool(x, y):
    flag = bool(x)  # flow
    return x + flag


def uses_builtin_max(x, y):
    return max(x, y)  # flow


def uses_sympy_relational(x, y):
    if sp.sin(x) > y:  # flow
        return x
    return y


FLOW = {uses_if: "where(", uses_and: "&", uses_or: "|", uses_not: "~", uses_while: "loop",
        uses_bool: "bool()", uses_builtin_max: "ug.max", uses_sympy_relational: "where("}


def _marked_line(func, marker="# flow"):
    lines, first = inspect.getsourcelines(func)
    return first + next(i for i, line in enumerate(lines) if marker in line)


@pytest.mark.parametrize("func", list(FLOW), ids=[f.__name__ for f in FLOW])
def test_control_flow_on_traced_value_names_file_line_and_fix(func):
    with pytest.raises(ug.FormulaError) as info:
        ug.vectorize(func)
    message = str(info.value)
    assert f"{os.path.basename(__file__)}:{_marked_line(func)}:" in message
    assert f"in {func.__name__}()" in message
    assert FLOW[func] in message
    assert "# flow" in message                   # the offending source line is quoted
    assert info.value.lineno == _marked_line(func)


def test_math_function_on_traced_value_suggests_ug_functions():
    def f(x):
        return math.sin(x)

    with pytest.raises(ug.FormulaError, match=r"ug\.sin"):
        ug.vectorize(f)


@pytest.mark.parametrize("body,match", [
    (lambda x: x[0], "only allowed in gufuncs"),
    (lambda x: [1.0, 2.0][x], "index"),
    (lambda x: x ^ 2, r"write x\*\*2"),
    (lambda x: x > 0 & x < 1, "binds tighter"),
    (lambda x: (x > 0) + 1, "condition cannot be used in arithmetic"),
    (lambda x: None, "returned None"),
    (lambda x: "x + 1", "returned str"),
    (lambda x: sp.besselj(0, x), "besselj is not supported"),
    (lambda x: np.arange(3) * x, "NumPy array"),
])
def test_bad_bodies_raise_formula_error(body, match):
    def f(x):
        return body(x)

    with pytest.raises(ug.FormulaError, match=match):
        ug.vectorize(f)


@pytest.mark.parametrize("func,match", [
    (lambda *xs: xs[0], r"\*args"),
    (lambda x, y=1.0: x, "default value"),
    (lambda x, *, k: x, "keyword-only"),
    (lambda: 1.0, "no arguments"),
])
def test_bad_parameters(func, match):
    with pytest.raises(ug.FormulaError, match=match):
        ug.vectorize(func)


def test_bad_decorator_arguments():
    with pytest.raises(TypeError, match="signatures twice"):
        ug.vectorize(["float64(float64)"], signatures=["float64(float64)"])
    with pytest.raises(TypeError, match="unknown option"):
        ug.vectorize(fastmth=True)(lambda x: x)
    with pytest.raises(ValueError, match="target"):
        ug.vectorize(target="gpu")(lambda x: x)
    with pytest.raises(ug.SignatureError):
        ug.vectorize("float64(float64, float64)")(lambda x: x)


def test_ug_ufunc_stays_the_function_after_decorating():
    import sys

    ug.vectorize(lambda x: x + 1)          # imports the submodule that defines ufunc
    assert ug.ufunc is sys.modules["ufuncgen.elementwise"].ufunc
    np.testing.assert_allclose(ug.ufunc("x + 1")(X), X + 1)
