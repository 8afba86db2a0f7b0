"""The object ``ug.gufunc`` returns, and the ``ug.guvectorize`` decorator.

A ``GUFunc`` mirrors ``UFunc``: without signatures it compiles one loop per combination of input
dtypes on first call (a float32 call never runs a float64 loop); with signatures it compiles them
at once into one NumPy gufunc.  Calls go to a real ``numpy.ufunc`` with a core signature, so
broadcasting over loop dimensions, ``out=``, ``axes=`` and ``keepdims=`` are NumPy's own.

Derivatives (``diff``/``grad``), with arguments taken as real:

* with respect to a scalar argument: same layout as the function;
* with respect to an array that every output uses only as ``x[I]`` with the same bare indices
  ``I``, all free in that output (elementwise): ``d out[...]/d x[I]``, the output's layout;
* of a scalar output (``->()``) with respect to any array: the gradient ``d out/d x[k...]``, an
  output with the array's core dimensions (norm -> x/norm, logsumexp -> softmax);
* a full Jacobian (a non-scalar output using ``x`` under a reduction over its own index, or
  shifted as ``x[i+1]``) is a FormulaError.
"""
from __future__ import annotations

import hashlib
import threading
from collections.abc import Sequence

import numpy as np
import sympy as sp

from .dtypes import Signature, dtype_name, host_loop_dtype, input_dtype_for, literal_dtype, parse_signatures
from .elementwise import _check_options, real_derivative
from .errors import FormulaError, SignatureError
from .gubuild import GuLoopRequest, compiled_guloop, gukernel_source, make_numpy_gufunc, parallel_gufunc_call
from .gucodegen import output_dtypes
from .indexing import (
    INDEX_NODES,
    Idx,
    IndexedFormula,
    Layout,
    Reduction,
    eliminate_deltas,
    fresh_index,
    make_indexed_formula,
)
from .introspect import FormulaIntrospection
from .parse import is_condition

__all__ = ["GUFunc", "gufunc", "guvectorize"]

_PY_SCALARS = (bool, int, float, complex)


def _parse_gusignatures(sigs, nin: int, nout: int) -> list:
    """Numba-style signatures of element types: ``"float32(float32, float32)"``; Numba's gufunc
    spelling ``"void(float32[:], float32, float32[:])"`` (outputs last) is read too."""
    if isinstance(sigs, str):
        sigs = [sigs]
    out = []
    for s in sigs or ():
        if isinstance(s, str) and "[" in s:
            text = s.replace(" ", "")
            plain = "".join(part.split("]", 1)[-1] if "]" in part else part for part in text.split("["))
            if plain.startswith("void(") and plain.endswith(")"):
                names = plain[5:-1].split(",")
                if len(names) != nin + nout:
                    raise SignatureError(f"signature {s!r} has {len(names)} argument(s); the formula takes "
                                         f"{nin} input(s) and {nout} output(s)")
                outs = names[nin:]
                plain = (outs[0] if nout == 1 else "(" + ",".join(outs) + ")") + "(" + ",".join(names[:nin]) + ")"
            s = plain
        out.append(s)
    return parse_signatures(out, nin, nout) if sigs is not None else []


