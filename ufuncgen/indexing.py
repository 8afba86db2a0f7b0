"""Index notation for gufuncs: indices, reductions, the parser and the layout.

``x[i]`` indexes an input along a core dimension; ``sum(e, i)``, ``prod(e, i)``, ``max(e, i)`` and
``min(e, i)`` reduce over an index (they nest); an index left free in a result becomes an output
core dimension, in alphabetical order unless the layout orders them (einsum's implicit rule).
An index name stands for one dimension throughout the formula (as an einsum letter), even where
separate reductions bind it; indices of the same dimension may have different names
(``x[i] / sqrt(sum(x[j]**2, j))``).

Subscripts are a bare index or an index plus or minus an integer constant.  **Boundary rule for
stencils: indices wrap around (periodic)**, so ``x[i+1] - x[i]`` is ``np.roll(x, -1) - x`` and the
cross product is ``a[i+1]*b[i+2] - a[i+2]*b[i+1]`` with layout ``(3),(3)->(3)``.

Reductions over an empty dimension give the identity: 0 for sum, 1 for prod, -inf (the smallest
integer) for max and +inf (the largest integer) for min.  An index may also be used as a value
(``sum(c[k]*x**k, k)``); it then takes the dtype a Python int would (NumPy's weak scalars).
"""
from __future__ import annotations

import ast
import re
from dataclasses import dataclass

import sympy as sp
from sympy.core.sympify import _sympify

from .errors import FormulaError
from .formula import _ExprsOverArgs, check_sympy
from .functions import BY_NAME, CONSTANTS
from .parse import LIMITS, FormulaParser, Limits, check_name, is_condition

__all__ = ["Idx", "INDEX_NODES", "Reduction", "ReduceSum", "ReduceProd", "ReduceMax", "ReduceMin", "reduce_sum",
           "reduce_prod", "reduce_max", "reduce_min", "Layout", "parse_layout", "IndexedFormula",
           "make_indexed_formula", "IndexParser", "free_indices", "split_subscript", "substitute_index",
           "eliminate_deltas", "fresh_index"]


# ---- indices and reductions --------------------------------------------------------------------
class Idx(sp.Symbol):
    """A named index of a gufunc formula: ``i = ug.Idx("i")``, then ``x[i]`` and ``ug.sum(e, i)``."""

    def __new__(cls, name, **_assumptions):
        check_name(name)
        return super().__new__(cls, name, integer=True)

    # SymPy's printers treat classes named Idx as sympy.Idx: give them what they read
    @property
    def label(self):
        return sp.Symbol(self.name, integer=True)

    lower = upper = None


class Reduction(sp.Expr):
    """``op`` of ``body`` over the whole core dimension of ``index`` (the index is bound inside)."""

    op = ""
    is_commutative = True

    def __new__(cls, body, index):
        body = _sympify(body)
        if not isinstance(index, Idx):
            raise FormulaError(f"{cls.op}(e, i): the index must be an ug.Idx, not {index!r}")
        if is_condition(body):
            raise FormulaError(f"{cls.op}() of a condition: use where(cond, 1, 0) to count")
        return sp.Expr.__new__(cls, body, index)

    @property
    def body(self):
        return self.args[0]

    @property
    def index(self) -> Idx:
        return self.args[1]

    @property
    def free_symbols(self):
        return self.body.free_symbols - {self.index}

    def _eval_subs(self, old, new):
        if old == self.index:
            return self  # bound: not substituted
        return None

    def _eval_is_extended_real(self):
        return self.body.is_extended_real

    def _sympystr(self, printer):
        return f"{self.op}({printer._print(self.body)}, {self.index.name})"

    def _latex(self, printer):
        sym = {"sum": r"\sum", "prod": r"\prod", "max": r"\max", "min": r"\min"}[self.op]
        return f"{sym}_{{{self.index.name}}} \\left({printer._print(self.body)}\\right)"


class ReduceSum(Reduction):
    op = "sum"

    def _eval_derivative(self, s):
        d = sp.diff(self.body, s)
        return ReduceSum(d, self.index) if d != 0 else sp.S.Zero


