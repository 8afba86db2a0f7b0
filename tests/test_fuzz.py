"""Fuzzing the front end: every input either works or raises FormulaError / SignatureError.

Hypothesis feeds random ASCII and Unicode text, token soup, and random Python expression trees
(allowed and disallowed node kinds alike).  Nothing else may escape: no RecursionError, no
TypeError from SymPy, no hang (each example runs under an alarm).  Example counts are bounded so
the file runs in well under a minute; ``benchmarks/fuzz.py`` is the long run.
"""
from __future__ import annotations

import ast
import contextlib
import math
import operator
import os
import signal
import string
import time

import numpy as np
import pytest
import sympy as sp
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import ufuncgen as ug
from ufuncgen.build import output_dtypes
from ufuncgen.codegen import generate_kernel
from ufuncgen.dtypes import parse_signature
from ufuncgen.errors import FormulaError, SignatureError
from ufuncgen.formula import make_formula
from ufuncgen.functions import BY_NAME
from ufuncgen.parse import parse_formula

EXAMPLE_SECONDS = 5.0
EXAMPLES = int(os.environ.get("UFUNCGEN_FUZZ_EXAMPLES", "300"))  # raise it for a longer local run
FUZZ = settings(max_examples=EXAMPLES, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])


@contextlib.contextmanager
def alarm(seconds: float = EXAMPLE_SECONDS):
    """A hang fails the example instead of blocking the suite."""
    def on_alarm(signum, frame):
        raise AssertionError(f"example still running after {seconds} s")

    old = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def front_end(text) -> None:
    """Parse, check, type and generate code for float64 inputs: FormulaError is the only refusal
    (TypeError only where a function refuses the input dtype, as NumPy would)."""
    with alarm():
        try:
            formula = make_formula(text, args=None)
        except FormulaError:
            return
        ins = (np.dtype(np.float64),) * formula.nin
        try:
            outs = output_dtypes(formula, ins)
        except TypeError as err:  # a function refusing complex input, as NumPy's would
            assert "does not take complex" in str(err), err
            return
        try:
            src = generate_kernel(formula, ins, outs)
        except FormulaError:
            return
        compile(src.text, src.filename, "exec")  # our generated source is valid Python (never run here)


# ---- random text --------------------------------------------------------------------------
@FUZZ
@given(st.text(alphabet=string.printable, max_size=120))
def test_random_ascii_text(text):
    front_end(text)


@FUZZ
@given(st.text(alphabet=st.characters(exclude_categories=()), max_size=60))
def test_random_unicode_text(text):
    front_end(text)


TOKENS = (["x", "y", "z", "a1", "_b", "__c", "α", "ᵇit", "ｘ", "np", "math", "range", "lambda", "None", "True", "pi",
           "e", "inf", "nan", "I", "0", "1", "2", "3", "-1", "0.5", "1e308", "1e-320", "2j", "9" * 40, "10**400",
           "(", ")", "(", ")", ",", "+", "-", "*", "/", "//", "%", "**", "&", "|", "~", "^", "<", ">", "<=", "==",
           "!=", "not", "and", "or", "if", "else", ":", ".", "[", "]", "'s'", "@", "=", ":=", "*", "\n", " ", "#"]
          + sorted(BY_NAME) + ["Mod", "factorial", "__import__", "open", "eval"])


@FUZZ
@given(st.lists(st.sampled_from(TOKENS), min_size=1, max_size=25))
def test_token_soup(tokens):
    front_end(" ".join(tokens))
    front_end("".join(tokens))


# ---- random expression trees ----------------------------------------------------------------
NAMES = ["x", "y", "z", "t1", "np", "_out", "__x__", "ᵇit", "range"]
NUMBERS = st.one_of(st.integers(-10, 10), st.integers(-(2 ** 1100), 2 ** 1100), st.floats(allow_nan=False),
                    st.complex_numbers(max_magnitude=1e6, allow_nan=False), st.sampled_from([0, 1, 2, 0.5, 1e308]))