class GUFunc(FormulaIntrospection):
    """A compiled index-notation formula with NumPy gufunc semantics (see ``ufuncgen.generalized.gufunc``)."""

    _kind = "GUFunc"

    def __init__(self, formula: IndexedFormula, signatures=None, target: str = "cpu", name: str | None = None,
                 **options):
        self._formula = formula
        self._options = _check_options(target, options)
        self.target = target
        digest = hashlib.sha256(formula.canonical().encode()).hexdigest()[:10]
        self.__name__ = name or f"ufuncgen_gu_{digest}"
        self._entries: dict = {}     # (in dtypes, out dtypes or None) -> (np gufunc, out dtypes, loop)
        self._dispatch: dict = {}    # argument dtypes/types -> entry
        self._lock = threading.Lock()
        self._fixed = None
        self._fixed_out = None
        self._device_impl = None
        if target in ("cuda", "auto"):
            self._device_impl = _device_backend(self, required=(target == "cuda"))
        self._sigs = _parse_gusignatures(signatures, formula.nin, formula.nout)
        if self._sigs and target in ("cpu", "parallel", "auto"):
            loops = [self._entry(sig.inputs, sig.outputs)[2] for sig in self._sigs]
            self._fixed = self._numpy_ufunc(loops)
            self._fixed_out = loops[0].out_dtypes if len(loops) == 1 else None
        elif self._sigs and self._device_impl is not None:
            for sig in self._sigs:
                self._device_impl.compile(sig.inputs, sig.outputs)

    # ---- compiling ------------------------------------------------------------------------
    def _doc(self) -> str:
        return f"ufuncgen gufunc {self._formula} with layout {self.layout} and args ({', '.join(self.args)})"

    def _numpy_ufunc(self, loops: list) -> np.ufunc:
        return make_numpy_gufunc(self.__name__, self._doc(), loops, self.nin, self.nout, self._formula.layout)

    def output_dtypes(self, in_dtypes: tuple) -> tuple:
        """Result dtypes for these input dtypes (NumPy's promotion rules)."""
        return output_dtypes(self._formula, tuple(np.dtype(d) for d in in_dtypes))

    def _request(self, in_dtypes: tuple, out_dtypes: tuple | None) -> GuLoopRequest:
        in_dtypes = tuple(np.dtype(d) for d in in_dtypes)
        outs = tuple(np.dtype(d) for d in out_dtypes) if out_dtypes else self.output_dtypes(in_dtypes)
        return GuLoopRequest(self._formula, in_dtypes, outs, bool(self._options["fastmath"]),
                             bool(self._options["cse"]), bool(self._options["cache"]))

    def kernel_source(self, in_dtypes: tuple, out_dtypes: tuple | None = None):
        """The generated kernel (a ``KernelSource``) for these dtypes; the cuda backend compiles it too."""
        return gukernel_source(self._request(in_dtypes, out_dtypes))

    def _entry(self, in_dtypes: tuple, out_dtypes: tuple | None = None):
        key = (tuple(in_dtypes), tuple(out_dtypes) if out_dtypes else None)
        entry = self._entries.get(key)
        if entry is None:
            loop = compiled_guloop(self._request(in_dtypes, out_dtypes))
            uf = self._numpy_ufunc([loop])
            entry = (uf, loop.out_dtypes, loop)
            with self._lock:
                entry = self._entries.setdefault(key, entry)
        return entry

    def _call_dtypes(self, args) -> tuple:
        """Loop input dtypes for these call arguments, with NumPy's weak Python scalars."""
        if len(args) != self.nin:
            raise TypeError(f"{self.__name__}() takes {self.nin} argument(s) ({', '.join(self.args)}), "
                            f"got {len(args)}")
        arrays = tuple(host_loop_dtype(input_dtype_for(a)) for a in args if not isinstance(a, _PY_SCALARS))
        return tuple(literal_dtype(a, arrays) if isinstance(a, _PY_SCALARS) and arrays
                     else host_loop_dtype(input_dtype_for(a)) for a in args)

    def _resolve(self, args):
        entry = self._entry(self._call_dtypes(args))
        if all(hasattr(a, "dtype") or isinstance(a, _PY_SCALARS) for a in args):
            self._dispatch[tuple([getattr(a, "dtype", type(a)) for a in args])] = entry
        return entry

    # ---- calling --------------------------------------------------------------------------
    def __call__(self, *args, **kwargs):
        if self._device_impl is not None and (self.target == "cuda" or self._device_impl.wants(args, kwargs)):
            return self._device_impl(args, kwargs)
        if self._fixed is not None:
            uf, outs = self._fixed, self._fixed_out
        else:
            try:
                entry = self._dispatch[tuple([getattr(a, "dtype", type(a)) for a in args])]
            except (KeyError, TypeError):
                entry = self._resolve(args)
            uf, outs = entry[0], entry[1]
        if self.target == "parallel":
            if outs is None:
                outs = uf.resolve_dtypes(tuple(getattr(a, "dtype", type(a)) for a in args)
                                         + (None,) * uf.nout)[uf.nin:]
            result = parallel_gufunc_call(uf, self._formula.layout, outs, args, kwargs)
        else:
            result = uf(*args, **kwargs)
        if self._formula.multi and self.nout == 1:  # a list of one formula still returns a tuple
            return (result,)
        return result

    # ---- introspection (the rest is in FormulaIntrospection) --------------------------------
    @property
    def layout(self) -> str:
        """NumPy's core signature, such as ``"(m,n),(n)->(m)"``."""
        return str(self._formula.layout)

    @property
    def source(self) -> str:
        """The generated Python source of the kernel (float64 if nothing is compiled yet)."""
        for e in reversed(list(self._entries.values())):
            return e[2].source.text
        if self._device_impl is not None and self._device_impl.source():
            return self._device_impl.source()
        return self.kernel_source((np.dtype(np.float64),) * self.nin).text

    # ---- derivatives ----------------------------------------------------------------------
    def diff(self, name: str, n: int = 1) -> GUFunc:
        """The derivative with respect to argument ``name``, compiled the same way (arguments real).

        ``name`` may be a scalar argument, an array used elementwise, or any array when the output
        is a scalar (then the result is the gradient, with the array's core dimensions).
        """
        self._check_argument(name)
        f = self._formula
        parts = [_derivative(e, o, k, f, name, n)
                 for k, (e, o) in enumerate(zip(f.exprs, f.out_indices, strict=True))]
        exprs = [p[0] for p in parts]
        return self._derived(exprs if f.multi else exprs[0], parts)

    def grad(self) -> GUFunc:
        """All first derivatives, in argument order, as one gufunc with ``nin`` outputs."""
        f = self._formula
        if self.nout != 1:
            raise FormulaError("grad() needs a formula with one output; use diff(name) per output")
        parts = [_derivative(f.exprs[0], f.out_indices[0], 0, f, a, 1) for a in self.args]
        return self._derived([p[0] for p in parts], parts)

    def _derived(self, exprs, parts) -> GUFunc:
        """A GUFunc of derivative expressions; ``parts``: (expression, output indices, their dims) each."""
        f = self._formula
        dims = dict(f.dims)
        for _, outs, out_dims in parts:
            dims.update({i.name: d for i, d in zip(outs, out_dims, strict=True)})
        layout = Layout(f.layout.inputs, tuple(p[2] for p in parts))
        formula = make_indexed_formula(exprs, self.args, layout, out_indices=[p[1] for p in parts],
                                       dims=tuple(sorted(dims.items())))
        sigs = [Signature(s.inputs, None) for s in self._sigs] or None
        return GUFunc(formula, sigs, self.target, None, **self._options)

    # ---- display, pickling ----------------------------------------------------------------
    def __repr__(self) -> str:
        sigs = self.signatures
        return (f"<ufuncgen.GUFunc {self.__name__}: {self._formula} ; layout={self.layout} "
                f"args=({', '.join(self.args)}) target={self.target!r} signatures={sigs if sigs else 'lazy'}>")

    def _latex(self) -> str:
        f = self._formula
        args = ", ".join(sp.latex(s) for s in f.symbols)
        sides = []
        for k, (e, o) in enumerate(zip(f.exprs, f.out_indices, strict=True)):
            sub = f"_{{{','.join(i.name for i in o)}}}" if o else ""
            name = f"f_{{{k}}}" if f.multi else "f"
            sides.append(f"\\operatorname{{{name}}}{sub}\\left({args}\\right) = {sp.latex(e)}")
        return ", \\quad ".join(sides)

    def _html_details(self) -> str:
        import html
        return f"layout: <code>{html.escape(self.layout)}</code>; "

    def __reduce__(self):
        f = self._formula
        exprs = list(f.exprs) if f.multi else f.exprs[0]
        outs = [[i.name for i in o] for o in f.out_indices]
        sigs = [str(s) if s.outputs else "(" + ", ".join(map(dtype_name, s.inputs)) + ")" for s in self._sigs]
        return (_rebuild, (exprs, f.args, str(f.layout), outs, f.dims, sigs or None, self.target, self.__name__,
                           self._options))