class ReduceProd(Reduction):
    op = "prod"

    def _eval_derivative(self, s):
        """Product rule without division, so factors that are exactly zero are handled:
        d prod_k b_k = sum_k b'_k prod_{j != k} b_j (O(n^2); derivatives of products are rare)."""
        body, k = self.body, self.index
        d = sp.diff(body, s)
        if d == 0:
            return sp.S.Zero
        if k not in body.free_symbols:
            n = ReduceSum(sp.S.One, k)
            return n * body ** (n - 1) * d
        j = fresh_index(k, body.free_symbols | {k})
        others = ReduceProd(sp.Piecewise((sp.S.One, sp.Eq(j, k)), (substitute_index(body, k, j), True)), j)
        return ReduceSum(d * others, k)


class _Extremum(Reduction):
    def _eval_derivative(self, s):
        """The derivative at the extremum; ties share it equally (a subgradient)."""
        body, k = self.body, self.index
        d = sp.diff(body, s)
        if d == 0:
            return sp.S.Zero
        at = sp.Eq(body, self)
        hits = ReduceSum(sp.Piecewise((sp.S.One, at), (sp.S.Zero, True)), k)
        return ReduceSum(sp.Piecewise((d, at), (sp.S.Zero, True)), k) / hits


class ReduceMax(_Extremum):
    op = "max"


class ReduceMin(_Extremum):
    op = "min"


REDUCTIONS = {"sum": ReduceSum, "prod": ReduceProd, "max": ReduceMax, "min": ReduceMin}


def _as_index(index, op):
    if isinstance(index, Idx):
        return index
    if isinstance(index, sp.Idx):
        return Idx(index.label.name)
    if isinstance(index, sp.Symbol):
        return Idx(index.name)
    raise FormulaError(f"{op}(e, i): the index must be an ug.Idx (i = ug.Idx('i')), not {index!r}")


def _reduce(cls, expr, indices):
    if not indices:
        raise FormulaError(f"{cls.op}(e, i) needs the index to reduce over")
    out = _sympify(expr)
    for index in reversed(indices):  # the first index is the outermost loop
        out = cls(out, _as_index(index, cls.op))
    return out


def reduce_sum(expr, *indices):
    """Sum of ``expr`` over each index (``ug.sum(x[i]**2, i)``)."""
    return _reduce(ReduceSum, expr, indices)


def reduce_prod(expr, *indices):
    """Product of ``expr`` over each index."""
    return _reduce(ReduceProd, expr, indices)


def reduce_max(expr, *indices):
    """Largest value of ``expr`` over each index (NaN propagates; -inf over an empty dimension)."""
    return _reduce(ReduceMax, expr, indices)


def reduce_min(expr, *indices):
    """Smallest value of ``expr`` over each index (NaN propagates; +inf over an empty dimension)."""
    return _reduce(ReduceMin, expr, indices)


def free_indices(e) -> frozenset:
    """The indices free in ``e`` (reductions bind theirs)."""
    return frozenset(s for s in e.free_symbols if isinstance(s, Idx))


def split_subscript(term):
    """``i`` -> (i, 0); ``i + 2`` -> (i, 2); anything else -> None."""
    if isinstance(term, Idx):
        return term, 0
    if isinstance(term, sp.Add) and len(term.args) == 2:
        a, b = term.args
        if isinstance(a, sp.Integer) and isinstance(b, Idx):
            return b, int(a)
        if isinstance(b, sp.Integer) and isinstance(a, Idx):
            return a, int(b)
    return None


def substitute_index(e, old: Idx, new):
    """Replace the free occurrences of index ``old`` (not those bound by an inner reduction)."""
    if e == old:
        return new
    if isinstance(e, Reduction) and e.index == old:
        return e
    if not e.args or old not in e.free_symbols:
        return e
    return e.func(*[substitute_index(a, old, new) for a in e.args])


def eliminate_deltas(e):
    """``sum(f(i) * KroneckerDelta(i, t), i) -> f(t)``: the sums that differentiating by ``x[k]`` leaves.

    Deltas that cannot be summed away stay (the kernel compares the indices, wrapping stencils).
    Factors free of the summed index are taken out of what remains, so that a sum does not depend
    on the new index ``k`` and is computed once rather than once per ``k``.
    """
    if not e.args:
        return e
    args = [eliminate_deltas(a) for a in e.args]
    if args != list(e.args):
        e = e.func(*args)
    return _sum_deltas(e) if isinstance(e, ReduceSum) else e


