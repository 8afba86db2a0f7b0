"""The object ``ug.ufunc`` returns: NumPy ufunc semantics over compiled loops.

With signatures it wraps one real ``numpy.ufunc`` holding those loops.  Without, it compiles one
loop per combination of input dtypes on first call (never reusing a float64 loop for float32
input, as Numba's DUFunc does) and keeps a single-loop ufunc per combination, so NumPy's own
broadcasting, ``out=``, casting and ``reduce`` apply unchanged.
"""
from __future__ import annotations

import functools
import hashlib
import threading
from collections.abc import Sequence

import numpy as np
import sympy as sp
from sympy.codegen import cfunctions as cf

from .build import LoopRequest, compiled_loop, kernel_source, loop_llvm_ir, output_dtypes
from .codegen import safe_param_names
from .dtypes import Signature, dtype_name, host_loop_dtype, input_dtype_for, literal_dtype, parse_signatures
from .errors import FormulaError
from .formula import Formula, make_formula
from .introspect import FormulaIntrospection

__all__ = ["UFunc", "ufunc", "TARGETS", "OPTIONS"]

TARGETS = ("cpu", "parallel", "cuda", "auto")
OPTIONS = {"fastmath": False, "cse": True, "cache": True, "device": None}
_PY_SCALARS = (bool, int, float, complex)


def _check_options(target: str, options: dict) -> dict:
    if target not in TARGETS:
        raise ValueError(f"target {target!r} is not known; valid targets are {', '.join(map(repr, TARGETS))}")
    unknown = sorted(set(options) - set(OPTIONS))
    if unknown:
        import difflib
        hints = [difflib.get_close_matches(u, list(OPTIONS), n=1) for u in unknown]
        hint = "".join(f"; did you mean {h[0]!r}?" for h in hints if h)
        raise TypeError(f"unknown option(s) {', '.join(map(repr, unknown))}; valid options are "
                        f"{', '.join(map(repr, OPTIONS))}{hint}")
    merged = dict(OPTIONS)
    merged.update(options)
    return merged


# The lazy entry point, generated per argument count from this fixed template (never from user
# text; parameters are the formula's argument names where safe, else _a0, _a1, ...).  One Python
# frame: identity checks against the dtypes of the last call (kept as globals of the function, the
# fastest lookup Python has), else a table lookup by dtypes.
_DISPATCH_TEMPLATE = """
def dispatch({params}, /, **_kw):
    try:
        if {same_as_last} and not _kw:
            return _uf({params})
        _key = ({dtypes},)
        _hit = _table[_key]
    except (AttributeError, KeyError, TypeError):
        return _slow(({params},), _kw)
    if _kw:
        return _slow(({params},), _kw)
    _remember(_key, _hit)
    return _hit({params})
"""
_MAX_SPECIALISED_ARGS = 8


def _lazy_entry_point(args: tuple, table: dict, slow, name: str):
    nin = len(args)
    if nin > _MAX_SPECIALISED_ARGS:
        def dispatch(*args, **kwargs):
            return slow(args, kwargs)
    else:
        names = safe_param_names(args)
        params = ", ".join(names)
        dtypes = ", ".join(f"{p}.dtype" for p in names)
        same = " and ".join(f"{p}.dtype is _d{i}" for i, p in enumerate(names))
        # the last call's dtypes and loop live in the function's globals: the cheapest lookups
        namespace = {"_table": table, "_slow": slow, "_uf": None, **{f"_d{i}": None for i in range(nin)}}

        def remember(key, uf):
            namespace.update({f"_d{i}": d for i, d in enumerate(key)}, _uf=uf)

        namespace["_remember"] = remember
        source = _DISPATCH_TEMPLATE.format(params=params, dtypes=dtypes, same_as_last=same)
        exec(source, namespace)  # noqa: S102 - a fixed template filled with validated identifiers
        dispatch = namespace["dispatch"]
    dispatch.__name__ = dispatch.__qualname__ = name if name.isidentifier() else "ufunc"
    return dispatch


