"""Index-notation formula -> Python source of a gufunc kernel (loops) that Numba compiles.

The kernel takes the core slices of the inputs and writes the outputs, as ``numba.guvectorize``
kernels do.  How the loops are made:

* one loop nest per output (outputs with the same free indices share it), over its free indices
  in output-axis order;
* every reduction and every other subexpression is computed in the outermost loop where all its
  free indices are bound (loop-invariant code motion): softmax's max and its sum are computed
  once per call, before the loop over the output, not once per element; a repeated
  subexpression is computed once per loop level;
* ``sum(A_k * b**k, k)`` with ``b`` invariant in ``k`` runs as Horner's rule (no pow per term);
* accumulators and literals are typed to the signature (a float32 kernel has no float64 in it;
  integer sums accumulate in int64, as ``np.sum`` does);
* stencil subscripts wrap around (``x[(i + 1) % n]``), the documented boundary rule.
"""
from __future__ import annotations

import hashlib

import numpy as np
import sympy as sp

from .codegen import KernelPrinter, KernelSource, _safe, common_subexpressions, rebuild, safe_param_names
from .dtypes import _Infer, dtype_name, literal_dtype
from .indexing import Idx, IndexedFormula, ReduceSum, Reduction, free_indices, split_subscript, substitute_index
from .parse import is_condition, remake

__all__ = ["generate_gukernel", "GuTyper", "reduction_dtype", "output_dtypes"]


# ---- types ------------------------------------------------------------------------------------------
def reduction_dtype(op: str, body: np.dtype) -> np.dtype:
    """Accumulator dtype: sums and products of small integers and bools accumulate in 64 bits (``np.sum``)."""
    if op in ("sum", "prod"):
        if body.kind == "b" or body.kind == "i" and body.itemsize < 8:
            return np.dtype(np.int64)
        if body.kind == "u" and body.itemsize < 8:
            return np.dtype(np.uint64)
    elif body.kind == "c":
        raise TypeError(f"{op}() of complex values is not defined")
    return body


class GuTyper(_Infer):
    """NumPy's promotion rules, plus array elements, index values and reductions."""

    def __init__(self, formula: IndexedFormula, in_dtypes: tuple):
        in_dtypes = tuple(np.dtype(d) for d in in_dtypes)
        scalars = {s: dt for s, dt in zip(formula.symbols, in_dtypes, strict=True) if isinstance(s, sp.Symbol)}
        super().__init__(scalars, in_dtypes)
        self.arrays = {s.label.name: dt for s, dt in zip(formula.symbols, in_dtypes, strict=True)
                       if isinstance(s, sp.IndexedBase)}
        # an index used as a value is a weak Python int: float32 stays float32; int64 otherwise
        weak = literal_dtype(1, in_dtypes)
        self.index_dtype = weak if weak.kind in "fc" else np.dtype(np.int64)

    def _infer(self, e) -> np.dtype:
        if isinstance(e, Idx):
            return self.index_dtype
        if isinstance(e, sp.Indexed):
            return self.arrays[e.base.label.name]
        if isinstance(e, Reduction):
            return reduction_dtype(e.op, self(e.body))
        if isinstance(e, sp.KroneckerDelta):
            return self.index_dtype
        return super()._infer(e)


def output_dtypes(formula: IndexedFormula, in_dtypes: tuple) -> tuple:
    """The result dtypes NumPy's rules give the formula for these input dtypes."""
    typer = GuTyper(formula, in_dtypes)
    try:
        return tuple(typer(e) for e in formula.exprs)
    except TypeError as err:
        names = ", ".join(np.dtype(d).name for d in in_dtypes)
        raise TypeError(f"{err} (inputs: {names})") from None