BINOPS = [ast.Add, ast.Sub, ast.Mult, ast.Div, ast.FloorDiv, ast.Mod, ast.Pow, ast.BitAnd, ast.BitOr, ast.BitXor,
          ast.LShift, ast.MatMult]
CMPOPS = [ast.Lt, ast.LtE, ast.Gt, ast.GtE, ast.Eq, ast.NotEq, ast.Is, ast.In]
FUNCS = sorted(BY_NAME) + ["factorial", "open", "Symbol"]


def _leaf():
    return st.one_of(st.sampled_from(NAMES).map(lambda n: ast.Name(n, ast.Load())),
                     NUMBERS.map(ast.Constant),
                     st.sampled_from(["pi", "e", "inf", "nan", "True"]).map(lambda n: ast.Name(n, ast.Load())),
                     st.sampled_from(["s", b"b", None, ...]).map(ast.Constant))


def _node(children):
    return st.one_of(
        st.builds(lambda a, op, b: ast.BinOp(a, op(), b), children, st.sampled_from(BINOPS), children),
        st.builds(lambda op, a: ast.UnaryOp(op(), a), st.sampled_from([ast.USub, ast.UAdd, ast.Not, ast.Invert]),
                  children),
        st.builds(lambda a, ops, bs: ast.Compare(a, [o() for o in ops[:len(bs)]], bs[:len(ops)]), children,
                  st.lists(st.sampled_from(CMPOPS), min_size=1, max_size=3), st.lists(children, min_size=1, max_size=3)),
        st.builds(lambda f, args: ast.Call(ast.Name(f, ast.Load()), args, []), st.sampled_from(FUNCS),
                  st.lists(children, max_size=4)),
        st.builds(lambda c, a, b: ast.IfExp(c, a, b), children, children, children),
        st.builds(lambda op, vs: ast.BoolOp(op(), vs), st.sampled_from([ast.And, ast.Or]),
                  st.lists(children, min_size=2, max_size=3)),
        st.builds(lambda a: ast.Attribute(a, "real", ast.Load()), children),
        st.builds(lambda a, b: ast.Subscript(a, b, ast.Load()), children, children),
        st.builds(lambda a: ast.Lambda(ast.arguments([], [], None, [], [], None, []), a), children),
        st.builds(lambda vs: ast.Tuple(vs, ast.Load()), st.lists(children, max_size=3)),
        st.builds(lambda pairs: ast.Call(ast.Name("Piecewise", ast.Load()),
                                         [ast.Tuple([v, c], ast.Load()) for v, c in pairs], []),
                  st.lists(st.tuples(children, children), max_size=3)),
    )


EXPRESSIONS = st.recursive(_leaf(), _node, max_leaves=25)


def _unparse(tree) -> str | None:
    try:
        return ast.unparse(ast.fix_missing_locations(ast.Expression(tree)))
    except (ValueError, TypeError, RecursionError):
        return None


@FUZZ
@given(EXPRESSIONS)
def test_random_expression_trees(tree):
    text = _unparse(tree)
    if text is not None:
        front_end(text)


# ---- the parser builds what SymPy's operators build -------------------------------------------
X, Y = sp.symbols("x y")
_SYMPY_OPS = {"+": operator.add, "-": operator.sub, "*": operator.mul, "/": operator.truediv}


def _arith(children):
    return st.builds(lambda a, op, b: (f"({a[0]} {op} {b[0]})", _SYMPY_OPS[op](a[1], b[1])),
                     children, st.sampled_from(sorted(_SYMPY_OPS)), children)


ARITH = st.recursive(
    st.one_of(st.sampled_from([("x", X), ("y", Y)]),
              st.integers(-5, 5).filter(bool).map(lambda n: (f"({n})", sp.Integer(n))),
              st.sampled_from([0.5, 2.5, -1.5]).map(lambda f: (f"({f})", sp.Float(f)))),
    _arith, max_leaves=12)