def _sum_deltas(r):
    i = r.index
    keep, done = [], []
    for term in sp.Add.make_args(sp.expand_mul(r.body)):
        factors = [_pull_delta(f) for f in sp.Mul.make_args(term)]
        factors = [g for f in factors for g in sp.Mul.make_args(f)]
        hit = None
        for f in factors:
            t = _delta_solution(f, i) if isinstance(f, sp.KroneckerDelta) else None
            # i -> t is exact where t is a bare index, or where i only subscripts (which wrap)
            if t is not None and (split_subscript(t)[1] == 0 or _index_only_in_subscripts(term, i)):
                hit = (f, t)
                break
        if hit is None:
            keep.append(term)
        else:
            rest = sp.Mul(*[f for f in factors if f is not hit[0]])
            done.append(substitute_index(rest, i, hit[1]))
    if len(keep) == 1:  # sum(c*f(i), i) -> c*sum(f(i), i), so the sum need not run per value of c
        factors = sp.Mul.make_args(keep[0])
        outside = [f for f in factors if i not in f.free_symbols]
        inside = [f for f in factors if i in f.free_symbols]
        done.append(sp.Mul(*outside) * ReduceSum(sp.Mul(*inside), i))
    elif keep:
        done.append(ReduceSum(sp.Add(*keep), i))
    return sp.Add(*done)


def _delta_solution(delta, i):
    """t such that the delta holds for i == t (t free of i), or None."""
    a, b = delta.args
    for lhs, rhs in ((a, b), (b, a)):
        hit = split_subscript(lhs)
        if hit is not None and hit[0] == i and i not in rhs.free_symbols and split_subscript(rhs) is not None:
            return rhs - hit[1]
    return None


def _index_only_in_subscripts(e, i) -> bool:
    """False where ``i`` is used as a value (a shifted solution i = k - 1 would not wrap there)."""
    if isinstance(e, sp.Indexed):
        return True
    if isinstance(e, sp.KroneckerDelta):
        return True
    if e == i:
        return False
    return all(_index_only_in_subscripts(a, i) for a in e.args)


def _pull_delta(f):
    """Piecewise((d*a, c), ..., (0, True)) with one delta d in every nonzero branch -> d*Piecewise(...)."""
    if not isinstance(f, sp.Piecewise):
        return f
    deltas = None
    for pair in f.args:
        if pair.expr == 0:
            continue
        ds = {g for g in sp.Mul.make_args(pair.expr) if isinstance(g, sp.KroneckerDelta)}
        deltas = ds if deltas is None else deltas & ds
    if not deltas:
        return f
    d = sorted(deltas, key=sp.default_sort_key)[0]
    return d * sp.Piecewise(*[(pair.expr / d if pair.expr != 0 else pair.expr, pair.cond) for pair in f.args])


def fresh_index(like: Idx, taken) -> Idx:
    """``like``, or ``like_1``, ``like_2``, ... : an index named like none of ``taken``."""
    names = {s.name for s in taken}
    if like.name not in names:
        return like
    k = 1
    while f"{like.name}_{k}" in names:
        k += 1
    return Idx(f"{like.name}_{k}")


# ---- layouts --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Layout:
    """Core dimensions per input and per output; a dimension is a name or a fixed size (int)."""

    inputs: tuple
    outputs: tuple

    def __str__(self) -> str:
        def grp(dims):
            return "(" + ",".join(str(d) for d in dims) + ")"
        return ",".join(map(grp, self.inputs)) + "->" + ",".join(map(grp, self.outputs))


_GROUP = re.compile(r"\(([^()]*)\)")


def parse_layout(text: str) -> Layout:
    """Read NumPy's gufunc signature syntax, ``"(m,n),(n)->(m)"``; fixed sizes such as ``(3)`` too."""
    if isinstance(text, Layout):
        return text
    if not isinstance(text, str) or "->" not in text or len(text) > 2000:
        raise FormulaError(f"layout {text!r} does not parse; write it as '(m,n),(n)->(m)'")
    sides = []
    for part in text.replace(" ", "").split("->", 1):
        groups = []
        pos = 0
        while pos < len(part):
            m = _GROUP.match(part, pos)
            if m is None:
                raise FormulaError(f"layout {text!r} does not parse at {part[pos:]!r}; "
                                   "write it as '(m,n),(n)->(m)'")
            dims = []
            for d in filter(None, m.group(1).split(",")):
                if d.isdigit():
                    dims.append(int(d))
                elif d.isidentifier():
                    dims.append(d)
                else:
                    raise FormulaError(f"layout {text!r}: {d!r} is not a dimension name or size")
            groups.append(tuple(dims))
            pos = m.end()
            if pos < len(part):
                if part[pos] != ",":
                    raise FormulaError(f"layout {text!r}: expected ',' between groups at {part[pos:]!r}")
                pos += 1
        sides.append(tuple(groups))
    if not sides[1]:
        raise FormulaError(f"layout {text!r} has no outputs; write '->()' for a scalar output")
    return Layout(sides[0], sides[1])


