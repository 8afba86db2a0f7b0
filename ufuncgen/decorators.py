"""``@ug.vectorize``: a Python function, traced once on symbols, compiled as ``ug.ufunc`` would.

The decorator only traces (``ufuncgen.tracing``) and hands the expression to ``ug.ufunc``; the
result is that same ``UFunc`` object, with its ``.expr``, ``.source``, caching and targets.
"""
from __future__ import annotations

from collections.abc import Callable

from .errors import FormulaError
from .tracing import trace

__all__ = ["vectorize"]


def _where(func: Callable) -> str:
    code = getattr(func, "__code__", None)
    name = getattr(func, "__qualname__", repr(func))
    return f"{code.co_filename}:{code.co_firstlineno}: in {name}()" if code is not None else name


def _compile(func: Callable, signatures, target: str, name: str | None, options: dict):
    from .elementwise import ufunc

    traced = trace(func)
    if name is None and getattr(func, "__name__", "<lambda>").isidentifier():
        name = func.__name__
    try:
        uf = ufunc(traced.formula, args=traced.args, signatures=signatures, target=target, name=name, **options)
    except FormulaError as err:
        # a problem in the traced expression (an unsupported SymPy function, ...): say which function
        raise FormulaError(f"{_where(func)}: {err.reason}", err.formula, err.col) from err
    uf.__doc__ = func.__doc__
    uf.__wrapped__ = func
    uf.__module__ = getattr(func, "__module__", None)
    uf.__qualname__ = getattr(func, "__qualname__", uf.__name__)
    return uf


def vectorize(func: Callable | None = None, signatures=None, *, target: str = "cpu", name: str | None = None,
              **options):
    """Compile a scalar Python function into a ufunc, by tracing it once with SymPy symbols.

    Use it bare (``@ug.vectorize``) or with arguments (``@ug.vectorize(["float64(float64)"],
    target="parallel")``).  The parameters, in order, are the ufunc's arguments; return a tuple for
    several outputs.  Write conditions with ``ug.where``, ``&``, ``|`` and ``~``: Python's ``if``,
    ``and``, ``or``, ``not`` on a traced value raise a FormulaError naming the line.

    Args:
        func: the function (when used bare).
        signatures: Numba-style signature strings; None compiles lazily per input dtypes.
        target: ``"cpu"``, ``"parallel"``, ``"cuda"`` or ``"auto"``.
        name: the ufunc's ``__name__`` (default: the function's).
        **options: as for ``ug.ufunc`` (``fastmath``, ``cse``, ``cache``, ``device``).

    Returns:
        The ``UFunc`` that ``ug.ufunc`` returns for the traced expression (or a decorator).
    """
    if func is not None and (isinstance(func, (str, list, tuple)) or not callable(func)):
        # @ug.vectorize(["float64(float64)"]): the first positional argument is the signatures
        if signatures is not None:
            raise TypeError("vectorize() got signatures twice (positionally and as signatures=)")
        func, signatures = None, func

    def decorate(f: Callable):
        if not callable(f):
            raise TypeError(f"vectorize decorates a function, not a {type(f).__name__}")
        return _compile(f, signatures, target, name, options)

    return decorate if func is None else decorate(func)
