"""The math functions of traced code: ``ug.sin(x)``, ``ug.where(x > 0, x, 0)``, ``ug.sum(x[i], i)``, ...

Every name and alias of the function table ``ufuncgen.functions.FUNCTIONS`` becomes a function here,
made in one loop, so the traced spelling and the formula-string spelling build the same SymPy node
and accept the same arguments.  They take traced values (inside ``@ug.vectorize``), SymPy
expressions or numbers, and return a traced value when any argument was traced, else SymPy.

``sum``, ``prod``, ``max`` and ``min`` also reduce over an index (``ug.Idx``) in gufuncs, through
``ufuncgen.indexing``; ``__all__`` is what ``ug.<name>`` resolves to.
"""
from __future__ import annotations

import builtins
import functools
import operator
from collections.abc import Callable

import sympy as sp

from .functions import CONSTANTS, FUNCTIONS, Fn
from .parse import is_condition
from .tracing import Traced, located_error, to_sympy

_CONSTANT_NAMES = ("pi", "e", "inf", "nan")
_REDUCTIONS = ("sum", "prod", "max", "min")

__all__: list = []


def _values(name: str, args) -> list:
    out = []
    for a in args:
        v = to_sympy(a)
        if is_condition(v):
            raise located_error(f"{name}(): a condition is not a number here; use where(cond, 1, 0)")
        out.append(v)
    return out


def _piecewise_args(args) -> list:
    pairs = []
    for pair in args:
        if not (isinstance(pair, tuple) and len(pair) == 2):
            raise located_error("Piecewise takes (value, condition) pairs, as Piecewise((x, x > 0), (0, True))")
        value, cond = to_sympy(pair[0]), to_sympy(pair[1])
        if is_condition(value) or not is_condition(cond):
            raise located_error("Piecewise takes (value, condition) pairs, as Piecewise((x, x > 0), (0, True))")
        pairs.append((value, cond))
    if not pairs:
        raise located_error("Piecewise needs at least one (value, condition) pair")
    return pairs


def _where_args(args) -> list:
    cond = to_sympy(args[0])
    if not is_condition(cond):
        raise located_error("where(cond, a, b): the first argument must be a condition such as x > 0")
    return [cond, *_values("where", args[1:])]


# Functions whose arguments are not all plain values (the rest take values only, as in the parser).
_ARGUMENTS: dict[str, Callable] = {"Piecewise": _piecewise_args, "where": _where_args}


def apply(fn: Fn, name: str, args: tuple):
    """Build ``fn`` on these arguments: traced result if any argument is traced, else SymPy."""
    if fn.nargs and len(args) not in fn.nargs:
        want = " or ".join(map(str, fn.nargs[:3])) + (" or more" if len(fn.nargs) > 3 else "")
        raise located_error(f"{name}() takes {want} argument(s), got {len(args)}")
    sym_args = _ARGUMENTS.get(fn.name, lambda a: _values(name, a))(args)
    try:
        result = fn.build(*sym_args)
    except (TypeError, ValueError) as err:
        raise located_error(f"invalid call of {name}: {err}") from err
    traced = builtins.any(isinstance(a, Traced) for a in _flat(args))
    return Traced(result) if traced else result


def _flat(args):
    for a in args:
        if isinstance(a, tuple):
            yield from a
        else:
            yield a


def _make(fn: Fn, name: str) -> Callable:
    def function(*args):
        return apply(fn, name, args)

    spelled = f" (the same as {fn.name})" if name != fn.name else ""
    function.__name__ = function.__qualname__ = name
    function.__module__ = __name__
    function.__doc__ = (f"{fn.doc or fn.name}{spelled}.\n\nWorks on traced values (in @ug.vectorize), "
                        "SymPy expressions and numbers, building the same node as the formula text "
                        f"{name}(...).")
    return function


for _fn in FUNCTIONS:
    for _name in (_fn.name, *_fn.aliases):
        if _name not in _REDUCTIONS:
            globals()[_name] = _make(_fn, _name)
            __all__.append(_name)


# ---- reductions that double as elementwise functions ----------------------------------------
def _is_index(value) -> bool:
    if isinstance(value, sp.Idx):
        return True
    try:
        from . import indexing
    except ImportError:
        return False
    idx_type = getattr(indexing, "Idx", None)
    return isinstance(idx_type, type) and isinstance(value, idx_type)


def _reduce(kind: str, expr, index):
    """``ufuncgen.indexing.reduce_<kind>(sympy_expr, index)``, traced when ``expr`` is."""
    try:
        from . import indexing
    except ImportError as err:
        raise located_error(f"{kind}(expr, index) reduces over an index in a gufunc, and needs "
                            "ufuncgen.indexing, which is not available") from err
    result = getattr(indexing, f"reduce_{kind}")(to_sympy(expr), index)
    return Traced(to_sympy(result)) if isinstance(expr, Traced) else result


def _items(kind: str, args) -> list | None:
    """The values of ``kind([a, b, c])`` (one list, tuple or generator argument), else None."""
    if len(args) == 1 and isinstance(args[0], (list, tuple)) or \
            len(args) == 1 and hasattr(args[0], "__next__"):
        items = list(args[0])
        if not items:
            raise located_error(f"{kind}() of an empty sequence")
        return items
    return None


def sum(*args):  # noqa: A001 - ug.sum is the formula language's sum
    """sum(expr, i): the sum of ``expr`` over index ``i`` (gufuncs); sum([a, b, ...]): a + b + ..."""
    if len(args) == 2 and _is_index(args[1]):
        return _reduce("sum", *args)
    items = _items("sum", args)
    if items is None:
        raise located_error("sum(expr, i) sums over an index i = ug.Idx('i') (gufuncs); to add values, "
                            "write a + b or ug.sum([a, b])")
    return functools.reduce(operator.add, items)


def prod(*args):
    """prod(expr, i): the product of ``expr`` over index ``i`` (gufuncs); prod([a, b, ...]): a * b * ..."""
    if len(args) == 2 and _is_index(args[1]):
        return _reduce("prod", *args)
    items = _items("prod", args)
    if items is None:
        raise located_error("prod(expr, i) multiplies over an index i = ug.Idx('i') (gufuncs); to multiply "
                            "values, write a * b or ug.prod([a, b])")
    return functools.reduce(operator.mul, items)


def _extreme(kind: str, fn_name: str, args):
    if len(args) == 2 and _is_index(args[1]):
        return _reduce(kind, *args)
    items = _items(kind, args)
    if items is not None:
        args = tuple(items)
        if len(args) == 1:
            return args[0]
    from .functions import BY_NAME
    return apply(BY_NAME[fn_name], kind, args)


def max(*args):  # noqa: A001
    """max(a, b, ...): elementwise largest (NaN propagates); max(expr, i): the largest over index ``i``."""
    return _extreme("max", "Max", args)


def min(*args):  # noqa: A001
    """min(a, b, ...): elementwise smallest (NaN propagates); min(expr, i): the smallest over index ``i``."""
    return _extreme("min", "Min", args)


__all__ += list(_REDUCTIONS)

# ---- constants ------------------------------------------------------------------------------
pi = CONSTANTS["pi"]
e = CONSTANTS["e"]
inf = CONSTANTS["inf"]
nan = CONSTANTS["nan"]
__all__ += list(_CONSTANT_NAMES)

del _fn, _name