def _rebuild(exprs, args, layout, outs, dims, signatures, target, name, options):
    formula = make_indexed_formula(exprs, args, layout, out_indices=[[Idx(n) for n in o] for o in outs],
                                   dims=dims)
    return GUFunc(formula, signatures, target, name, **options)


def _device_backend(g: GUFunc, required: bool):
    """The cuda seam: ``ufuncgen.backends.cuda.make_gufunc_dispatcher(g, required)`` when it exists.

    The dispatcher gets ``g.formula`` (layout, expressions), ``g.kernel_source(in_dtypes)`` (the same
    loop source, which ``numba.cuda.guvectorize`` can compile), ``g.output_dtypes`` and ``g.options``.
    """
    try:
        from .backends import cuda
    except ImportError as err:
        if required:
            raise RuntimeError(f"target='cuda' is not available: {err}") from err
        return None
    make = getattr(cuda, "make_gufunc_dispatcher", None)
    if make is None:
        if required:
            raise RuntimeError("target='cuda' does not support gufuncs yet; use target='cpu' or 'parallel'")
        return None
    return make(g, required)


# ---- derivatives ------------------------------------------------------------------------------------
def _occurrences_of(e, base: str, bound=frozenset()):
    """(subscripts, indices bound around it) for every ``base[...]`` in ``e``."""
    if isinstance(e, sp.Indexed):
        if e.base.label.name == base:
            yield e, bound
        return
    if isinstance(e, Reduction):
        bound = bound | {e.index}
    for a in e.args:
        yield from _occurrences_of(a, base, bound)


def _elementwise_target(e, out: tuple, k: int, name: str):
    """The one ``x[I]`` output ``k`` depends on elementwise, or a FormulaError saying why not."""
    why = f"the derivative of output {k} with respect to {name} is not elementwise"
    hint = (f"; diff() supports scalar arguments, arrays used elementwise (as {name}[i] with the output's "
            "free indices), and any array when the output is a scalar (the gradient)")
    target = None
    for node, bound in _occurrences_of(e, name):
        if not all(isinstance(t, Idx) for t in node.indices):
            raise FormulaError(f"{why}: {name} appears shifted, as {node}{hint}")
        inner = [t for t in node.indices if t in bound or t not in out]
        if inner:
            raise FormulaError(f"{why}: {name} appears as {node}, reduced over index {inner[0].name}{hint}")
        if target is not None and node != target:
            raise FormulaError(f"{why}: {name} appears as {target} and as {node}{hint}")
        target = node
    return target