# ---- printing -----------------------------------------------------------------------------------------
class GuPrinter(KernelPrinter):
    """KernelPrinter plus array elements (with wrapped stencil subscripts) and index values."""

    def __init__(self, names, typer, constants, index_vars, sizes, arrays):
        super().__init__(names, typer, constants)
        self._ivars = index_vars   # Idx -> loop variable
        self._sizes = sizes        # Idx -> size variable
        self._arrays = arrays      # array name -> parameter name
        self._raw = False

    def _subscript(self, term) -> str:
        idx, off = split_subscript(term)
        var = self._ivars[idx]
        if off == 0:
            return var
        return f"({var} {'+' if off > 0 else '-'} {abs(off)}) % {self._sizes[idx]}"

    def _print_Indexed(self, e):
        return f"{self._arrays[e.base.label.name]}[{', '.join(self._subscript(t) for t in e.indices)}]"

    def _print_Idx(self, e):
        var = self._ivars[e]
        dt = self._typer(e)
        return var if self._raw or dt == np.int64 else f"np.{dt.name}({var})"

    def _print_KroneckerDelta(self, e):  # from derivatives by array elements; stencils compare wrapped
        a, b = (self._subscript(t) if split_subscript(t) else self._doprint_raw(t) for t in e.args)
        dt = self._typer(e)
        return f"({self._const(1, dt)} if {a} == {b} else {self._const(0, dt)})"

    def _print_Relational(self, e):
        # comparisons of indices (from derivatives of products) stay in integers
        raw = all(isinstance(s, Idx) for s in e.free_symbols) and all(
            isinstance(a, (Idx, sp.Integer)) or split_subscript(a) for a in e.args)
        old, self._raw = self._raw, raw
        try:
            if raw:
                return f"({self._doprint_raw(e.lhs)} {e.rel_op} {self._doprint_raw(e.rhs)})"
            return super()._print_Relational(e)
        finally:
            self._raw = old

    def _doprint_raw(self, a):
        if isinstance(a, sp.Integer):
            return str(int(a))
        if isinstance(a, Idx):
            return self._ivars[a]
        idx, off = split_subscript(a)
        return f"({self._ivars[idx]} + {off})"

    _print_Equality = _print_Unequality = _print_StrictLessThan = _print_LessThan = _print_Relational
    _print_StrictGreaterThan = _print_GreaterThan = _print_Relational


# ---- loops ----------------------------------------------------------------------------------------------
class _Block:
    """The body of one loop (or of the function): lines and nested blocks, in order."""

    def __init__(self, index=None, var=None, header=None):
        self.index = index
        self.var = var
        self.header = header
        self.lines: list = []
        self.memo: dict = {}   # expression -> temporary holding it at this level

    def render(self, indent: int, out: list) -> None:
        pad = "    " * indent
        for line in self.lines:
            if isinstance(line, _Block):
                out.append(pad + line.header)
                line.render(indent + 1, out)
            else:
                out.append(pad + line)


_IDENTITY = {"sum": 0, "prod": 1}
# max/min: NaN propagates (as np.max); values are compared only once neither is NaN, so no signalling
# compare sets the FP 'invalid' flag (np.maximum's does, and NumPy then warns on NaN input)
_UPDATE = {"sum": "{t} += {v}", "prod": "{t} *= {v}",
           "max": "{u} = {v}\nif not np.isnan({t}):\n    if np.isnan({u}):\n        {t} = {u}\n"
                  "    elif {u} > {t}:\n        {t} = {u}",
           "min": "{u} = {v}\nif not np.isnan({t}):\n    if np.isnan({u}):\n        {t} = {u}\n"
                  "    elif {u} < {t}:\n        {t} = {u}"}


def _extreme(op: str, dt: np.dtype):
    """Identity of max/min: -inf/+inf, or the integer limits."""
    if dt.kind == "f":
        return float("-inf") if op == "max" else float("inf")
    if dt.kind in "iu":
        info = np.iinfo(dt)
        return int(info.min) if op == "max" else int(info.max)
    if dt.kind == "b":
        return op == "min"
    raise TypeError(f"{op}() of {dt} values is not defined")