class UFunc(FormulaIntrospection, functools.partial):
    """A compiled formula with NumPy ufunc semantics (see ``ufuncgen.elementwise.ufunc``).

    It is a ``functools.partial`` so that a call reaches the compiled ``numpy.ufunc`` from C:
    with explicit signatures on the cpu target the call *is* the NumPy ufunc call, and lazily
    compiled formulas add a single Python frame (about 0.1 us) that picks the loop by dtype.
    """

    def __new__(cls, formula: Formula, signatures=None, target: str = "cpu", name: str | None = None,
                **options):
        opts = _check_options(target, options)
        sigs = parse_signatures(signatures, formula.nin, formula.nout)
        digest = hashlib.sha256(formula.canonical().encode()).hexdigest()[:10]
        name = name or f"ufuncgen_{digest}"
        tuple1 = formula.multi and formula.nout == 1
        box: list = []
        table: dict = {}

        def slow(args, kwargs):
            return box[0]._call(args, kwargs)

        state = {"_formula": formula, "_options": opts, "target": target, "__name__": name, "_sigs": sigs,
                 "_entries": {}, "_dispatch": {}, "_table": table, "_lock": threading.Lock(), "_fixed": None,
                 "_fixed_out": None, "_device_impl": None, "_tuple1": tuple1}
        loops = []
        if sigs and target in ("cpu", "parallel", "auto"):
            for sig in sigs:
                req = _request(formula, opts, sig.inputs, sig.outputs)
                loop = compiled_loop(req)
                loops.append(loop)
                state["_entries"][(req.in_dtypes, tuple(sig.outputs) if sig.outputs else None)] = (None, loop.out_dtypes, loop)
            from .backends.cpu import make_numpy_ufunc
            state["_fixed"] = make_numpy_ufunc(name, _doc(formula), loops, formula.nin, formula.nout)
            state["_fixed_out"] = loops[0].out_dtypes if len(loops) == 1 else None
        if target == "cpu" and not tuple1:
            func = state["_fixed"] if state["_fixed"] is not None else \
                _lazy_entry_point(formula.args, table, slow, name)
        else:
            def func(*args, **kwargs):
                return box[0]._call(args, kwargs)
        self = super().__new__(cls, func)
        self.__dict__.update(state)
        box.append(self)
        if target in ("cuda", "auto"):
            from .backends import get_device_backend
            self._device_impl = get_device_backend(self, required=(target == "cuda"))
            if sigs and self._device_impl is not None and target == "cuda":
                for sig in sigs:
                    self._device_impl.compile(sig.inputs, sig.outputs)
        return self

    def __init__(self, *args, **kwargs):
        """Everything is set up in ``__new__`` (a partial needs its callee when it is made)."""

    # ---- compiling ------------------------------------------------------------------------
    def _doc(self) -> str:
        return _doc(self._formula)

    def _numpy_ufunc(self, loops: list) -> np.ufunc:
        from .backends.cpu import make_numpy_ufunc
        return make_numpy_ufunc(self.__name__, self._doc(), loops, self.nin, self.nout)

    def _request(self, in_dtypes: tuple, out_dtypes: tuple | None) -> LoopRequest:
        return _request(self._formula, self._options, in_dtypes, out_dtypes)

    def _entry(self, in_dtypes: tuple, out_dtypes: tuple | None = None):
        key = (tuple(in_dtypes), tuple(out_dtypes) if out_dtypes else None)
        entry = self._entries.get(key)
        if entry is None or entry[0] is None:
            loop = entry[2] if entry is not None else compiled_loop(self._request(in_dtypes, out_dtypes))
            uf = self._numpy_ufunc([loop])
            entry = (uf, loop.out_dtypes, loop)
            with self._lock:
                self._entries[key] = entry
        return entry

    def _call_dtypes(self, args) -> tuple:
        """Loop input dtypes for these call arguments, with NumPy's weak Python scalars."""
        nin = self._formula.nin
        if len(args) != nin:
            names = ", ".join(self._formula.args)
            raise TypeError(f"{self.__name__}() takes {nin} argument(s) ({names}), got {len(args)}")
        arrays = [host_loop_dtype(input_dtype_for(a)) for a in args if not isinstance(a, _PY_SCALARS)]
        return tuple(literal_dtype(a, tuple(arrays)) if isinstance(a, _PY_SCALARS) and arrays
                     else host_loop_dtype(input_dtype_for(a)) for a in args)

    def _lookup(self, args):
        """(single-loop ufunc, out dtypes, loop) for these arguments, compiling on a miss."""
        try:
            key = tuple([getattr(a, "dtype", type(a)) for a in args])
            entry = self._dispatch.get(key)
        except TypeError:
            key, entry = None, None
        if entry is None:
            entry = self._entry(self._call_dtypes(args))
            if key is not None and all(hasattr(a, "dtype") or isinstance(a, _PY_SCALARS) for a in args):
                self._dispatch[key] = entry
                if all(hasattr(a, "dtype") for a in args):
                    self._table[key] = entry[0]
        return entry

    # ---- calling --------------------------------------------------------------------------
    def _call(self, args, kwargs):
        dev = self._device_impl
        if dev is not None and (self.target == "cuda" or dev.wants(args, kwargs)):
            return dev(args, kwargs)
        if self._tuple1 and isinstance(kwargs.get("out"), tuple):
            kwargs = dict(kwargs, out=kwargs["out"][0])
        if self._fixed is not None:
            uf, outs = self._fixed, self._fixed_out
        else:
            uf, outs, _loop = self._lookup(args)
        result = self._invoke(uf, outs, args, kwargs)
        return (result,) if self._tuple1 else result

    def _invoke(self, uf, out_dtypes, args, kwargs):
        if kwargs.get("where", True) is not True:
            return self._masked(uf, out_dtypes, args, kwargs)
        if self.target == "parallel":
            from .parallel import parallel_call
            if out_dtypes is None:
                out_dtypes = uf.resolve_dtypes(tuple(getattr(a, "dtype", type(a)) for a in args)
                                               + (None,) * uf.nout)[uf.nin:]
            return parallel_call(uf, out_dtypes, args, kwargs)
        return uf(*args, **kwargs)

    def _masked(self, uf, out_dtypes, args, kwargs):
        """``where=``: compute, then copy where the mask holds (loops made by Numba's
        ``fromfunc`` reject NumPy's masked iteration)."""
        kwargs = dict(kwargs)
        where = kwargs.pop("where")
        out = kwargs.pop("out", None)
        result = self._invoke(uf, out_dtypes, args, kwargs)
        if out is None or (isinstance(out, tuple) and all(o is None for o in out)):
            return result
        outs = out if isinstance(out, tuple) else (out,)
        results = result if isinstance(result, tuple) else (result,)
        for o, r in zip(outs, results, strict=True):
            np.copyto(o, r, where=where, casting=kwargs.get("casting", "same_kind"))
        return outs[0] if len(outs) == 1 else outs

    def _ufunc_for(self, arrays) -> np.ufunc:
        if self._fixed is not None:
            return self._fixed
        return self._entry(self._call_dtypes(tuple(arrays)))[0]

    def reduce(self, array, *args, **kwargs):
        """As ``numpy.ufunc.reduce`` (binary formulas)."""
        dt = input_dtype_for(array)
        return self._ufunc_for([np.empty(0, dt)] * self._formula.nin).reduce(array, *args, **kwargs)

    def accumulate(self, array, *args, **kwargs):
        """As ``numpy.ufunc.accumulate`` (binary formulas)."""
        dt = input_dtype_for(array)
        return self._ufunc_for([np.empty(0, dt)] * self._formula.nin).accumulate(array, *args, **kwargs)

    def reduceat(self, array, indices, *args, **kwargs):
        dt = input_dtype_for(array)
        return self._ufunc_for([np.empty(0, dt)] * self._formula.nin).reduceat(array, indices, *args, **kwargs)

    def outer(self, a, b, **kwargs):
        return self._ufunc_for([a, b]).outer(a, b, **kwargs)

    def at(self, a, indices, *b):
        return self._ufunc_for([a, *b]).at(a, indices, *b)

    # ---- introspection (the rest is in FormulaIntrospection) --------------------------------
    @property
    def source(self) -> str:
        """The generated Python source of the scalar kernel (float64 if nothing is compiled yet)."""
        for e in reversed(list(self._entries.values())):
            if e[2].source is not None:
                return e[2].source.text
        if self._device_impl is not None and self._device_impl.source():
            return self._device_impl.source()
        f64 = (np.dtype(np.float64),) * self.nin
        return kernel_source(self._request(f64, None)).text

    def inspect_llvm(self) -> dict:
        """The optimised LLVM IR of each compiled loop (kernel inlined), by signature."""
        return {str(Signature(e[2].in_dtypes, e[2].out_dtypes)):
                loop_llvm_ir(self._request(e[2].in_dtypes, e[2].out_dtypes), e[2]) for e in self._entries.values()}

    def diff(self, name: str, n: int = 1) -> UFunc:
        """The derivative with respect to argument ``name``, compiled the same way.

        Arguments are taken as real (so d|x|/dx is sign(x)).
        """
        self._check_argument(name)
        exprs = _derivatives(self._formula, name, n)
        return self._derived(exprs if self._formula.multi else exprs[0])

    def grad(self) -> UFunc:
        """All first derivatives, in argument order, as one ufunc with ``nin`` outputs."""
        if self.nout != 1:
            raise FormulaError("grad() needs a formula with one output; use diff(name) per output")
        exprs = [_derivatives(self._formula, a, 1)[0] for a in self.args]
        return self._derived(list(exprs))

    def _derived(self, exprs) -> UFunc:
        sigs = [Signature(s.inputs, None) for s in self._sigs] or None
        formula = make_formula(exprs, self.args)
        return UFunc(formula, sigs, self.target, None, **self._options)

    def __repr__(self) -> str:
        sigs = self.signatures
        return (f"<ufuncgen.UFunc {self.__name__}: {self._formula} ; args=({', '.join(self.args)}) "
                f"target={self.target!r} signatures={sigs if sigs else 'lazy'}>")

    def _latex(self) -> str:
        lhs = f"\\operatorname{{f}}\\left({', '.join(sp.latex(s) for s in self._formula.symbols)}\\right)"
        rhs = ", ".join(sp.latex(e) for e in self._formula.exprs)
        if self._formula.multi:
            rhs = f"\\left({rhs}\\right)"
        return f"{lhs} = {rhs}"

    def __reduce__(self):
        exprs = list(self._formula.exprs) if self._formula.multi else self._formula.exprs[0]
        sigs = [str(s) if s.outputs else "(" + ", ".join(map(dtype_name, s.inputs)) + ")" for s in self._sigs]
        return (_rebuild, (exprs, self.args, sigs or None, self.target, self.__name__, self._options))


