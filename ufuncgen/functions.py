"""The one table of functions a formula may call.

The parser reads names and arities from it, the allow-list check for SymPy input reads the SymPy
classes, the kernel printer reads the code templates, the dtype inference reads the result rule,
and the tests and the README read the NumPy reference and the sample domain.  Adding a function
means adding one row here.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import sympy as sp
from sympy.codegen import cfunctions as cf
from sympy.core.function import ArgumentIndexError
from sympy.logic.boolalg import BooleanFunction

__all__ = ["Fn", "FUNCTIONS", "BY_NAME", "BY_SYMPY", "CONSTANTS", "fmod", "isfinite", "language_table"]


class fmod(sp.Function):
    """C's fmod: remainder with the sign of the dividend (NumPy's ``np.fmod``)."""

    nargs = 2

    def fdiff(self, argindex=1):
        if argindex == 1:
            return sp.S.One  # away from the jumps
        raise ArgumentIndexError(self, argindex)


class isfinite(BooleanFunction):
    """True where the argument is neither inf nor nan."""

    nargs = 1


# Result-dtype rules (see dtypes.infer): how a function maps its argument dtypes to its result.
FLOAT = "float"        # integers and bool become float64; float and complex stay
REAL = "real"          # complex becomes its real float type; real types stay
SAME = "same"          # result has the (promoted) argument dtype
BOOL = "bool"          # boolean result
REAL_FLOAT = "real_float"  # complex -> its real float type, integers -> float64 (np.angle)


@dataclass(frozen=True)
class Fn:
    """One callable name of the formula language.

    name: the canonical (SymPy) spelling; aliases: NumPy/numexpr spellings; nargs: allowed counts;
    build: makes the SymPy node from SymPy arguments; sympy_types: the SymPy classes this row
    owns (printing and the allow-list for SymPy input); code: kernel template with {0}, {1};
    rule: result-dtype rule; complex_ok: whether complex arguments are accepted;
    reference: independent NumPy implementation for the tests; domain: sample range for tests.
    """

    name: str
    aliases: tuple
    nargs: tuple
    build: Callable
    sympy_types: tuple
    code: str | None
    rule: str
    complex_ok: bool
    reference: Callable
    domain: tuple = (-3.0, 3.0)
    doc: str = ""


def _vec(f):
    return np.vectorize(f, otypes=[float])


def _where(c, a, b, evaluate=True):
    return sp.Piecewise((a, c), (b, True), evaluate=evaluate)


def _log(x, base=None, evaluate=True):
    if base is None:
        return sp.log(x, evaluate=evaluate)
    return sp.Mul(sp.log(x, evaluate=evaluate), sp.Pow(sp.log(base, evaluate=evaluate), -1), evaluate=evaluate)


def _min(*a, evaluate=True):
    return sp.Min(*a, evaluate=evaluate)


def _max(*a, evaluate=True):
    return sp.Max(*a, evaluate=evaluate)


def _F(name, aliases, nargs, build, types, code, rule, complex_ok, ref, domain=(-3.0, 3.0), doc=""):
    return Fn(name, tuple(aliases), tuple(nargs), build, tuple(types), code, rule, complex_ok, ref, domain, doc)


FUNCTIONS: tuple[Fn, ...] = (
    _F("sin", [], [1], sp.sin, [sp.sin], "np.sin({0})", FLOAT, True, np.sin, doc="sine"),
    _F("cos", [], [1], sp.cos, [sp.cos], "np.cos({0})", FLOAT, True, np.cos, doc="cosine"),
    _F("tan", [], [1], sp.tan, [sp.tan], "np.tan({0})", FLOAT, True, np.tan, (-1.2, 1.2), "tangent"),
    _F("asin", ["arcsin"], [1], sp.asin, [sp.asin], "np.arcsin({0})", FLOAT, True, np.arcsin, (-1.0, 1.0), "inverse sine"),
    _F("acos", ["arccos"], [1], sp.acos, [sp.acos], "np.arccos({0})", FLOAT, True, np.arccos, (-1.0, 1.0), "inverse cosine"),
    _F("atan", ["arctan"], [1], sp.atan, [sp.atan], "np.arctan({0})", FLOAT, True, np.arctan, doc="inverse tangent"),
    _F("atan2", ["arctan2"], [2], sp.atan2, [sp.atan2], "np.arctan2({0}, {1})", FLOAT, False, np.arctan2, doc="two-argument inverse tangent atan2(y, x)"),
    _F("sinh", [], [1], sp.sinh, [sp.sinh], "np.sinh({0})", FLOAT, True, np.sinh, doc="hyperbolic sine"),
    _F("cosh", [], [1], sp.cosh, [sp.cosh], "np.cosh({0})", FLOAT, True, np.cosh, doc="hyperbolic cosine"),
    _F("tanh", [], [1], sp.tanh, [sp.tanh], "np.tanh({0})", FLOAT, True, np.tanh, doc="hyperbolic tangent"),
    _F("asinh", ["arcsinh"], [1], sp.asinh, [sp.asinh], "np.arcsinh({0})", FLOAT, True, np.arcsinh, doc="inverse hyperbolic sine"),
    _F("acosh", ["arccosh"], [1], sp.acosh, [sp.acosh], "np.arccosh({0})", FLOAT, True, np.arccosh, (1.0, 5.0), "inverse hyperbolic cosine"),
    _F("atanh", ["arctanh"], [1], sp.atanh, [sp.atanh], "np.arctanh({0})", FLOAT, True, np.arctanh, (-0.99, 0.99), "inverse hyperbolic tangent"),
    _F("exp", [], [1], sp.exp, [sp.exp], "np.exp({0})", FLOAT, True, np.exp, doc="exponential"),
    _F("exp2", [], [1], cf.exp2, [cf.exp2], "np.exp2({0})", FLOAT, False, np.exp2, doc="2**x"),
    _F("expm1", [], [1], cf.expm1, [cf.expm1], "np.expm1({0})", FLOAT, False, np.expm1, doc="exp(x) - 1, accurate near 0"),
    _F("log", ["ln"], [1, 2], _log, [sp.log], "np.log({0})", FLOAT, True, np.log, (0.01, 10.0), "natural logarithm; log(x, b) is the base-b logarithm"),
    _F("log2", [], [1], cf.log2, [cf.log2], "np.log2({0})", FLOAT, False, np.log2, (0.01, 10.0), "base-2 logarithm"),
    _F("log10", [], [1], cf.log10, [cf.log10], "np.log10({0})", FLOAT, False, np.log10, (0.01, 10.0), "base-10 logarithm"),
    _F("log1p", [], [1], cf.log1p, [cf.log1p], "np.log1p({0})", FLOAT, False, np.log1p, (-0.9, 10.0), "log(1 + x), accurate near 0"),
    _F("sqrt", [], [1], sp.sqrt, [], None, FLOAT, True, np.sqrt, (0.0, 10.0), "square root"),
    _F("cbrt", [], [1], cf.Cbrt, [cf.Cbrt], "np.cbrt({0})", FLOAT, False, np.cbrt, doc="real cube root"),
    _F("hypot", [], [2], cf.hypot, [cf.hypot], "np.hypot({0}, {1})", FLOAT, False, np.hypot, doc="sqrt(x**2 + y**2) without overflow"),
    _F("pow", ["power"], [2], sp.Pow, [], None, SAME, True, np.power, (0.1, 3.0), "x**y"),
    _F("Abs", ["abs", "absolute", "fabs"], [1], sp.Abs, [sp.Abs], "np.abs({0})", REAL, True, np.abs, doc="absolute value (modulus for complex)"),
    _F("sign", [], [1], sp.sign, [sp.sign], "np.sign({0})", SAME, True, np.sign, doc="sign: -1, 0 or 1 (z/|z| for complex)"),
    _F("floor", [], [1], sp.floor, [sp.floor], "np.floor({0})", SAME, False, np.floor, doc="largest integer not above x"),
    _F("ceiling", ["ceil"], [1], sp.ceiling, [sp.ceiling], "np.ceil({0})", SAME, False, np.ceil, doc="smallest integer not below x"),
    _F("Min", ["min", "minimum"], [2, 3, 4, 5, 6, 7, 8], _min, [sp.Min], None, SAME, False, np.minimum, doc="smallest argument (NaN propagates)"),
    _F("Max", ["max", "maximum"], [2, 3, 4, 5, 6, 7, 8], _max, [sp.Max], None, SAME, False, np.maximum, doc="largest argument (NaN propagates)"),
    _F("fmod", [], [2], fmod, [fmod], "np.fmod({0}, {1})", SAME, False, np.fmod, (0.5, 5.0), "remainder with the sign of the dividend"),
    _F("erf", [], [1], sp.erf, [sp.erf], "math.erf({0})", FLOAT, False, _vec(math.erf), doc="error function"),
    _F("erfc", [], [1], sp.erfc, [sp.erfc], "math.erfc({0})", FLOAT, False, _vec(math.erfc), doc="complementary error function"),
    _F("gamma", [], [1], sp.gamma, [sp.gamma], "math.gamma({0})", FLOAT, False, _vec(math.gamma), (0.1, 5.0), "gamma function"),
    _F("loggamma", ["lgamma"], [1], sp.loggamma, [sp.loggamma], "math.lgamma({0})", FLOAT, False, _vec(math.lgamma), (0.1, 5.0), "log of the absolute gamma function"),
    _F("re", ["real"], [1], sp.re, [sp.re], "np.real({0})", REAL, True, np.real, doc="real part"),
    _F("im", ["imag"], [1], sp.im, [sp.im], "np.imag({0})", REAL, True, np.imag, doc="imaginary part"),
    _F("conjugate", ["conj"], [1], sp.conjugate, [sp.conjugate], "np.conj({0})", SAME, True, np.conj, doc="complex conjugate"),
    _F("arg", ["angle"], [1], sp.arg, [sp.arg], "np.angle({0})", REAL_FLOAT, True, np.angle, doc="complex argument (phase)"),
    _F("where", [], [3], _where, [], None, SAME, True, np.where, doc="where(cond, a, b): a where cond holds, else b"),
    _F("Piecewise", [], [], sp.Piecewise, [sp.Piecewise], None, SAME, True, None, doc="Piecewise((a, cond), ..., (b, True))"),
    _F("isnan", [], [1], cf.isnan, [cf.isnan], "np.isnan({0})", BOOL, True, np.isnan, doc="True where x is NaN"),
    _F("isinf", [], [1], cf.isinf, [cf.isinf], "np.isinf({0})", BOOL, True, np.isinf, doc="True where x is +-inf"),
    _F("isfinite", [], [1], isfinite, [isfinite], "np.isfinite({0})", BOOL, True, np.isfinite, doc="True where x is finite"),
)

BY_NAME: dict[str, Fn] = {}
for _fn in FUNCTIONS:
    for _n in (_fn.name, *_fn.aliases):
        BY_NAME[_n] = _fn

BY_SYMPY: dict[type, Fn] = {t: fn for fn in FUNCTIONS for t in fn.sympy_types}

# Names that stand for constants in formula strings.
CONSTANTS = {
    "pi": sp.pi,
    "e": sp.E,
    "inf": sp.oo,
    "nan": sp.nan,
    "True": sp.true,
    "False": sp.false,
}


def language_table() -> str:
    """The Markdown table of the formula language (the README embeds it; a test checks it)."""
    rows = ["| function | also spelled | arguments | meaning |", "|---|---|---|---|"]
    for fn in FUNCTIONS:
        nargs = "any" if not fn.nargs else " or ".join(str(n) for n in fn.nargs[:2]) + ("+" if len(fn.nargs) > 2 else "")
        also = ", ".join(f"`{a}`" for a in fn.aliases)
        rows.append(f"| `{fn.name}` | {also} | {nargs} | {fn.doc} |")
    return "\n".join(rows)
