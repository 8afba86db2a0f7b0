"""Bounds that keep untrusted formulas cheap: size, nesting, and how large a constant may grow.

Formula strings come from config files other people wrote.  The parser builds SymPy nodes itself
(nothing is evaluated as Python), but SymPy computes while it builds: ``(2*x)**(10**9)`` multiplies
out ``2**(10**9)``, ``floor(pi**(10**9) + x)`` asks for a billion-bit integer part, a sum of
thousands of ``x/p`` with large ``p`` grows one exact coefficient without end.  This module holds
the limits and the cheap, linear-time checks that turn such input into a ``FormulaError`` (or, for
constants that overflow float64, into the float64 value the kernel would compute) before SymPy
spends the time.  It is shared by the string parser and the allow-list check for SymPy input.
"""
from __future__ import annotations

import math
import operator
from dataclasses import dataclass
from functools import reduce

import numpy as np
import sympy as sp
from sympy.codegen import cfunctions as cf
from sympy.core.relational import Relational
from sympy.logic.boolalg import ITE, BooleanAtom

from .errors import FormulaError
from .functions import BY_SYMPY

__all__ = ["Limits", "LIMITS", "ALLOWED_CORE", "check_tree", "number_bits", "raise_bits", "float_value",
           "to_sympy_number"]


@dataclass(frozen=True)
class Limits:
    """The bounds every formula must keep; each one is checked before the work it protects."""

    max_length: int = 100_000       # characters of formula text
    max_nodes: int = 50_000         # syntax nodes (AST nodes for text, SymPy nodes for SymPy input)
    max_depth: int = 100            # nesting; a chain of + and - (or of * and /) is one level
    max_int_bits: int = 1024        # integer literals written in the formula
    max_const_bits: int = 4096      # exact numbers made by folding constants (numerator + denominator)
    max_args: int = 255             # distinct names
    max_name_length: int = 256      # characters of one name
    max_cases: int = 256            # cases of where(...) results inside one condition


LIMITS = Limits()

# SymPy node classes a formula may contain besides the function table's own classes.
ALLOWED_CORE: tuple[type, ...] = (
    sp.Symbol, sp.Integer, sp.Rational, sp.Float, sp.core.numbers.NaN, sp.core.numbers.Infinity,
    sp.core.numbers.NegativeInfinity, sp.core.numbers.ImaginaryUnit, sp.core.numbers.Pi,
    sp.core.numbers.Exp1, sp.Add, sp.Mul, sp.Pow, sp.Mod, Relational, sp.And, sp.Or, sp.Not,
    BooleanAtom, sp.Piecewise, sp.functions.elementary.piecewise.ExprCondPair, cf.Cbrt,
    ITE,  # SymPy turns where(where(x > y, y, z) > 0, ...) into a condition ITE(x > y, y > 0, z > 0)
)
_OUR_MODULES = ("sympy", "ufuncgen")


# ---- sizes of numbers ----------------------------------------------------------------------
def _log2(n: int) -> float:
    return math.log2(n) if n > 1 else 0.0


def _float_log2(f: sp.Float) -> float:
    """|log2| of a SymPy Float's magnitude, from its binary exponent (no arithmetic on the value)."""
    _sign, man, exp, bc = f._mpf_
    return float(min(abs(exp + bc - 1), 10 ** 300)) if man else 0.0


def number_bits(n) -> float:
    """The size of an exact number in bits: numerator plus denominator; a Float's binary exponent."""
    if isinstance(n, sp.Rational):
        return float(abs(int(n.p)).bit_length() + int(n.q).bit_length() - 1)
    if isinstance(n, sp.Float):
        return _float_log2(n)
    return 0.0


def raise_bits(base) -> float:
    """log2 of the numbers SymPy multiplies out when it raises ``base`` to a power of 1.

    ``(2*x)**n`` becomes ``2**n * x**n`` and ``sqrt(2)**n`` becomes ``2**(n/2)``: the cost of
    ``base**n`` is about ``n * raise_bits(base)`` bits.  Sums are not multiplied out, so count 0.
    """
    if isinstance(base, sp.Piecewise):  # SymPy raises each branch: where(c, 3, x)**n has 3**n
        return max((raise_bits(pair.expr) for pair in base.args), default=0.0)
    total = 0.0
    for f in sp.Mul.make_args(base):
        if isinstance(f, sp.Rational):
            total += _log2(abs(int(f.p))) + _log2(int(f.q))
        elif isinstance(f, sp.Float):
            total += _float_log2(f)
        elif isinstance(f, sp.Pow) and isinstance(f.exp, sp.Rational) and isinstance(f.base, (sp.Rational, sp.Float)):
            total += raise_bits(f.base) * abs(float(f.exp))
    return total