def _doc(formula: Formula) -> str:
    return f"ufuncgen formula {formula} with args ({', '.join(formula.args)})"


def _request(formula: Formula, options: dict, in_dtypes: tuple, out_dtypes: tuple | None) -> LoopRequest:
    in_dtypes = tuple(np.dtype(d) for d in in_dtypes)
    outs = tuple(np.dtype(d) for d in out_dtypes) if out_dtypes else output_dtypes(formula, in_dtypes)
    return LoopRequest(formula, in_dtypes, outs, bool(options["fastmath"]), bool(options["cse"]),
                       bool(options["cache"]))


def _rebuild(exprs, args, signatures, target, name, options):
    return ufunc(exprs, args=args, signatures=signatures, target=target, name=name, **options)


def _derivatives(formula: Formula, name: str, n: int) -> list:
    sym = formula.symbols[formula.args.index(name)]
    real = {s: sp.Dummy(s.name, real=True) for s in formula.symbols}
    back = {v: k for k, v in real.items()}
    return [real_derivative(e, e.xreplace(real), real[sym], n, back, name) for e in formula.exprs]


class _RealCbrt(sp.Function):
    """cbrt while differentiating: d cbrt(u) = u' / (3 cbrt(u)**2), finite for u < 0 (x**(-2/3) is nan there)."""

    def fdiff(self, argindex=1):
        return 1 / (3 * cf.Cbrt(self.args[0]) ** 2)