class _Lowering:
    def __init__(self, formula: IndexedFormula, in_dtypes, out_dtypes, cse: bool, printer: type | None = None):
        self.f = formula
        self.printer = printer or GuPrinter
        self.typer = GuTyper(formula, in_dtypes)
        self.cse = cse
        params = safe_param_names(formula.args)
        self.params = params
        self.names = {s: p for s, p in zip(formula.symbols, params, strict=True) if isinstance(s, sp.Symbol)}
        self.arrays = {s.label.name: p for s, p in zip(formula.symbols, params, strict=True) if isinstance(s, sp.IndexedBase)}
        self.outs = tuple(f"_out{k}" for k in range(formula.nout))
        self.out_dtypes = tuple(np.dtype(d) for d in out_dtypes)
        self.consts: dict = {}
        self.stored: dict = {}     # reduction -> output buffer that keeps its terms
        self.ntemp = 0
        self.taken = set(params) | set(self.outs)
        self.free_memo: dict = {}
        # one size variable per dimension, read from the first input axis that has it
        self.size_var: dict = {}
        self.prologue: list = []
        for k, dims in enumerate(formula.layout.inputs):
            for axis, d in enumerate(dims):
                if isinstance(d, int):  # a fixed size (NumPy checks it): a literal, so i % 3 is cheap
                    self.size_var[d] = str(d)
                elif d not in self.size_var:
                    self.size_var[d] = name = f"_n{len(self.size_var)}"
                    self.prologue.append(f"{name} = {params[k]}.shape[{axis}]")
        dim_of = formula.dim_of
        for d in dim_of.values():
            if isinstance(d, int) and d not in self.size_var:  # a fixed size no input has
                self.size_var[d] = str(d)
        self.index_size = {Idx(n): self.size_var[d] for n, d in dim_of.items() if d in self.size_var}

    # ---- naming ----
    def temp(self, dt: np.dtype) -> sp.Symbol:
        t = sp.Symbol(f"_t{self.ntemp}")
        self.ntemp += 1
        self.typer.sym[t] = np.dtype(dt)
        self.names[t] = t.name
        return t

    def loop_var(self, idx: Idx, chain) -> str:
        bound = {b.var for b in chain}
        name = idx.name
        if not _safe(name) or name in bound or name in self.taken or name.startswith("_"):
            k = 0
            while f"_i{k}" in bound:
                k += 1
            name = f"_i{k}"
        return name

    def code(self, e, chain, cast: np.dtype | None = None) -> str:
        ivars = {}
        for b in chain[1:]:
            ivars[b.index] = b.var
        printer = self.printer(self.names, self.typer, self.consts, ivars, self.index_size, self.arrays)
        text = printer.doprint(e)
        if cast is not None and self.typer(e) != cast:
            text = f"np.{cast.name}({text})"
        return text

    # ---- placement ----
    def free(self, e) -> frozenset:
        f = self.free_memo.get(e)
        if f is None:
            f = self.free_memo[e] = free_indices(e)
        return f

    def place(self, e, chain) -> int:
        free = self.free(e)
        for d in range(len(chain) - 1, 0, -1):
            if chain[d].index in free:
                return d
        return 0

    # ---- lowering ----
    def lower(self, e, chain):
        """``e`` rewritten for the innermost block of ``chain``: reductions and invariant parts
        become temporaries computed in outer blocks."""
        if not e.args or isinstance(e, (sp.Indexed, sp.IndexedBase)) or e.is_Atom:
            return e
        depth = self.place(e, chain)
        if isinstance(e, Reduction) or (depth < len(chain) - 1 and _hoistable(e)):
            return self.hoisted(e, chain[:depth + 1])
        return self.rebuild(e, chain)

    def rebuild(self, e, chain):
        if len(chain) > 1 and isinstance(e, sp.Mul):
            return self._split_mul(e, chain)
        if len(chain) > 1 and isinstance(e, sp.Add):
            return self._split_add(e, chain)
        return remake(e, [self.lower(a, chain) for a in e.args])

    def _split_add(self, e, chain):
        inner = len(chain) - 1
        var = [a for a in e.args if self.place(a, chain) == inner]
        inv = [a for a in e.args if self.place(a, chain) != inner]
        parts = [self.lower(a, chain) for a in var]
        if inv:
            parts.append(self.lower(sp.Add(*inv), chain))
        return sp.Add(*parts)

    def _split_mul(self, e, chain):
        """Invariant factors are grouped and hoisted; an invariant denominator stays a division."""
        inner = len(chain) - 1
        var, num, den = [], [], []
        for a in e.args:
            if self.place(a, chain) == inner:
                var.append(a)
            elif isinstance(a, sp.Pow) and a.exp.is_Number and a.exp.is_negative:
                den.append(sp.Pow(a.base, -a.exp))
            else:
                num.append(a)
        parts = [self.lower(a, chain) for a in var]
        parts += [a for a in num if a.is_Number]
        rest = [a for a in num if not a.is_Number]
        if rest:
            parts.append(self.lower(sp.Mul(*rest), chain))
        if den:
            parts.append(sp.Pow(self.lower(sp.Mul(*den), chain), -1))
        return sp.Mul(*parts)

    def hoisted(self, e, chain):
        """A temporary for ``e`` in the innermost block of ``chain`` (once per block)."""
        blk = chain[-1]
        t = blk.memo.get(e)
        if t is None:
            if isinstance(e, Reduction):
                t = self.reduction(e, chain)
            else:
                val = self.rebuild(e, chain)
                if not val.args or isinstance(val, sp.Indexed):
                    return val
                t = self.temp(self.typer(e))
                blk.lines.append(f"{t.name} = {self.code(val, chain, self.typer(t))}")
            blk.memo[e] = t
        return t

    def reduction(self, r: Reduction, chain):
        blk = chain[-1]
        acc_dt = self.typer(r)
        if isinstance(r, ReduceSum):
            groups, rest = _horner_split(r.body, r.index, self.free)
            if groups:
                parts = [self._horner(base, sp.Add(*coef), r.index, acc_dt, chain) for base, coef in groups.items()]
                if rest:
                    parts.append(self.hoisted(ReduceSum(sp.Add(*rest), r.index), chain))
                if len(parts) == 1:
                    return parts[0]
                t = self.temp(acc_dt)
                blk.lines.append(f"{t.name} = {' + '.join(p.name for p in parts)}")
                return t
        t = self.temp(acc_dt)
        if r.op in _IDENTITY:
            init = _IDENTITY[r.op]
        else:
            init = _extreme(r.op, acc_dt)
        blk.lines.append(f"{t.name} = {self._const(init, acc_dt)}")
        loop, inner = self._loop(r.index, chain)
        val = self.lower(r.body, inner)
        value = self.code(val, inner, acc_dt)
        if r in self.stored:  # keep the term in the output buffer (see _materialize)
            u = "_u" + t.name[2:]
            loop.lines.append(f"{u} = {self.code(val, inner)}")
            loop.lines.append(f"{self.stored[r]}[{', '.join(b.var for b in inner[1:])}] = {u}")
            value = u if self.typer(val) == acc_dt else f"np.{acc_dt.name}({u})"
        update = _UPDATE[r.op].format(t=t.name, u="_v" + t.name[2:], v=value)
        loop.lines.extend(update.split("\n"))
        blk.lines.append(loop)
        return t

    def _horner(self, base, coef, k, acc_dt, chain):
        """sum_k coef_k * base**k as ((c_{n-1} b + c_{n-2}) b + ...) + c_0."""
        blk = chain[-1]
        t = self.temp(acc_dt)
        blk.lines.append(f"{t.name} = {self._const(0, acc_dt)}")
        b = self.lower(base, chain)
        loop, inner = self._loop(k, chain, reverse=True)
        c = self.lower(coef, inner)
        loop.lines.append(f"{t.name} = {t.name} * {self.code(b, inner, acc_dt)} + {self.code(c, inner, acc_dt)}")
        blk.lines.append(loop)
        return t

    def _loop(self, idx: Idx, chain, reverse: bool = False):
        var = self.loop_var(idx, chain)
        size = self.index_size[idx]
        rng = f"range({size} - 1, -1, -1)" if reverse else f"range({size})"
        loop = _Block(idx, var, f"for {var} in {rng}:")
        return loop, chain + [loop]

    def _const(self, value, dt) -> str:
        printer = self.printer(self.names, self.typer, self.consts, {}, {}, {})
        return printer._const(value, np.dtype(dt))

    # ---- outputs ----
    def body(self) -> list:
        root = _Block()
        groups: dict = {}
        for k, o in enumerate(self.f.out_indices):
            groups.setdefault(o, []).append(k)
        for indices, ks in groups.items():
            chain = [root]
            for idx in indices:
                _, chain = self._loop(idx, chain)
            exprs = [self.f.exprs[k] for k in ks]
            if len(ks) == 1 and indices:
                exprs = [self._materialize(exprs[0], ks[0], chain)]
            vals = [self.lower(e, chain) for e in exprs]
            if self.cse:
                vals = self._cse(vals, chain)
            where = ", ".join(b.var for b in chain[1:]) or "0"
            for k, v in zip(ks, vals, strict=True):
                chain[-1].lines.append(f"{self.outs[k]}[{where}] = {self.code(v, chain, self.out_dtypes[k])}")
            for d in range(len(chain) - 1, 0, -1):
                chain[d - 1].lines.append(chain[d])
        out: list = []
        root.render(1, out)
        return out

    def _materialize(self, e, k: int, chain):
        """Keep a reduction's terms in the output buffer when the output reuses them.

        In softmax ``exp(x[i]-m) / sum(exp(x[k]-m), k)`` the loop of the sum stores each
        ``exp(x[k]-m)`` in ``out[k]``, and the output loop reads ``out[i]`` instead of computing the
        exp again (as a hand-written kernel does).  Only for a reduction over the innermost output
        dimension, computed just outside that loop, whose terms have the output's dtype.
        """
        i = chain[-1].index
        dim_of = self.f.dim_of
        for r in _top_reductions(e):
            if r.op == "sum" and _horner_split(r.body, r.index, self.free)[0]:
                continue
            if dim_of[r.index.name] != dim_of[i.name] or self.place(r, chain) != len(chain) - 2:
                continue
            term = substitute_index(r.body, r.index, i)
            if term.is_Atom or isinstance(term, sp.Indexed) or self.typer(term) != self.out_dtypes[k]:
                continue
            replaced = _replace_free(e, term, i, sp.IndexedBase(self.outs[k])[tuple(b.index for b in chain[1:])])
            if replaced != e:
                self.arrays[self.outs[k]] = self.outs[k]
                self.typer.arrays[self.outs[k]] = self.out_dtypes[k]
                self.stored[r] = self.outs[k]
                return replaced
        return e

    def _cse(self, vals, chain):
        """Temporaries for repeated subexpressions (``codegen.common_subexpressions``: the trees are
        rebuilt unevaluated, where SymPy's ``cse`` would apply identities that change values at
        singular points).  Array elements and index arithmetic stay in place: they are printed as
        subscripts and integer comparisons, never as temporaries."""
        leaves: dict = {}
        for v in vals:
            _collect_leaves(v, leaves)
        names = _names("_s", self)
        repl, reduced = common_subexpressions([rebuild(v, leaves) for v in vals], lambda: next(names))
        back = {d: node for node, d in leaves.items()}
        repl = [(sym, rebuild(val, back)) for sym, val in repl]
        reduced = [rebuild(v, back) for v in reduced]
        for sym, val in repl:
            self.typer.sym[sym] = self.typer(val)
            self.names[sym] = sym.name
            chain[-1].lines.append(f"{sym.name} = {self.code(val, chain)}")
        return reduced


