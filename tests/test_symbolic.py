"""ug.sin, ug.where, ug.sum, ...: the math functions of traced code (ufuncgen.symbolic)."""
import importlib

import numpy as np
import pytest
import sympy as sp

import ufuncgen as ug
from ufuncgen import symbolic
from ufuncgen.functions import BOOL, FUNCTIONS
from ufuncgen.parse import parse_formula
from ufuncgen.tracing import Traced

SPELLINGS = [(fn, name) for fn in FUNCTIONS for name in (fn.name, *fn.aliases)]
FIXED_ARITY = [(fn, name) for fn, name in SPELLINGS if fn.nargs and fn.name not in ("where",)]


def _symbols(n):
    return sp.symbols(f"x0:{n}")


def _has_module(name):
    try:
        importlib.import_module(name)
    except ImportError:
        return False
    return True


needs_indexing = pytest.mark.skipif(
    not (_has_module("ufuncgen.indexing") and _has_module("ufuncgen.generalized")),
    reason="index reductions need ufuncgen.indexing and ufuncgen.generalized (the gufunc branch), not merged yet")


@pytest.mark.parametrize("fn,name", SPELLINGS, ids=[n for _, n in SPELLINGS])
def test_every_table_spelling_is_exported(fn, name):
    assert name in symbolic.__all__
    assert getattr(ug, name) is getattr(symbolic, name)
    assert callable(getattr(ug, name))


@pytest.mark.parametrize("fn,name", FIXED_ARITY, ids=[n for _, n in FIXED_ARITY])
def test_traced_spelling_builds_the_node_of_the_formula_text(fn, name):
    n = fn.nargs[0]
    xs = _symbols(n)
    text = f"{name}({', '.join(map(str, xs))})"
    assert getattr(ug, name)(*xs) == parse_formula(text)   # ug.max/ug.min: elementwise without an index


@pytest.mark.parametrize("fn,name", [(f, n) for f, n in FIXED_ARITY if f.reference is not None and f.rule != BOOL],
                         ids=[n for f, n in FIXED_ARITY if f.reference is not None and f.rule != BOOL])
def test_value_matches_numpy(fn, name):
    n = fn.nargs[0]
    lo, hi = fn.domain
    # points in the upper part of the sample domain, where SymPy's and NumPy's branches agree
    points = [hi - (hi - lo) * (0.2 + 0.13 * k) for k in range(n)]
    # expand_func: SymPy evaluates the C99 functions of sympy.codegen (cbrt, log1p, ...) once expanded
    value = complex(sp.N(sp.expand_func(getattr(ug, name)(*[sp.Float(p) for p in points])), 17))
    expected = complex(np.asarray(fn.reference(*points)))
    assert value == pytest.approx(expected, rel=1e-12, abs=1e-14)


def test_traced_in_traced_out_sympy_in_sympy_out():
    x = sp.Symbol("x")
    assert isinstance(ug.sin(Traced(x)), Traced)
    assert ug.sin(Traced(x)).expr == sp.sin(x)
    out = ug.exp(x)
    assert isinstance(out, sp.Basic) and out == sp.exp(x)
    assert ug.hypot(3.0, 4.0) is not None and float(sp.N(ug.hypot(3.0, 4.0))) == pytest.approx(np.hypot(3.0, 4.0))


def test_where_and_piecewise():
    x, y = sp.symbols("x y")
    assert ug.where(x > 0, x, y) == sp.Piecewise((x, x > 0), (y, True))
    assert ug.Piecewise((x, x > 1), (0, True)) == sp.Piecewise((x, x > 1), (0, True))
    traced = ug.where(Traced(x) > 0, Traced(x), 0)
    assert isinstance(traced, Traced)
    assert traced.expr == sp.Piecewise((x, x > 0), (0, True))


@pytest.mark.parametrize("call,match", [
    (lambda x: ug.where(x, 1, 0), "first argument must be a condition"),
    (lambda x: ug.sin(x > 0), "condition is not a number"),
    (lambda x: ug.sin(x, x), r"sin\(\) takes 1 argument"),
    (lambda x: ug.atan2(x), r"atan2\(\) takes 2 argument"),
    (lambda x: ug.Piecewise(x), "pairs"),
    (lambda x: ug.sin(np.ones(3)), "NumPy array"),
    (lambda x: ug.exp("x"), "str cannot be used"),
    (lambda x: ug.sum(x, x), r"sum\(expr, i\) sums over an index"),
    (lambda x: ug.prod(x, 2), r"prod\(expr, i\)"),
])
def test_bad_calls_raise_formula_error_with_advice(call, match):
    with pytest.raises(ug.FormulaError, match=match) as info:
        call(Traced(sp.Symbol("x")))
    assert "test_symbolic.py" in str(info.value)     # points at the calling line


def test_sum_prod_max_min_of_values():
    x, y, z = sp.symbols("x y z")
    assert ug.sum([x, y, z]) == x + y + z
    assert ug.prod((x, y, z)) == x * y * z
    assert ug.max(x, y) == sp.Max(x, y)
    assert ug.min(x, y, z) == sp.Min(x, y, z)
    assert ug.max([x, y]) == sp.Max(x, y)
    assert isinstance(ug.max(Traced(x), 1.0), Traced)
    with pytest.raises(ug.FormulaError, match="empty"):
        ug.sum([])


def test_constants_are_sympy_constants():
    assert ug.pi is sp.pi and ug.e is sp.E and ug.inf is sp.oo and ug.nan is sp.nan
    assert float(sp.N(ug.pi)) == pytest.approx(np.pi)
    assert isinstance(ug.pi * Traced(sp.Symbol("x")), Traced)   # SymPy defers to the traced operand


def test_unknown_attribute_is_attribute_error():
    with pytest.raises(AttributeError, match="no attribute 'sinn'"):
        _ = ug.sinn


@needs_indexing
def test_sum_with_index_reduces_in_a_gufunc():
    i = ug.Idx("i")

    @ug.guvectorize(layout="(n)->()")
    def norm(x):
        return ug.sqrt(ug.sum(x[i] ** 2, i))

    rng = np.random.default_rng(1)
    a = rng.normal(size=(5, 7))
    np.testing.assert_allclose(norm(a), np.linalg.norm(a, axis=-1), rtol=1e-12)


@needs_indexing
@pytest.mark.parametrize("reduction,reference", [
    (lambda e, i: ug.sum(e, i), np.sum),
    (lambda e, i: ug.prod(e, i), np.prod),
    (lambda e, i: ug.max(e, i), np.max),
    (lambda e, i: ug.min(e, i), np.min),
], ids=["sum", "prod", "max", "min"])
def test_reductions_over_an_index_match_numpy(reduction, reference):
    i = ug.Idx("i")

    @ug.guvectorize(layout="(n)->()")
    def reduce(x):
        return reduction(x[i], i)

    a = np.random.default_rng(2).uniform(0.5, 1.5, size=(4, 6))
    np.testing.assert_allclose(reduce(a), reference(a, axis=-1), rtol=1e-12)
