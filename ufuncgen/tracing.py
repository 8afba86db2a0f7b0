"""Run a Python function once on symbols, to get the formula it computes.

The function's parameters become ``Traced`` values that wrap SymPy symbols.  Arithmetic, comparisons,
``&``/``|``/``~``, ``abs``, ``math.floor``/``math.ceil``, NumPy ufuncs and the ``ug.*`` functions build
SymPy nodes.  Anything that needs a *value* (``if``, ``while``, ``and``, ``or``, ``not``, ``bool()``,
``float()``, ``math.sin``, indexing a list) has no answer while tracing, so it raises a FormulaError
that names the file and line of the user's code and says what to write instead, in the manner of
numexpr's ``ExpressionNode.__bool__``.
"""
from __future__ import annotations

import inspect
import io
import linecache
import operator
import os
import sys
import tokenize
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import sympy as sp

from .errors import FormulaError
from .parse import check_name, is_condition

__all__ = ["Traced", "Trace", "trace", "parameter_names", "to_sympy", "wrap", "located_error", "TRUTH_ADVICE"]

# Frames in these directories are library code: an error is reported at the first frame outside them.
_LIBRARY_DIRS = tuple(os.path.dirname(m.__file__) + os.sep for m in (sys.modules[__package__], sp, np))

# What to write instead of Python's own control flow, keyed by the word found on the offending line.
TRUTH_ADVICE = {
    "if": "write where(cond, a, b) instead of if/else",
    "elif": "write where(cond, a, where(cond2, b, c)) instead of if/elif/else",
    "and": "write (a) & (b) instead of 'a and b'",
    "or": "write (a) | (b) instead of 'a or b'",
    "not": "write ~(cond) instead of 'not cond'",
    "while": "a loop cannot run a number of times that depends on a traced value; "
             "unroll it or use where(cond, a, b)",
    "assert": "assert cannot check a traced value; drop it or check the inputs outside the ufunc",
    "bool": "bool() has no answer for a traced value; use the condition in where(cond, a, b)",
    "min": "Python's min() compares with if; write ug.min(a, b) (elementwise)",
    "max": "Python's max() compares with if; write ug.max(a, b) (elementwise)",
    "sorted": "sorting compares with if; write ug.min/ug.max of the values",
}
_DEFAULT_ADVICE = ("write where(cond, a, b) instead of if/else, and &, |, ~ instead of and, or, not")


@dataclass(frozen=True)
class Location:
    filename: str
    lineno: int
    function: str
    line: str | None      # source text of the line, stripped
    col: int | None       # character offset into ``line``

    def __str__(self) -> str:
        return f"{self.filename}:{self.lineno}: in {self.function}()"


def _is_library(filename: str) -> bool:
    return filename.startswith(_LIBRARY_DIRS)


def _location(code, lineno: int | None, lasti: int) -> Location:
    lineno = lineno or code.co_firstlineno
    col = None
    positions = getattr(code, "co_positions", None)  # Python >= 3.11: columns of each instruction
    if positions is not None and lasti >= 0:
        for i, pos in enumerate(positions()):
            if i == lasti // 2:
                if pos[0] == lineno and pos[2] is not None:
                    col = pos[2]
                break
    raw = linecache.getline(code.co_filename, lineno)
    line = raw.strip() or None
    if line is not None and col is not None:
        # co_positions counts UTF-8 bytes; the caret needs characters into the stripped line
        col = len(raw.encode("utf-8")[:col].decode("utf-8", errors="ignore")) - (len(raw) - len(raw.lstrip()))
        col = col if 0 <= col <= len(line) else None
    return Location(code.co_filename, lineno, code.co_name, line, col)


def _caller_location() -> Location | None:
    """The innermost frame of user code on the current stack."""
    frame = sys._getframe(1)
    while frame is not None and _is_library(frame.f_code.co_filename):
        frame = frame.f_back
    if frame is None:
        return None
    return _location(frame.f_code, frame.f_lineno, frame.f_lasti)


def _traceback_location(tb) -> Location | None:
    """The innermost frame of user code in a traceback."""
    found = None
    while tb is not None:
        if not _is_library(tb.tb_frame.f_code.co_filename):
            found = tb
        tb = tb.tb_next
    if found is None:
        return None
    return _location(found.tb_frame.f_code, found.tb_lineno, found.tb_lasti)