_STEPS = (sp.floor, sp.ceiling, sp.sign)  # piecewise constant: derivative 0 away from the jumps


def _heaviside(x, h0=sp.S.Half):
    return sp.Piecewise((sp.S.One, x > 0), (h0, sp.Eq(x, 0)), (sp.S.Zero, True))


def real_derivative(orig, expr, var, n: int, back: dict, name: str, extra: tuple = ()):
    """d^n expr / d var^n in closed form, mapped back with ``back``, or a FormulaError.

    Derivatives SymPy leaves in forms we cannot compile are rewritten: Heaviside (from Max/Min)
    as a Piecewise (1/2 at ties, SymPy's value), DiracDelta and the derivatives of floor, ceiling
    and sign as 0 (their value away from the jumps), and cbrt's (and x**(1/3)'s, which compiles to
    the real cube root) as 1/(3 cbrt(u)**2), finite for u < 0.
    ``extra``: node classes allowed besides the formula language (index notation).
    """
    from .formula import check_sympy
    from .parse import is_condition
    if is_condition(orig):
        raise FormulaError(f"{orig} is a condition (a boolean output); it has no derivative")
    # the printer compiles x**(1/3) as the real cube root too
    expr = expr.replace(cf.Cbrt, _RealCbrt).replace(
        lambda e: isinstance(e, sp.Pow) and e.exp == sp.Rational(1, 3), lambda e: _RealCbrt(e.base))
    d = sp.diff(expr, var, n)
    d = d.replace(lambda e: isinstance(e, sp.Derivative) and isinstance(e.expr, _STEPS), lambda e: sp.S.Zero)
    d = d.replace(lambda e: isinstance(e, sp.Subs) and e.expr == 0, lambda e: sp.S.Zero)
    d = d.replace(sp.DiracDelta, lambda *a: sp.S.Zero).replace(sp.Heaviside, _heaviside)
    d = d.replace(_RealCbrt, cf.Cbrt).xreplace(back)
    if d.has(sp.Derivative) or d.has(sp.Subs):
        raise FormulaError(f"the derivative of {orig} with respect to {name} has no closed form here")
    try:
        check_sympy(d, extra=tuple(extra))
    except FormulaError as err:
        raise FormulaError(f"the derivative of {orig} with respect to {name} needs something ufuncgen cannot "
                           f"compile: {err.reason}") from None
    return d


def ufunc(formula, args: Sequence[str] | None = None, signatures=None, target: str = "cpu",
          name: str | None = None, **options) -> UFunc:
    """Compile a scalar formula into a ufunc.

    Args:
        formula: a string (``"a*x + y"``), a SymPy expression, or a list of them (one output each).
        args: argument order; default: the names in the formula, sorted.
        signatures: Numba-style strings (``"float32(float32, float32)"``); None compiles lazily.
        target: ``"cpu"``, ``"parallel"``, ``"cuda"`` or ``"auto"``.
        name: the ufunc's ``__name__``.
        **options: ``fastmath=False``, ``cse=True``, ``cache=True``, ``device=None``.
    """
    return UFunc(make_formula(formula, args), signatures, target, name, **options)