def _names(prefix, lowering):
    k = 0
    while True:
        name = f"{prefix}{k}"
        k += 1
        if name not in lowering.taken:
            yield sp.Symbol(name)


def _is_leaf(e) -> bool:
    """An array element, or index arithmetic (``i + 1``, ``KroneckerDelta(i, k)``, ``i < k``)."""
    if isinstance(e, sp.Indexed):
        return True
    free = e.free_symbols if not e.is_Atom else ()
    return bool(free) and all(isinstance(s, Idx) for s in free)


def _collect_leaves(e, leaves: dict) -> None:
    """The outermost leaves of ``e`` (see ``_is_leaf``), each mapped to a placeholder symbol."""
    if _is_leaf(e):
        if e not in leaves:
            leaves[e] = sp.Dummy(f"leaf{len(leaves)}")
        return
    for a in e.args:
        _collect_leaves(a, leaves)


def _top_reductions(e):
    """Reductions of ``e`` that are not inside another reduction."""
    if isinstance(e, Reduction):
        yield e
        return
    for a in e.args:
        yield from _top_reductions(a)


def _replace_free(e, old, index: Idx, new):
    """Replace ``old`` by ``new`` where ``index`` is free (not inside a reduction over ``index``)."""
    if e == old:
        return new
    if not e.args or (isinstance(e, Reduction) and e.index == index):
        return e
    return remake(e, [_replace_free(a, old, index, new) for a in e.args])