# ---- the parser -----------------------------------------------------------------------------------
_SUBSCRIPT_HINT = "a subscript is an index name or an index plus or minus an integer constant: x[i], x[i+1], x[i-1]"
_MINMAX = {"max": "max", "Max": "max", "min": "min", "Min": "min"}


def _subscript_names(tree) -> set:
    """Names written inside subscripts: these are the indices of the formula."""
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Subscript):
            sl = node.slice
            for elt in sl.elts if isinstance(sl, ast.Tuple) else [sl]:
                parts = [elt] + ([elt.left, elt.right] if isinstance(elt, ast.BinOp) else [])
                names.update(p.id for p in parts if isinstance(p, ast.Name)
                             and p.id not in CONSTANTS and p.id not in BY_NAME)
    return names


class IndexParser(FormulaParser):
    """The formula parser plus subscripts ``x[i]`` and reductions ``sum(e, i)``, ``max(e, i)``, ..."""

    def __init__(self, text: str, limits: Limits = LIMITS):
        super().__init__(text, limits)
        self.index_names: set = set()
        self.bases: dict = {}       # array name -> IndexedBase
        self.ranks: dict = {}       # array name -> number of subscripts

    def parse(self):
        tree = self._parse_tree()
        self._check_size(tree)
        self.index_names = _subscript_names(tree)
        return self.visit(tree.body)

    def visit_Name(self, node):
        name = node.id
        if name in self.index_names:
            return Idx(name)
        if name in self.bases:
            raise self.error(f"{name!r} is an array (indexed as {name}[...] elsewhere); index it here too", node)
        return super().visit_Name(node)

    def visit_Subscript(self, node):
        base = node.value
        if not isinstance(base, ast.Name) or base.id in CONSTANTS or base.id in BY_NAME:
            raise self.error("only an input can be indexed, as x[i]", base)
        name = base.id
        if name in self.index_names:
            raise self.error(f"{name!r} is used both as an index and as an array", base)
        check_name(name, self.text, self.col(base))
        if name in self.symbols:
            raise self.error(f"{name!r} is used both as a scalar and as an array ({name}[...])", base)
        sl = node.slice
        terms = [self._subscript(e) for e in (sl.elts if isinstance(sl, ast.Tuple) else [sl])]
        rank = self.ranks.setdefault(name, len(terms))
        if rank != len(terms):
            raise self.error(f"{name!r} has {len(terms)} subscript(s) here but {rank} elsewhere", node)
        if name not in self.bases:
            if len(self.bases) + len(self.symbols) >= self.limits.max_args:
                raise self.error(f"too many distinct names (the limit is {self.limits.max_args})", node)
            self.bases[name] = sp.IndexedBase(name)
        return sp.Indexed(self.bases[name], *terms)

    def _subscript(self, node):
        if isinstance(node, ast.Name) and node.id in self.index_names:
            return Idx(node.id)
        if isinstance(node, ast.BinOp) and isinstance(node.op, (ast.Add, ast.Sub)):
            left, right = node.left, node.right
            sign = 1 if isinstance(node.op, ast.Add) else -1
            if isinstance(left, ast.Name) and left.id in self.index_names and _is_int(right):
                return Idx(left.id) + sign * right.value
            if sign == 1 and isinstance(right, ast.Name) and right.id in self.index_names and _is_int(left):
                return Idx(right.id) + left.value
        raise self.error(_SUBSCRIPT_HINT, node)

    def call(self, name, node):
        if name in REDUCTIONS or name in _MINMAX:
            rest = node.args[1:]
            index_like = [isinstance(a, ast.Name) and a.id in self.index_names for a in rest]
            if name in ("sum", "prod") or (rest and any(index_like)):
                return self._reduction(REDUCTIONS[_MINMAX.get(name, name)], name, node)
        return super().call(name, node)

    def _reduction(self, cls, name, node):
        if len(node.args) < 2:
            raise self.error(f"{name}(e, i) needs the index to reduce over, as {name}(x[i], i)", node)
        indices = []
        for a in node.args[1:]:
            if not isinstance(a, ast.Name):
                raise self.error(f"the index of {name}(e, i) must be an index name", a)
            if a.id not in self.index_names:
                raise self.error(f"{name}(..., {a.id}): {a.id!r} is not an index: no subscript uses it; reduce "
                                 f"over an index of the formula, as {name}(x[{a.id}], {a.id})", a)
            indices.append(Idx(a.id))
        body = self._value(self.visit(node.args[0]), node.args[0])
        try:
            return _reduce(cls, body, indices)
        except FormulaError as err:
            raise self.error(err.reason, node) from None