# ---- float64 values of constants --------------------------------------------------------------
_MISSING = object()
_SPECIAL = {cf.Cbrt: np.cbrt, sp.Min: np.minimum, sp.Max: np.maximum}


def _ieee(f, *args):
    """Call a reference implementation with IEEE results: overflow gives inf, a domain error nan."""
    try:
        out = f(*args)
    except OverflowError:
        return np.float64(np.inf)
    except (ValueError, ZeroDivisionError):
        return np.float64(np.nan)
    except TypeError:
        return None
    return out[()] if isinstance(out, np.ndarray) else out


def float_value(e, memo: dict | None = None):
    """The float64 / complex128 / bool value of a constant SymPy expression, computed as the
    compiled kernel would compute it (NumPy, IEEE rules), or None where it cannot tell.

    Linear in the size of ``e`` (values are memoised per node); never asks SymPy to evaluate.
    """
    if memo is None:
        memo = {}
    v = memo.get(e, _MISSING)
    if v is _MISSING:
        with np.errstate(all="ignore"):
            v = _value(e, memo)
        if isinstance(v, (bool, np.bool_)):
            v = bool(v)
        elif v is not None:
            v = complex(v) if np.iscomplexobj(v) else float(v)
        memo[e] = v
    return v


def _value(e, memo):
    if isinstance(e, BooleanAtom):
        return bool(e)
    if isinstance(e, sp.Rational):
        return np.float64(float(e))  # SymPy's float() of a huge rational is inf, not an error
    if isinstance(e, sp.Float):
        return np.float64(float(e))
    if e is sp.nan:
        return np.float64(np.nan)
    if e is sp.oo or e is -sp.oo:
        return np.float64(float(e))
    if e is sp.I:
        return np.complex128(1j)
    if isinstance(e, sp.NumberSymbol):
        return np.float64(float(e))
    if isinstance(e, sp.Piecewise):
        for pair in e.args:
            c = float_value(pair.cond, memo)
            if c is None:
                return None
            if c:
                return float_value(pair.expr, memo)
        return np.float64(np.nan)
    if not isinstance(e, sp.Basic) or not e.args:
        return None
    args = [float_value(a, memo) for a in e.args]
    if any(a is None for a in args):
        return None
    vals = [a if isinstance(a, bool) else (np.complex128(a) if isinstance(a, complex) else np.float64(a))
            for a in args]
    if isinstance(e, sp.Add):
        return reduce(operator.add, vals)
    if isinstance(e, sp.Mul):
        return reduce(operator.mul, vals)
    if isinstance(e, sp.Pow):
        b, x = vals
        if not isinstance(b, np.complexfloating) and b < 0 and not isinstance(x, np.complexfloating) \
                and x != np.floor(x):
            b = np.complex128(b)  # SymPy's principal root, as Python's (-8) ** (1/3)
        return np.power(b, x)
    if isinstance(e, sp.Mod):
        return None if any(isinstance(v, np.complexfloating) for v in vals) else np.mod(*vals)
    if isinstance(e, Relational):
        a, b = vals
        if isinstance(a, np.complexfloating) or isinstance(b, np.complexfloating):
            if e.rel_op not in ("==", "!="):
                return None
        return bool({"==": operator.eq, "!=": operator.ne, "<": operator.lt, "<=": operator.le,
                     ">": operator.gt, ">=": operator.ge}[e.rel_op](a, b))
    if isinstance(e, sp.And):
        return all(vals)
    if isinstance(e, sp.Or):
        return any(vals)
    if isinstance(e, sp.Not):
        return not vals[0]
    if isinstance(e, ITE):
        return vals[1] if vals[0] else vals[2]
    f = _SPECIAL.get(type(e))
    if f is not None:
        if any(isinstance(v, np.complexfloating) for v in vals):
            return None
        return reduce(f, vals) if len(vals) > 1 else _ieee(f, *vals)
    fn = BY_SYMPY.get(type(e))
    if fn is None or fn.reference is None:
        return None
    if not fn.complex_ok and any(isinstance(v, np.complexfloating) for v in vals):
        return None
    return _ieee(fn.reference, *vals)