def _hoistable(e) -> bool:
    return (isinstance(e, sp.Expr) or is_condition(e)) and not isinstance(
        e, sp.functions.elementary.piecewise.ExprCondPair)


def _horner_split(body, k, free):
    """Terms A * b**k with ``b`` free of ``k``, grouped by ``b``; the other terms."""
    groups: dict = {}
    rest = []
    for term in sp.Add.make_args(body):
        hit = None
        for f in sp.Mul.make_args(term):
            if isinstance(f, sp.Pow) and f.exp == k and k not in free(f.base) and not f.base.is_Number:
                hit = f
                break
        if hit is None:
            rest.append(term)
        else:
            groups.setdefault(hit.base, []).append(term / hit)
    return groups, rest


def generate_gukernel(formula: IndexedFormula, in_dtypes: tuple, out_dtypes: tuple,
                      cse: bool = True, printer: type | None = None) -> KernelSource:
    """The source of ``def kernel(<inputs>, <outputs>)`` for one dtype combination.

    ``printer``: a ``GuPrinter`` subclass for another target's scalar functions (the cuda backend
    prints ``math``/``cmath`` calls, which numba-cuda compiles, instead of NumPy's).
    """
    low = _Lowering(formula, in_dtypes, out_dtypes, cse, printer)
    body = low.body()
    body = ["    " + line for line in low.prologue] + body
    outs = ", ".join(map(dtype_name, out_dtypes))
    sig = f"{outs if len(out_dtypes) == 1 else '(' + outs + ')'}({', '.join(map(dtype_name, in_dtypes))})"
    header = [f"# ufuncgen gufunc kernel for {str(formula)[:200]!r}".replace("\n", " "),
              f"# layout: {formula.layout}", f"# signature: {sig}", "import math", "import numpy as np", ""]
    for (dt, val), name in sorted(low.consts.items(), key=lambda kv: int(kv[1][2:])):
        header.append(f"{name} = np.{dt}({val})")
    params = ", ".join(low.params + low.outs)
    text = "\n".join(header + ["", "", f"def kernel({params}):"] + body) + "\n"
    digest = hashlib.sha256(text.encode()).hexdigest()[:16]
    return KernelSource(text, f"<ufuncgen gukernel {digest}>", digest, tuple(in_dtypes), tuple(out_dtypes))