def _is_int(node) -> bool:
    return isinstance(node, ast.Constant) and type(node.value) is int and abs(node.value) < 2 ** 31


def parse_indexed(text: str, limits: Limits = LIMITS):
    """One index-notation formula string -> (SymPy expression, parser state)."""
    parser = IndexParser(text, limits)
    try:
        return parser.parse(), parser
    except RecursionError:
        raise FormulaError("formula is nested too deeply", text) from None


# ---- SymPy input ----------------------------------------------------------------------------------
# node classes of index notation, besides the formula language (the allow-list check takes them)
INDEX_NODES = (sp.Indexed, sp.IndexedBase, Idx, Reduction, sp.KroneckerDelta)
_SYMPY_EXTRA = INDEX_NODES + (sp.Idx, sp.Sum, sp.Product, sp.Tuple)


class _FromSympy:
    """SymPy ``Indexed``/``Sum``/``Product``/``Idx`` -> our canonical nodes, with dimension hints."""

    def __init__(self, text):
        self.text = text
        self.hints: dict = {}  # index name -> dim name or size, from Sum limits and Idx ranges

    def index_symbols(self, e) -> set:
        names = set()
        for node in sp.preorder_traversal(e):
            if isinstance(node, sp.Indexed):
                for s in node.indices:
                    names.update(x.name for x in s.free_symbols if isinstance(x, (sp.Symbol, sp.Idx)))
            elif isinstance(node, (sp.Sum, sp.Product)):
                names.update(lim[0].name for lim in node.limits)
            elif isinstance(node, (sp.Idx, Reduction)):
                names.add((node.index if isinstance(node, Reduction) else node).name)
        return names

    def convert(self, e):
        check_sympy(e, self.text, extra=_SYMPY_EXTRA)
        self.names = self.index_symbols(e)
        return self._walk(e)

    def _walk(self, e):
        if isinstance(e, sp.Idx):
            self._hint(e.label.name, e.upper, e.lower)
            return Idx(e.label.name)
        if isinstance(e, sp.Symbol) and e.name in self.names:
            return Idx(e.name)
        if isinstance(e, sp.Indexed):
            terms = [self._walk(t) for t in e.indices]
            for t in terms:
                if split_subscript(t) is None:
                    raise FormulaError(f"subscript {t} of {e}: {_SUBSCRIPT_HINT}", self.text)
            return sp.Indexed(sp.IndexedBase(e.base.label.name), *terms)
        if isinstance(e, sp.IndexedBase):  # an array name used bare: a scalar input
            return sp.Symbol(e.label.name)
        if isinstance(e, (sp.Sum, sp.Product)):
            cls = ReduceSum if isinstance(e, sp.Sum) else ReduceProd
            out = self._walk(e.function)
            for lim in e.limits:  # innermost first
                idx = Idx(lim[0].name)
                if len(lim) == 3:
                    self._hint(idx.name, lim[2], lim[1])
                out = cls(out, idx)
            return out
        if isinstance(e, Reduction):
            return type(e)(self._walk(e.body), e.index)
        if not e.args:
            return e
        return e.func(*[self._walk(a) for a in e.args])

    def _hint(self, name, upper, lower):
        if upper is None and lower is None:
            return
        if lower != 0 or upper is None:
            raise FormulaError(f"index {name} must run over its whole dimension, from 0 to n - 1 "
                               f"(got {lower} to {upper})", self.text)
        size = upper + 1
        if isinstance(size, sp.Integer):
            dim = int(size)
        elif isinstance(size, sp.Symbol):
            dim = size.name
        else:
            raise FormulaError(f"index {name} must run from 0 to n - 1 for a dimension n (got {upper})", self.text)
        if self.hints.setdefault(name, dim) != dim:
            raise FormulaError(f"index {name} runs over {self.hints[name]} and over {dim}", self.text)