def to_sympy_number(v):
    """A SymPy number for a value from ``float_value`` (None where SymPy has no finite complex for it)."""
    if isinstance(v, bool):
        return sp.true if v else sp.false
    if isinstance(v, complex):
        if not (math.isfinite(v.real) and math.isfinite(v.imag)):
            return None
        return sp.Float(v.real) + sp.Float(v.imag) * sp.I
    if math.isnan(v):
        return sp.nan
    if math.isinf(v):
        return sp.oo if v > 0 else -sp.oo
    return sp.Float(v)


# ---- whole-tree check --------------------------------------------------------------------------
def check_tree(expr, text: str | None = None, limits: Limits = LIMITS, allowed: tuple | None = None,
               extra: tuple = ()) -> None:
    """Raise FormulaError unless ``expr`` keeps the limits; with ``allowed``, also the allow-list.

    Iterative (a recursive walk of a deep tree would itself overflow the stack); stops at the
    first ``max_nodes`` nodes, so a tree with shared subtrees cannot make it slow.
    """
    count = 0
    stack = [(expr, 1)]
    while stack:
        node, depth = stack.pop()
        count += 1
        if count > limits.max_nodes:
            raise FormulaError(f"the expression is too large (more than {limits.max_nodes} nodes)", text)
        if depth > limits.max_depth:
            raise FormulaError(f"the expression is nested too deeply (more than {limits.max_depth} levels)", text)
        if allowed is not None:
            _check_class(node, allowed, extra, text)
            if isinstance(node, sp.Symbol):
                _check_symbol_name(node.name, limits, text)
        if isinstance(node, sp.core.numbers.ComplexInfinity):
            raise FormulaError("the expression contains zoo (complex infinity), e.g. from 1/0", text)
        if isinstance(node, sp.Float) and node._prec > limits.max_const_bits:
            raise FormulaError(f"a Float has {node._prec} bits of precision; the limit is {limits.max_const_bits}",
                               text)
        if isinstance(node, (sp.Rational, sp.Float)) and number_bits(node) > limits.max_const_bits:
            raise FormulaError(f"a constant is too large (about {number_bits(node):.0f} bits; the limit is "
                               f"{limits.max_const_bits})", text)
        if isinstance(node, sp.Pow) and isinstance(node.exp, (sp.Rational, sp.Float)):
            rb = raise_bits(node.base)
            if rb and rb * abs(float(node.exp)) > limits.max_const_bits:
                raise FormulaError(f"the power {_short(node)} would multiply out a constant of about "
                                   f"{rb * abs(float(node.exp)):.3g} bits (the limit is {limits.max_const_bits})",
                                   text)
        # a Piecewise's (value, condition) pairs are not a level of nesting of their own
        inner = depth if isinstance(node, sp.Piecewise) else depth + 1
        stack.extend((a, inner) for a in node.args)


def _check_class(node, allowed: tuple, extra: tuple, text) -> None:
    cls = type(node)
    if extra and isinstance(node, extra):
        return
    module = str(getattr(cls, "__module__", None))  # None for classes SymPy makes on the fly (f = Function('f'))
    ours = module.split(".")[0] in _OUR_MODULES
    if ours and isinstance(node, allowed):
        return
    name = getattr(cls, "__name__", str(cls))
    where = "" if ours else f" (a class from {module})"
    raise FormulaError(f"{name}{where} is not supported in a formula "
                       f"(supported functions: see ufuncgen.functions.FUNCTIONS)", text)


def _check_symbol_name(name, limits: Limits, text) -> None:
    if not isinstance(name, str) or not name or len(name) > limits.max_name_length or not name.isprintable():
        shown = repr(name)[:60]
        raise FormulaError(f"symbol name {shown} is not usable: names must be printable text of 1 to "
                           f"{limits.max_name_length} characters", text)


def _short(e) -> str:
    return f"(...)**{str(e.exp)[:40]}"