@settings(max_examples=EXAMPLES, deadline=None, database=None)
@given(ARITH)
def test_parser_builds_what_sympy_operators_build(pair):
    """Chains are built in one SymPy call; the result must equal the operator-by-operator one
    (up to the rounding of float constants folded in another order: 2.5/5/2.5 against 2.5/2.5/5)."""
    text, want = pair
    try:
        got = parse_formula(text)
    except FormulaError as err:
        assert "division by zero" in str(err) or "zoo" in str(err), err
        return
    if got != want:
        for point in ({X: 0.7, Y: -1.3}, {X: -2.1, Y: 0.4}):
            g, w = complex(got.evalf(subs=point)), complex(want.evalf(subs=point))
            assert abs(g - w) <= 1e-12 * max(1.0, abs(w)), (text, got, want)
        assert got.free_symbols == want.free_symbols, (text, got, want)


# ---- compiled results agree with NumPy --------------------------------------------------------
_NP_FUNCS = {"sin": np.sin, "exp": np.exp, "tanh": np.tanh, "abs": np.abs, "atan": np.arctan}


def _numeric(children):
    return st.one_of(
        st.builds(lambda a, op, b: (f"({a[0]} {op} {b[0]})",
                                    lambda v, a=a, b=b, op=op: _SYMPY_OPS[op](a[1](v), b[1](v))),
                  children, st.sampled_from(["+", "-", "*"]), children),
        st.builds(lambda f, a: (f"{f}({a[0]})", lambda v, f=f, a=a: _NP_FUNCS[f](a[1](v))),
                  st.sampled_from(sorted(_NP_FUNCS)), children),
        st.builds(lambda a, n: (f"({a[0]})**{n}", lambda v, a=a, n=n: a[1](v) ** n), children, st.integers(0, 3)),
    )


NUMERIC = st.recursive(
    st.one_of(st.just(("x", lambda v: v[0])), st.just(("y", lambda v: v[1])),
              st.floats(-3, 3, allow_nan=False).map(lambda c: (repr(c), lambda v, c=c: c))),
    _numeric, max_leaves=6)


@settings(max_examples=12, deadline=None, database=None)
@given(NUMERIC)
def test_compiled_random_formulas_agree_with_numpy(pair):
    text, reference = pair
    vals = (np.linspace(-2, 2, 7), np.linspace(1, -1, 7))
    try:
        f = ug.ufunc(text, args=("x", "y"))
    except FormulaError as err:
        pytest.fail(f"{text!r} refused: {err}")
    with np.errstate(all="ignore"):
        want = np.broadcast_to(reference(vals), vals[0].shape)
        got = f(*vals)
    np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-12, equal_nan=True, err_msg=text)


# ---- signatures ----------------------------------------------------------------------------
SIG_TOKENS = ["float64", "f8", "int32", "complex128", "bool", "object", "x", "(", ")", ",", " ", "->", "float",
              "__import__('os')", "[", "]", "f4", "u8", "float128", "*"]


@FUZZ
@given(st.one_of(st.text(max_size=40), st.lists(st.sampled_from(SIG_TOKENS), max_size=12).map("".join)),
       st.integers(1, 3))
def test_random_signatures(text, nin):
    with alarm():
        try:
            sig = parse_signature(text, nin, 1)
        except SignatureError:
            return
    assert len(sig.inputs) == nin
    assert all(isinstance(d, np.dtype) for d in sig.inputs)


def test_fuzz_alarm_would_catch_a_hang():
    """The guard the examples run under turns a hang into a failure."""
    with pytest.raises(AssertionError, match="still running"):
        with alarm(0.2):
            t0 = time.perf_counter()
            while time.perf_counter() - t0 < 5:
                math.sqrt(2.0)