# ---- the checked formula --------------------------------------------------------------------------
@dataclass(frozen=True)
class IndexedFormula(_ExprsOverArgs):
    """Index-notation output expressions over named inputs, with their checked layout.

    ``symbols[k]`` is a Symbol for a scalar input and an IndexedBase for an array input;
    ``out_indices[k]`` are output k's free indices in core-axis order; ``dims`` maps every index
    name to its dimension (a layout name or a fixed size).
    """

    exprs: tuple
    args: tuple
    symbols: tuple
    layout: Layout
    out_indices: tuple
    dims: tuple            # ((index name, dim), ...)
    text: str | None = None
    multi: bool = False

    @property
    def dim_of(self) -> dict:
        return dict(self.dims)

    def rank(self, k: int) -> int:
        return len(self.layout.inputs[k])

    def canonical(self) -> str:
        outs = ";".join(",".join(i.name for i in o) for o in self.out_indices)
        return ("|".join(sp.srepr(e) for e in self.exprs) + "@" + ",".join(self.args) + "@" + str(self.layout)
                + "@" + outs)

    def __str__(self) -> str:
        body = ", ".join(str(e) for e in self.exprs)
        return f"[{body}]" if self.multi else body


class _UnionFind:
    def __init__(self):
        self.parent: dict = {}

    def find(self, a):
        self.parent.setdefault(a, a)
        while self.parent[a] != a:
            self.parent[a] = self.parent[self.parent[a]]
            a = self.parent[a]
        return a

    def union(self, a, b):
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[rb] = ra


_DIM_NAMES = "nmpqrstuvw"


def _occurrences(exprs):
    """(array name, axis, index) for every subscript; the reductions; every index used as a value."""
    occ, reductions = [], []
    for e in exprs:
        for node in sp.preorder_traversal(e):
            if isinstance(node, sp.Indexed):
                for axis, term in enumerate(node.indices):
                    occ.append((node.base.label.name, axis, split_subscript(term)[0]))
            elif isinstance(node, Reduction):
                reductions.append(node)
    return occ, reductions


def _describe(index_names) -> str:
    names = sorted(index_names)
    return ("index " if len(names) == 1 else "indices ") + ", ".join(names)


def _check_layout(layout: Layout, args, ranks, text):
    if len(layout.inputs) != len(args):
        raise FormulaError(f"layout {layout} has {len(layout.inputs)} input(s); the formula takes "
                           f"{len(args)} ({', '.join(args)})", text)
    for name, dims in zip(args, layout.inputs, strict=True):
        rank = ranks.get(name)
        if rank is not None and rank != len(dims):
            used = "a scalar" if rank == 0 else f"indexed with {rank} subscript(s)"
            raise FormulaError(f"{name} is {used} in the formula, but layout {layout} gives it "
                               f"{len(dims)} core dimension(s) {tuple(dims)}", text)


def make_indexed_formula(formula, args=None, layout=None, out_indices=None, dims=None) -> IndexedFormula:
    """Check an index-notation formula (string, SymPy, or a list of them) and fix args and layout.

    ``out_indices``/``dims`` are for derived formulas (derivatives), which keep their parent's.
    """
    if isinstance(formula, IndexedFormula):
        if args is None and layout is None:
            return formula
        formula = list(formula.exprs) if formula.multi else formula.exprs[0]
    multi = isinstance(formula, (list, tuple))
    items = list(formula) if multi else [formula]
    if not items:
        raise FormulaError("an empty list of formulas")
    exprs, texts, hints = [], [], {}
    ranks: dict = {}
    for item in items:
        if isinstance(item, str):
            e, parser = parse_indexed(item)
            for n, r in parser.ranks.items():
                if ranks.setdefault(n, r) != r:
                    raise FormulaError(f"{n} has {r} subscript(s) in one formula and {ranks[n]} in another", item)
            texts.append(item)
        elif isinstance(item, sp.Basic):
            conv = _FromSympy(None)
            e = conv.convert(item)
            hints.update(conv.hints)
            texts.append(None)
        elif isinstance(item, (int, float)) and not isinstance(item, bool):
            e = sp.Float(item) if isinstance(item, float) else sp.Integer(item)
            texts.append(None)
        else:
            raise FormulaError(f"a formula must be a string or a SymPy expression, not {type(item).__name__}")
        exprs.append(e)
    text = texts[0] if not multi else "[" + ", ".join(t or str(e) for t, e in zip(texts, exprs, strict=True)) + "]"
    if dims:
        hints.update(dict(dims))
    return _assemble(tuple(exprs), args, layout, out_indices, hints, text, multi)