def located_error(message: str, where: Location | None = None) -> FormulaError:
    """A FormulaError that starts with ``file:line: in func()`` of the user's code and quotes the line."""
    where = where if where is not None else _caller_location()
    if where is None:
        return FormulaError(message)
    err = FormulaError(f"{where}: {message}", where.line, where.col)
    err.filename, err.lineno = where.filename, where.lineno
    return err


def _words(line: str | None) -> list:
    """Python names and keywords on a source line, ignoring strings and comments."""
    if not line:
        return []
    words = []
    try:
        for tok in tokenize.generate_tokens(io.StringIO(line).readline):
            if tok.type == tokenize.NAME:
                words.append(tok.string)
    except (tokenize.TokenError, IndentationError, SyntaxError):
        pass  # a fragment of a longer statement: the words read so far are enough
    return words


def truth_error(where: Location | None = None) -> FormulaError:
    """The error for Python control flow on a traced value, with advice for the words on the line."""
    where = where if where is not None else _caller_location()
    words = _words(where.line if where else None)
    advice = list(dict.fromkeys(TRUTH_ADVICE[w] for w in words if w in TRUTH_ADVICE))
    return located_error(
        "Python control flow (if, while, and, or, not, bool()) cannot depend on a traced value: the "
        "function runs once, on symbols, not on numbers; " + ("; ".join(advice) or _DEFAULT_ADVICE), where)


# ---- converting values ----------------------------------------------------------------------
def _number(v: float | int) -> sp.Basic:
    if isinstance(v, int):
        return sp.Integer(v)
    if v != v:
        return sp.nan
    if v in (float("inf"), float("-inf")):
        return sp.oo if v > 0 else -sp.oo
    return sp.Float(v)


def to_sympy(value) -> sp.Basic:
    """A traced value, SymPy object, or Python/NumPy scalar as SymPy; FormulaError for anything else."""
    if isinstance(value, Traced):
        return value.expr
    if isinstance(value, sp.Basic):
        return value
    if isinstance(value, np.ndarray) and value.ndim == 0 or isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, bool):
        return sp.true if value else sp.false
    if isinstance(value, (int, float)):
        return _number(value)
    if isinstance(value, complex):
        return _number(value.real) + _number(value.imag) * sp.I
    if isinstance(value, np.ndarray):
        raise located_error(f"a NumPy array (shape {value.shape}) cannot be used in a traced formula: the "
                            "function is traced for one element; pass the array as an argument instead")
    raise located_error(f"a {type(value).__name__} cannot be used in a traced formula; use numbers, "
                        "the function's arguments and ug.* functions")


def wrap(expr: sp.Basic) -> Traced:
    return Traced(expr)


def _value(v: sp.Basic, what: str) -> sp.Basic:
    if is_condition(v):
        raise located_error(f"a condition cannot be used {what}; use where(cond, 1, 0)")
    return v


def _condition(v: sp.Basic, op: str) -> sp.Basic:
    if not is_condition(v):
        raise located_error(f"'{op}' combines conditions, and binds tighter than comparisons: "
                            f"write (x > 0) {op} (y < 1)")
    return v


def _arith(op: Callable, symbol: str):
    def forward(self, other):
        return Traced(op(_value(self.expr, "in arithmetic"), _value(to_sympy(other), "in arithmetic")))

    def reverse(self, other):
        return Traced(op(_value(to_sympy(other), "in arithmetic"), _value(self.expr, "in arithmetic")))

    forward.__doc__ = reverse.__doc__ = f"Traced {symbol}."
    return forward, reverse


def _compare(cls):
    def method(self, other):
        a, b = self.expr, to_sympy(other)
        if is_condition(a) or is_condition(b):
            raise located_error("conditions cannot be compared; combine them with & and |")
        return Traced(cls(a, b))
    return method


def _logic(cls, symbol: str):
    def forward(self, other):
        return Traced(cls(_condition(self.expr, symbol), _condition(to_sympy(other), symbol)))

    def reverse(self, other):
        return Traced(cls(_condition(to_sympy(other), symbol), _condition(self.expr, symbol)))
    return forward, reverse


def _not_a_number(kind: str):
    def method(self, *args):
        raise located_error(
            f"a traced value is a symbol, not a number, so it cannot be used as {kind}; use the ug.* "
            "functions (ug.sin, ug.exp, ...) or SymPy's instead of math/cmath, and keep sizes, "
            "counts and indices independent of the arguments")
    return method


