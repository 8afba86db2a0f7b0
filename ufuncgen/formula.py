"""A checked formula: SymPy expressions with a fixed argument order.

This is the first step of the flow (parse -> key -> codegen -> build -> wrap).  Strings go through
the allow-list parser; SymPy input is walked against the same function table.
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import sympy as sp

from .bounds import ALLOWED_CORE, LIMITS, check_tree
from .errors import FormulaError
from .functions import BY_SYMPY, fmod  # noqa: F401  (fmod registers a SymPy class)
from .parse import check_name, parse_formula

__all__ = ["Formula", "make_formula", "check_sympy", "ALLOWED_CORE"]


class _ExprsOverArgs:
    """Arity and expression of a formula kept as ``exprs`` over ``args`` (elementwise or indexed),
    so UFunc and GUFunc read both alike."""

    @property
    def nin(self) -> int:
        return len(self.args)

    @property
    def nout(self) -> int:
        return len(self.exprs)

    @property
    def expr(self):
        """The SymPy expression, or a tuple of them for several outputs."""
        return self.exprs if self.multi else self.exprs[0]


@dataclass(frozen=True)
class Formula(_ExprsOverArgs):
    """One or more output expressions over named inputs, in a fixed argument order."""

    exprs: tuple
    args: tuple
    text: str | None = None
    multi: bool = False          # given as a list: the result is a tuple even for one output
    symbols: tuple = field(default=(), compare=False)

    def canonical(self) -> str:
        """Text that two spellings of the same formula share (the first part of cache keys).

        Memoised, like ``str()``: SymPy's printers cost milliseconds, which a warm disk-cache
        load would otherwise pay several times per ufunc."""
        text = self.__dict__.get("_canonical")
        if text is None:
            try:
                body = "|".join(sp.srepr(e) for e in self.exprs)
            except TypeError:  # srepr sorts terms, which fails for some expressions holding nan
                body = "|".join(sp.srepr(e, order="none") for e in self.exprs)
            text = body + "@" + ",".join(self.args)
            object.__setattr__(self, "_canonical", text)
        return text

    def __str__(self) -> str:
        text = self.__dict__.get("_str")
        if text is None:
            try:
                body = ", ".join(str(e) for e in self.exprs)
            except (TypeError, ValueError, ArithmeticError):  # str() compares numbers, which fails with nan
                try:
                    body = ", ".join(sp.sstr(e, order="none") for e in self.exprs)
                except (TypeError, ValueError, ArithmeticError):
                    body = ", ".join(sp.srepr(e, order="none") for e in self.exprs)
            text = f"[{body}]" if self.multi else body
            object.__setattr__(self, "_str", text)
        return text


def check_sympy(expr, formula_text: str | None = None, extra: tuple = ()) -> None:
    """Raise FormulaError unless every node of ``expr`` is in the allow-list and within the limits.

    SymPy input gets the bounds string input gets (size, depth, size of numbers, powers that would
    multiply out huge constants), plus: classes must come from SymPy or ufuncgen (a user subclass
    could print or evaluate anything) and symbol names must be printable and of bounded length.
    """
    check_tree(expr, formula_text, LIMITS, allowed=ALLOWED_CORE + tuple(BY_SYMPY), extra=tuple(extra))


def _to_expr(item, extra: tuple):
    if isinstance(item, str):
        return parse_formula(item), item
    if isinstance(item, sp.Basic):
        check_sympy(item, None, extra)
        return item, None
    if isinstance(item, (int, float, complex)) and not isinstance(item, bool):
        expr = sp.sympify(item)  # a plain Python number, never text
        check_tree(expr, None, LIMITS)
        return expr, None
    raise FormulaError(f"a formula must be a string or a SymPy expression, not {type(item).__name__}")


def _canonical_symbols(exprs, text):
    """Replace symbols by plain ones keyed by name (SymPy input may carry assumptions)."""
    by_name: dict[str, sp.Symbol] = {}
    subs = {}
    for e in exprs:
        for s in e.free_symbols:
            if not isinstance(s, sp.Symbol):
                continue
            plain = by_name.setdefault(s.name, sp.Symbol(s.name))
            if s != plain:
                subs[s] = plain
    if subs:
        exprs = tuple(e.xreplace(subs) for e in exprs)
    return exprs, by_name


def make_formula(formula, args: Sequence[str] | None = None, extra_nodes: tuple = ()) -> Formula:
    """Check ``formula`` (string, SymPy expression, or a list/tuple of them) and fix the argument order."""
    if isinstance(formula, Formula):
        if args is None or tuple(args) == formula.args:
            return formula
        formula = list(formula.exprs) if formula.multi else formula.exprs[0]
    multi = isinstance(formula, (list, tuple))
    items: Iterable = formula if multi else [formula]
    if multi and not items:
        raise FormulaError("an empty list of formulas")
    if multi and len(items) > LIMITS.max_args:
        raise FormulaError(f"too many formulas in one list ({len(items)}; the limit is {LIMITS.max_args})")
    exprs, texts = [], []
    for item in items:
        e, t = _to_expr(item, extra_nodes)
        exprs.append(e)
        texts.append(t)
    text = texts[0] if not multi else ("[" + ", ".join(t or str(e) for t, e in zip(texts, exprs, strict=True)) + "]")
    exprs, by_name = _canonical_symbols(tuple(exprs), text)
    names = sorted(by_name)
    if args is None:
        arg_names = tuple(names)
    else:
        if isinstance(args, str):
            args = [a.strip() for a in args.replace(",", " ").split()]
        arg_names = tuple(args)
        if len(arg_names) > LIMITS.max_args:
            raise FormulaError(f"too many arguments ({len(arg_names)}; the limit is {LIMITS.max_args})", text)
        for a in arg_names:
            if not isinstance(a, str):
                raise FormulaError(f"argument names must be strings, got {a!r}"[:200], text)
            if a not in by_name:  # an unused input: a plain name, as in a formula string
                check_name(a, text)
        seen: set = set()
        dup = sorted({a for a in arg_names if a in seen or seen.add(a)})
        if dup:
            raise FormulaError(f"argument names repeat: {', '.join(dup)}", text)
        missing = [n for n in names if n not in arg_names]
        if missing:
            raise FormulaError(f"the formula uses {', '.join(missing)}, which args={list(arg_names)} does not list",
                               text)
    if not arg_names:
        raise FormulaError("the formula has no arguments; name the inputs with args=(...)", text)
    if len(arg_names) > LIMITS.max_args:
        raise FormulaError(f"too many arguments ({len(arg_names)}; the limit is {LIMITS.max_args})", text)
    symbols = tuple(by_name.get(a, sp.Symbol(a)) for a in arg_names)
    return Formula(tuple(exprs), arg_names, text, multi, symbols)