def _assemble(exprs, args, layout, out_indices, hints, text, multi) -> IndexedFormula:
    occ, reductions = _occurrences(exprs)
    # indices with a known dimension: those in subscripts, and (derived formulas) those given one
    subscripted = {idx.name for _, _, idx in occ} | set(hints)
    ranks: dict = {}
    for name, axis, _ in occ:
        ranks[name] = max(ranks.get(name, 0), axis + 1)
    for e in exprs:  # rank consistency for SymPy input (the parser checks strings itself)
        for node in sp.preorder_traversal(e):
            if isinstance(node, sp.Indexed) and len(node.indices) != ranks[node.base.label.name]:
                raise FormulaError(f"{node.base.label.name} has {len(node.indices)} subscript(s) in {node} "
                                   f"but {ranks[node.base.label.name]} elsewhere", text)
    for r in reductions:
        if r.index.name not in subscripted:
            raise FormulaError(f"{r.op}(..., {r.index.name}): reduction over unknown index {r.index.name}: "
                               f"no subscript uses it", text)
    scalars = set()
    for s in _value_symbols(exprs):
        if isinstance(s, Idx):
            if s.name not in subscripted:
                raise FormulaError(f"index {s.name} is never used in a subscript, so its size is unknown", text)
        else:
            scalars.add(s.name)
    clash = sorted(scalars & set(ranks))
    if clash:
        raise FormulaError(f"{clash[0]!r} is used both as a scalar and as an array ({clash[0]}[...])", text)
    clash = sorted((scalars | set(ranks)) & subscripted)
    if clash:
        raise FormulaError(f"{clash[0]!r} is used both as an index and as an input", text)
    for s in scalars:
        ranks[s] = 0
    arg_names = _arg_order(args, sorted(ranks), subscripted, text)
    exprs = _plain_symbols(exprs)
    lay = parse_layout(layout) if layout is not None else None
    if lay is not None:
        _check_layout(lay, arg_names, ranks, text)

    # dimensions: classes of (array, axis) slots and indices, pinned by the layout and hints
    uf = _UnionFind()
    for iname in hints:
        uf.find(("idx", iname))
    for name, axis, idx in occ:
        uf.union(("slot", name, axis), ("idx", idx.name))
    pinned: dict = {}
    if lay is not None:
        for name, dims in zip(arg_names, lay.inputs, strict=True):
            if ranks.get(name, 0):
                for axis, d in enumerate(dims):
                    pinned.setdefault(uf.find(("slot", name, axis)), []).append((d, f"{name} axis {axis}"))
    for iname, d in hints.items():
        if ("idx", iname) in uf.parent:
            pinned.setdefault(uf.find(("idx", iname)), []).append((d, f"the range of {iname}"))
    members: dict = {}
    for node in list(uf.parent):
        members.setdefault(uf.find(node), []).append(node)
    dim_of_class: dict = {}
    for root, nodes in members.items():
        found = pinned.get(root, [])
        names = sorted({d for d, _ in found}, key=str)
        if len(names) > 1:
            idx = sorted(n[1] for n in nodes if n[0] == "idx")
            where = ", ".join(f"{w} is {d}" for d, w in found)
            raise FormulaError(f"{_describe(idx)} used inconsistently: one index spans one dimension, but this "
                               f"spans {' and '.join(map(str, names))} ({where})", text)
        if names:
            dim_of_class[root] = names[0]
    if lay is None:  # name the free classes n, m, p, ... in order of first appearance
        used = set(dim_of_class.values())
        fresh = iter([c for c in _DIM_NAMES if c not in used] + [f"d{k}" for k in range(1000)])
        for name in arg_names:
            for axis in range(ranks.get(name, 0)):
                root = uf.find(("slot", name, axis))
                if root not in dim_of_class:
                    dim_of_class[root] = next(fresh)
    index_dim = {n[1]: dim_of_class[r] for r, nodes in members.items() for n in nodes if n[0] == "idx"}

    outs = _output_indices(exprs, out_indices, lay, index_dim, text)
    in_dims = tuple(tuple(dim_of_class[uf.find(("slot", name, a))] for a in range(ranks.get(name, 0)))
                    if name in ranks else (lay.inputs[k] if lay is not None else ())
                    for k, name in enumerate(arg_names))
    out_dims = tuple(tuple(index_dim[i.name] for i in o) for o in outs)
    if lay is not None:
        _check_outputs(lay, out_dims, outs, text)
        in_dims = lay.inputs
    have = {d for dims in in_dims for d in dims}
    for iname, d in sorted(index_dim.items()):
        if d not in have and not isinstance(d, int):
            raise FormulaError(f"index {iname} spans dimension {d}, which no input has", text)
    symbols = tuple(sp.IndexedBase(n) if ranks.get(n, 0) else sp.Symbol(n) for n in arg_names)
    return IndexedFormula(exprs, arg_names, symbols, Layout(in_dims, out_dims), outs,
                          tuple(sorted(index_dim.items())), text, multi)