class Traced:
    """A symbolic value seen by a function being traced; wraps a SymPy expression in ``.expr``."""

    __slots__ = ("expr",)
    # SymPy's binary operators defer to operands of higher priority, so ``sp.pi * x`` stays traced.
    _op_priority = 1000.0
    __array_priority__ = 1000.0

    def __init__(self, expr: sp.Basic):
        self.expr = expr

    def _sympy_(self) -> sp.Basic:
        return self.expr

    def __repr__(self) -> str:
        return f"Traced({self.expr})"

    def __str__(self) -> str:
        return str(self.expr)

    def __hash__(self) -> int:
        return hash(self.expr)

    def __bool__(self):
        raise truth_error()

    def __neg__(self):
        return Traced(-_value(self.expr, "in arithmetic"))

    def __pos__(self):
        return self

    def __abs__(self):
        return Traced(sp.Abs(_value(self.expr, "in abs()")))

    def __invert__(self):
        return Traced(sp.Not(_condition(self.expr, "~")))

    def __floor__(self):
        return Traced(sp.floor(_value(self.expr, "in floor()")))

    def __ceil__(self):
        return Traced(sp.ceiling(_value(self.expr, "in ceil()")))

    __float__ = _not_a_number("a float (float(), math functions)")
    __int__ = _not_a_number("an int")
    __complex__ = _not_a_number("a complex number")
    __index__ = _not_a_number("an index or a size")
    __round__ = _not_a_number("an argument of round()")
    __trunc__ = _not_a_number("an argument of math.trunc()")

    def __iter__(self):
        raise located_error("a traced value is one element, not a sequence: it cannot be iterated or unpacked")

    def __getitem__(self, key):
        if not isinstance(self.expr, sp.IndexedBase):
            raise located_error("a traced value is one element: subscripts such as x[i] are only allowed in "
                                "gufuncs (ug.guvectorize / ug.gufunc), with an index ug.Idx('i')")
        keys = key if isinstance(key, tuple) else (key,)
        return Traced(self.expr[tuple(to_sympy(k) for k in keys)])

    def __xor__(self, other):
        raise located_error("'^' is not a power here (it would be bitwise xor); write x**2")

    __rxor__ = __xor__

    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        """NumPy ufuncs on traced values (``np.sin(x)``, ``np.float32(2) * x``) build the same nodes."""
        if method != "__call__" or kwargs:
            raise located_error(f"numpy.{ufunc.__name__}.{method} with {sorted(kwargs) or 'this method'} "
                                "cannot be traced; call it plainly, as np.sin(x)")
        op = _NUMPY_OPERATORS.get(ufunc.__name__)
        if op is None:
            from . import symbolic
            op = getattr(symbolic, ufunc.__name__, None) if ufunc.__name__ in symbolic.__all__ else None
        if op is None:
            raise located_error(f"numpy.{ufunc.__name__} has no formula equivalent; see ufuncgen.FUNCTIONS "
                                "for the functions a formula may use")
        return op(*(i if isinstance(i, Traced) else Traced(to_sympy(i)) for i in inputs))


_ARITHMETIC = {
    "add": (operator.add, "+"),
    "sub": (operator.sub, "-"),
    "mul": (operator.mul, "*"),
    "truediv": (operator.truediv, "/"),
    "floordiv": (lambda a, b: sp.floor(a / b), "//"),
    "mod": (sp.Mod, "%"),
    "pow": (operator.pow, "**"),
}
for _name, (_op, _sym) in _ARITHMETIC.items():
    _fwd, _rev = _arith(_op, _sym)
    setattr(Traced, f"__{_name}__", _fwd)
    setattr(Traced, f"__r{_name}__", _rev)

_COMPARISONS = {"lt": sp.StrictLessThan, "le": sp.LessThan, "gt": sp.StrictGreaterThan,
                "ge": sp.GreaterThan, "eq": sp.Eq, "ne": sp.Ne}
for _name, _cls in _COMPARISONS.items():
    setattr(Traced, f"__{_name}__", _compare(_cls))