def _derivative(e, out: tuple, k: int, f: IndexedFormula, name: str, n: int):
    """d e / d name under the real-argument convention (as ``UFunc.diff``).

    Returns (expression, output indices, their dimensions): an elementwise derivative keeps the
    output's; the gradient of a scalar output by an array has the array's.
    """
    orig = e
    if is_condition(e):
        raise FormulaError(f"{e} is a condition (a boolean output); it has no derivative")
    real = {s: sp.Dummy(s.name, real=True) for s in f.symbols if isinstance(s, sp.Symbol)}
    arrays = {s: sp.IndexedBase(s.label.name, real=True) for s in f.symbols if isinstance(s, sp.IndexedBase)}
    back = {v: s for s, v in real.items()}
    back.update({v: s for s, v in arrays.items()})
    pos = f.args.index(name)
    sym = f.symbols[pos]
    out_dims = f.layout.outputs[k]
    if isinstance(sym, sp.IndexedBase) and not out:  # the gradient of a scalar output
        if n != 1:
            raise FormulaError(f"only first derivatives with respect to the array {name} are supported")
        taken = {Idx(i) for i, _ in f.dims}
        index = []
        for like in ("k", "l", "p", "q", "r", "s")[:len(f.layout.inputs[pos])]:
            index.append(fresh_index(Idx(like), taken | set(index)))
        var = sp.Indexed(arrays[sym], *index)
        d = real_derivative(orig, e.xreplace(real).xreplace(arrays), var, n, back, name, extra=INDEX_NODES)
        return eliminate_deltas(d), tuple(index), f.layout.inputs[pos]
    if isinstance(sym, sp.IndexedBase):
        node = _elementwise_target(e, out, k, name)
        if node is None:
            return sp.S.Zero, out, out_dims
        var = sp.Dummy(name, real=True)
        e = e.xreplace({node: var})
        back[var] = node
    else:
        var = real[sym]
    return real_derivative(orig, e.xreplace(real).xreplace(arrays), var, n, back, name, extra=INDEX_NODES), \
        out, out_dims


# ---- entry points -----------------------------------------------------------------------------------
def gufunc(formula, layout: str | None = None, args: Sequence[str] | None = None, signatures=None,
           target: str = "cpu", name: str | None = None, **options) -> GUFunc:
    """Compile an index-notation formula into a generalized ufunc.

    Args:
        formula: a string (``"sqrt(sum(x[i]**2, i))"``), a SymPy expression (``Indexed``, ``Sum``), or a
            list of them (one output each).
        layout: NumPy core signature (``"(n)->()"``); inferred from the formula when None, checked when given.
        args: argument order; default: the names in the formula, sorted.
        signatures: Numba-style element-type strings (``"float32(float32)"``); None compiles lazily.
        target: ``"cpu"``, ``"parallel"`` (threads over the loop dimensions), ``"cuda"`` or ``"auto"``.
        name: the gufunc's ``__name__``.
        **options: ``fastmath=False``, ``cse=True``, ``cache=True``, ``device=None``.
    """
    return GUFunc(make_indexed_formula(formula, args, layout), signatures, target, name, **options)


def _indexable(name: str):
    """A traced parameter: an ``IndexedBase`` (``x[i]``); one used bare becomes a scalar input."""
    from .tracing import Traced
    return Traced(sp.IndexedBase(name))


def guvectorize(signatures=None, layout: str | None = None, *, args: Sequence[str] | None = None,
                target: str = "cpu", name: str | None = None, **options):
    """Decorator: trace a Python function written in index notation into a ``GUFunc``.

    Parameters are traced as SymPy ``IndexedBase`` (indexed as ``x[i]``) or scalars::

        i = ug.Idx("i")

        @ug.guvectorize(layout="(n)->()")
        def norm(x):
            return ug.sqrt(ug.sum(x[i] ** 2, i))
    """
    def wrap(fn):
        from .tracing import trace
        traced = trace(fn, make_arg=_indexable)
        formula = make_indexed_formula(traced.formula, args or traced.args, layout)
        g = GUFunc(formula, signatures, target, name or fn.__name__, **options)
        g.__doc__ = fn.__doc__
        g.__wrapped__ = fn
        return g

    if callable(signatures) and layout is None:  # bare @guvectorize
        fn, signatures = signatures, None
        return wrap(fn)
    return wrap