def _arg_order(args, names, indices, text):
    if args is None:
        if not names:
            raise FormulaError("the formula has no arguments; name the inputs with args=(...)", text)
        return tuple(names)
    if isinstance(args, str):
        args = [a.strip() for a in args.replace(",", " ").split()]
    args = tuple(args)
    for a in args:
        if not isinstance(a, str):
            raise FormulaError(f"argument names must be strings, got {a!r}", text)
        check_name(a)
        if a in indices:
            raise FormulaError(f"{a!r} is an index of the formula (used in a subscript) and cannot be an argument",
                               text)
    dup = sorted({a for a in args if args.count(a) > 1})
    if dup:
        raise FormulaError(f"argument names repeat: {', '.join(dup)}", text)
    missing = [n for n in names if n not in args]
    if missing:
        raise FormulaError(f"the formula uses {', '.join(missing)}, which args={list(args)} does not list", text)
    if len(args) > LIMITS.max_args:
        raise FormulaError(f"too many arguments ({len(args)}; the limit is {LIMITS.max_args})", text)
    return args


def _value_symbols(exprs) -> set:
    """Symbols used as values (scalar inputs and index values), not array names."""
    out, stack = set(), list(exprs)
    while stack:
        e = stack.pop()
        if isinstance(e, sp.Symbol):
            out.add(e)
        elif isinstance(e, sp.Indexed):
            stack.extend(e.indices)
        elif not isinstance(e, sp.IndexedBase):
            stack.extend(e.args)
    return out


def _plain_symbols(exprs):
    """Scalars become plain Symbols (SymPy input may carry assumptions)."""
    subs = {}
    for s in _value_symbols(exprs):
        if not isinstance(s, Idx) and s != sp.Symbol(s.name):
            subs[s] = sp.Symbol(s.name)
    return tuple(e.xreplace(subs) for e in exprs) if subs else exprs


def _output_indices(exprs, given, lay, index_dim, text):
    if given is not None:
        outs = tuple(tuple(o) for o in given)
        for k, (e, o) in enumerate(zip(exprs, outs, strict=True)):
            extra = free_indices(e) - set(o)
            if extra:
                raise FormulaError(f"output {k}: {_describe(i.name for i in extra)} free but not an output axis",
                                   text)
        return outs
    outs = []
    for k, e in enumerate(exprs):
        free = sorted(free_indices(e), key=lambda i: i.name)
        if lay is not None and k < len(lay.outputs) and len(lay.outputs[k]) == len(free):
            ordered = []
            for d in lay.outputs[k]:
                match = [i for i in free if index_dim[i.name] == d and i not in ordered]
                if not match:
                    have = ", ".join(f"{i.name} ({index_dim[i.name]})" for i in free)
                    raise FormulaError(f"layout {lay}: output {k} has core dimension {d}, but the free indices "
                                       f"of that output are {have}", text)
                ordered.append(match[0])
            free = ordered
        outs.append(tuple(free))
    return tuple(outs)


def _check_outputs(lay, out_dims, outs, text):
    if len(lay.outputs) != len(out_dims):
        raise FormulaError(f"layout {lay} has {len(lay.outputs)} output(s); the formula gives {len(out_dims)}",
                           text)
    for k, (want, have, o) in enumerate(zip(lay.outputs, out_dims, outs, strict=True)):
        if len(want) != len(have):
            free = ", ".join(i.name for i in o) or "none"
            raise FormulaError(f"layout {lay}: output {k} has {len(want)} core dimension(s) {tuple(want)}, but the "
                               f"formula leaves {len(have)} index(es) free ({free}); each free index is one "
                               "output dimension", text)