for _name, (_cls, _sym) in {"and": (sp.And, "&"), "or": (sp.Or, "|")}.items():
    _fwd, _rev = _logic(_cls, _sym)
    setattr(Traced, f"__{_name}__", _fwd)
    setattr(Traced, f"__r{_name}__", _rev)

# NumPy ufunc name -> Python operator on traced values (the math functions come from ug.symbolic).
_NUMPY_OPERATORS = {
    "add": operator.add, "subtract": operator.sub, "multiply": operator.mul, "divide": operator.truediv,
    "true_divide": operator.truediv, "floor_divide": operator.floordiv, "remainder": operator.mod,
    "mod": operator.mod, "power": operator.pow, "float_power": operator.pow, "negative": operator.neg,
    "positive": operator.pos, "square": lambda a: a * a, "reciprocal": lambda a: 1 / a,
    "less": operator.lt, "less_equal": operator.le, "greater": operator.gt, "greater_equal": operator.ge,
    "equal": operator.eq, "not_equal": operator.ne, "logical_and": operator.and_,
    "logical_or": operator.or_, "logical_not": operator.invert,
}


# ---- tracing a function ---------------------------------------------------------------------
@dataclass(frozen=True)
class Trace:
    """What a traced function computes: output expressions over its parameters, in order."""

    exprs: tuple
    args: tuple
    multi: bool      # the function returned a tuple/list: one output each

    @property
    def formula(self):
        """The value to hand to ``ug.ufunc``: one expression, or a list of them."""
        return list(self.exprs) if self.multi else self.exprs[0]


def parameter_names(func: Callable) -> tuple:
    """The positional parameter names of ``func``: the ufunc's arguments, in order.

    Keyword-only parameters with defaults are constants, not arguments.
    """
    try:
        params = inspect.signature(func).parameters.values()
    except (TypeError, ValueError) as err:
        raise TypeError(f"cannot read the parameters of {func!r}: {err}") from err
    names = []
    for p in params:
        where = f"parameter {p.name!r} of {getattr(func, '__qualname__', func)}"
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            raise FormulaError(f"{where}: *args/**kwargs cannot be traced; name each input")
        if p.kind is p.KEYWORD_ONLY:
            if p.default is p.empty:
                raise FormulaError(f"{where} is keyword-only without a default; ufunc arguments are positional")
            continue  # a constant: traced with its default (as functools.partial(f, c=2.0) sets it)
        if p.default is not p.empty:
            raise FormulaError(f"{where} has a default value, but ufunc arguments have none; make it "
                               f"keyword-only (def f(x, *, {p.name}=...)) to keep it a constant, or drop the "
                               "default to make it an input")
        names.append(check_name(p.name))
    if not names:
        raise FormulaError(f"{getattr(func, '__qualname__', func)} takes no arguments; a ufunc needs inputs")
    return tuple(names)


def _sympy_truth_error(err: TypeError) -> bool:
    return "truth value of Relational" in str(err) or "cannot determine truth value" in str(err)


def _output(value, func) -> sp.Basic:
    if value is None:
        raise FormulaError(f"{getattr(func, '__qualname__', func)}() returned None; return the result "
                           "expression (or a tuple of them for several outputs)")
    try:
        return to_sympy(value)
    except FormulaError as err:
        raise FormulaError(f"{getattr(func, '__qualname__', func)}() returned {type(value).__name__}, "
                           "not an expression") from err


def trace(func: Callable, make_arg: Callable[[str], object] | None = None) -> Trace:
    """Call ``func`` once with one symbolic value per parameter and return what it computed.

    ``make_arg(name)`` makes the value passed for each parameter (default: a traced Symbol);
    gufunc tracing passes indexable values.  A tuple or list result means several outputs.
    """
    names = parameter_names(func)
    values = [make_arg(n) if make_arg is not None else Traced(sp.Symbol(n)) for n in names]
    try:
        result = func(*values)
    except TypeError as err:
        # SymPy's own relationals (e.g. from sp.sin(x) > 0) refuse bool() with a TypeError
        if _sympy_truth_error(err):
            raise truth_error(_traceback_location(err.__traceback__)) from err
        raise
    multi = isinstance(result, (tuple, list))
    items = list(result) if multi else [result]
    if multi and not items:
        raise FormulaError(f"{getattr(func, '__qualname__', func)}() returned an empty {type(result).__name__}")
    exprs = tuple(_output(v, func) for v in items)
    return Trace(exprs, names, multi)
