"""The allow-list parser: what it accepts, what it rejects, and how it says so."""
import os

import pytest
import sympy as sp

import ufuncgen as ug
from ufuncgen.parse import parse_formula

x, y, z = sp.symbols("x y z")


@pytest.mark.parametrize("text,want", [
    ("x + y*z", x + y * z),
    ("-x**2", -(x ** 2)),
    ("x**-1", 1 / x),
    ("2**3*x", 8 * x),
    ("x // y", sp.floor(x / y)),
    ("x % y", sp.Mod(x, y)),
    ("arctan2(y, x)", sp.atan2(y, x)),
    ("abs(x) + Abs(y)", sp.Abs(x) + sp.Abs(y)),
    ("where(x > 0, x, 0)", sp.Piecewise((x, x > 0), (0, True))),
    ("x if x > 0 else y", sp.Piecewise((x, x > 0), (y, True))),
    ("0 < x <= 1", sp.And(sp.StrictLessThan(0, x), x <= 1)),
    ("(x > 0) & ~(y > 0) | (z == 1)", sp.Or(sp.And(x > 0, sp.Not(y > 0, evaluate=False)), sp.Eq(z, 1))),
    ("1j*x", sp.I * x),
    ("pi*e", sp.pi * sp.E),
    ("x +\n y", x + y),
])
def test_accepted(text, want):
    assert parse_formula(text) == want


@pytest.mark.parametrize("text,message,col", [
    ("x +", "syntax error", None),
    ("sinn(x)", "did you mean 'sin'", 0),
    ("x.real", "attribute access", None),
    ("x[0]", "subscripts are only allowed in gufunc", 0),
    ("lambda: 1", "lambda", 0),
    ("[t for t in x]", "comprehensions", 0),
    ("'abc'", "strings", 0),
    ("sin(*x)", "starred", 4),
    ("sin(x=1)", "keyword arguments", None),
    ("(y := 2)", "assignment expressions", 1),
    ("f'{x}'", "f-strings", 0),
    ("x ^ 2", "write x**2", 0),
    ("x > 0 & y > 0", "binds tighter than comparisons", None),
    ("sin", "is a function", 0),
    ("x + __class__", "'__'", 4),
    ("{x: 1}", "dicts", 0),
    ("None", "None", 0),
])
def test_rejected_with_a_message_and_a_caret(text, message, col):
    with pytest.raises(ug.FormulaError) as info:
        parse_formula(text)
    err = info.value
    assert message in str(err)
    assert text.splitlines()[0] in str(err)  # the formula is quoted
    if col is not None:
        assert err.col == col
        assert str(err).splitlines()[-1] == "    " + " " * col + "^"


def test_formula_error_is_a_value_error():
    assert issubclass(ug.FormulaError, ValueError) and issubclass(ug.SignatureError, ValueError)


PAYLOADS = [
    "__import__('os').system('touch {s}')",
    "open('{s}', 'w')",
    "exec(\"open('{s}','w')\")",
    "eval(\"open('{s}','w')\")",
    "(lambda: open('{s}','w'))()",
    "[c for c in ().__class__.__base__.__subclasses__()]",
    "x.__class__.__init__.__globals__['os'].system('touch {s}')",
    "sin(x).__globals__",
    "getattr(x, 'real')",
]


@pytest.mark.parametrize("payload", PAYLOADS)
def test_payloads_are_rejected_and_never_run(payload, tmp_path):
    sentinel = tmp_path / "sentinel"
    text = payload.format(s=sentinel)
    with pytest.raises(ug.FormulaError):
        ug.ufunc(text)
    assert not os.path.exists(sentinel)
