"""Signatures and NumPy's type rules for formulas.

``parse_signature`` reads Numba-style strings without eval.  ``infer_output_dtypes`` walks the
SymPy tree with NumPy's promotion rules (weak Python scalars, int/int -> float64), so a lazy
ufunc returns what the same formula written with NumPy would return.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
import sympy as sp
from sympy.core.relational import Relational
from sympy.logic.boolalg import BooleanAtom, BooleanFunction

from .errors import SignatureError
from .functions import BOOL, BY_SYMPY, FLOAT, REAL, REAL_FLOAT, fmod  # noqa: F401

__all__ = ["Signature", "parse_signature", "parse_signatures", "dtype_name", "literal_dtype", "host_loop_dtype",
           "infer_output_dtypes", "input_dtype_for", "SUPPORTED_KINDS"]

_NAMES = {
    "bool": "bool", "bool_": "bool", "boolean": "bool", "b1": "bool",
    "int8": "int8", "i1": "int8", "int16": "int16", "i2": "int16", "int32": "int32", "i4": "int32",
    "int64": "int64", "i8": "int64", "intp": "intp", "int": "int64", "long": "int64",
    "uint8": "uint8", "u1": "uint8", "uint16": "uint16", "u2": "uint16", "uint32": "uint32", "u4": "uint32",
    "uint64": "uint64", "u8": "uint64", "uintp": "uintp", "byte": "int8",
    "float32": "float32", "f4": "float32", "single": "float32",
    "float64": "float64", "f8": "float64", "double": "float64", "float": "float64",
    "complex64": "complex64", "c8": "complex64", "complex128": "complex128", "c16": "complex128",
    "complex": "complex128", "cdouble": "complex128",
}
SUPPORTED_KINDS = "biufc"

_SIG = re.compile(r"^\s*(?P<ret>[A-Za-z_][A-Za-z0-9_]*|\([^()]*\))?\s*\((?P<args>[^()]*)\)\s*$")


@dataclass(frozen=True)
class Signature:
    """Input and output dtypes of one compiled loop (outputs may be None: inferred)."""

    inputs: tuple
    outputs: tuple | None

    def __str__(self) -> str:
        outs = self.outputs or ()
        ret = dtype_name(outs[0]) if len(outs) == 1 else "(" + ", ".join(map(dtype_name, outs)) + ")"
        return f"{ret}({', '.join(map(dtype_name, self.inputs))})"


def dtype_name(dt) -> str:
    return np.dtype(dt).name


def _one_type(name: str, text: str) -> np.dtype:
    key = name.strip()
    if key not in _NAMES:
        import difflib
        close = difflib.get_close_matches(key, list(_NAMES), n=2)
        hint = f"; did you mean {' or '.join(close)}?" if close else ""
        raise SignatureError(f"unknown type {key!r} in signature {text!r}{hint}")
    return np.dtype(_NAMES[key])


def parse_signature(sig, nin: int, nout: int) -> Signature:
    """Read ``"float32(float32, float32)"`` (or ``"(f8, f8)"`` with the result inferred)."""
    if isinstance(sig, Signature):
        sig_obj = sig
    elif isinstance(sig, str):
        m = _SIG.match(sig)
        if m is None or len(sig) > 2000:
            raise SignatureError(f"signature {sig!r} does not parse; write it as 'float64(float64, float64)'")
        args_txt = m.group("args").strip()
        inputs = tuple(_one_type(a, sig) for a in args_txt.split(",")) if args_txt else ()
        ret = m.group("ret")
        if ret is None:
            outputs = None
        elif ret.startswith("("):
            outputs = tuple(_one_type(a, sig) for a in ret.strip("()").split(",") if a.strip())
        else:
            outputs = (_one_type(ret, sig),)
        sig_obj = Signature(inputs, outputs)
    elif isinstance(sig, (tuple, list)) and all(isinstance(t, (str, np.dtype, type)) for t in sig):
        sig_obj = Signature(tuple(np.dtype(t) for t in sig), None)
    else:
        raise SignatureError(f"a signature must be a string such as 'float64(float64)', not {sig!r}")
    if len(sig_obj.inputs) != nin:
        raise SignatureError(f"signature {str(sig)!r} has {len(sig_obj.inputs)} input(s); the formula takes {nin}")
    if sig_obj.outputs is not None and len(sig_obj.outputs) != nout:
        raise SignatureError(f"signature {str(sig)!r} has {len(sig_obj.outputs)} output(s); the formula gives {nout}")
    for dt in sig_obj.inputs + (sig_obj.outputs or ()):
        if dt.kind not in SUPPORTED_KINDS:
            raise SignatureError(f"type {dt} is not supported in signatures")
    return sig_obj


def parse_signatures(sigs, nin: int, nout: int) -> list:
    if sigs is None:
        return []
    if isinstance(sigs, (str, Signature)):
        sigs = [sigs]
    out = [parse_signature(s, nin, nout) for s in sigs]
    if not out:
        raise SignatureError("signatures is empty; pass None to compile lazily")
    return out


def input_dtype_for(value) -> np.dtype:
    """The loop dtype for one call argument (NumPy arrays, scalars, array-likes).

    Raises TypeError for dtypes a formula cannot compute with, as NumPy would.
    """
    dt = getattr(value, "dtype", None)
    if dt is None:
        dt = np.asarray(value).dtype
    dt = np.dtype(dt)
    if dt.kind not in SUPPORTED_KINDS or dt.byteorder == ">" or dt.itemsize > 16:
        raise TypeError(f"ufuncgen formulas do not support inputs of dtype {dt} "
                        "(use bool, integer, float32/64 or complex64/128)")
    return dt.newbyteorder("=") if dt.byteorder not in "=|" else dt


def host_loop_dtype(dt: np.dtype) -> np.dtype:
    """float16 computes (and returns) float32 on the host: Numba's cpu target has no float16."""
    return np.dtype(np.float32) if dt == np.float16 else dt


def literal_dtype(value, context: tuple) -> np.dtype:
    """The dtype a literal takes next to inputs of dtypes ``context`` (NumPy's weak scalars)."""
    if isinstance(value, bool):
        return np.dtype(bool)
    ctx = [d for d in context if d.kind != "b"] or [np.dtype(np.int64)]
    try:
        return np.result_type(*ctx, value)
    except (OverflowError, TypeError):
        return np.result_type(*ctx, np.float64)


def _float_of(dt: np.dtype) -> np.dtype:
    """NumPy's rule for sin, exp, ...: float/complex unchanged; int32/int64 -> float64,
    int16 -> float32; 1-byte ints and bool -> float32 (NumPy says float16, which Numba lacks)."""
    if dt.kind in "fc":
        return dt
    out = np.result_type(dt, np.float16)
    return np.dtype(np.float32) if out == np.float16 else out


def _real_of(dt: np.dtype) -> np.dtype:
    return np.dtype(np.float32 if dt == np.complex64 else np.float64) if dt.kind == "c" else dt


def _python_number(n: sp.Basic):
    if isinstance(n, sp.Integer):
        return int(n)
    if n.is_extended_real or n is sp.nan:  # inf and nan are floats (x + inf was complex128)
        return 1.0
    return 1j


class _Infer:
    """dtype of every node, memoised (the printer reads the same map)."""

    def __init__(self, symbol_dtypes: dict, context: tuple):
        self.sym = symbol_dtypes
        self.context = context
        self.memo: dict = {}

    def __call__(self, e) -> np.dtype:
        dt = self.memo.get(e)
        if dt is None:
            dt = self.memo[e] = self._infer(e)
        return dt

    def _infer(self, e) -> np.dtype:
        if isinstance(e, sp.Symbol):
            return self.sym[e]
        if isinstance(e, (Relational, BooleanFunction, BooleanAtom)) and not isinstance(e, sp.Symbol):
            for a in e.args:
                if not isinstance(a, (BooleanAtom,)):
                    self(a)
            return np.dtype(bool)
        if e.is_Number or isinstance(e, sp.NumberSymbol) or e is sp.I or e in (sp.nan, sp.oo, -sp.oo):
            return literal_dtype(_python_number(e) if e.is_Number else (1j if e is sp.I else 1.0), self.context)
        if isinstance(e, (sp.Add, sp.Mul)):
            dts = [self(a) for a in e.args]
            return np.result_type(*dts)
        if isinstance(e, sp.Pow):
            b, x = e.args
            if b.is_Number and b.is_extended_negative and x.is_Rational and not x.is_Integer:
                return literal_dtype(1j, self.context)  # (-8)**(1/3) is complex, in SymPy as in Python
            bt = self(b)
            if isinstance(x, sp.Integer):
                if int(x) >= 0:
                    return bt if bt.kind != "b" else np.dtype(np.int64)
                return bt if bt.kind in "fc" else np.dtype(np.float64)  # int/int is float64
            if x.is_Number:
                return _float_of(np.result_type(bt, literal_dtype(1.0 if x.is_extended_real or x is sp.nan else 1j, self.context)))
            return np.result_type(bt, self(x))
        if isinstance(e, sp.Mod):
            return np.result_type(*[self(a) for a in e.args])
        if isinstance(e, sp.floor) and _is_true_division(e.args[0]):
            num, den = _split_division(e.args[0])
            return np.result_type(self(num), self(den))
        if isinstance(e, sp.Piecewise):
            vals = [self(p.expr) for p in e.args]
            for p in e.args:
                self(p.cond)
            out = np.result_type(*vals)
            if not e.args[-1].cond == sp.true and out.kind not in "fc":
                out = np.dtype(np.float64)  # the missing default branch is nan
            return out
        fn = BY_SYMPY.get(type(e))
        if fn is None:
            raise TypeError(f"cannot type {type(e).__name__}")
        dts = [self(a) for a in e.args]
        dt = np.result_type(*dts)
        if dt.kind == "c" and not fn.complex_ok:
            raise TypeError(f"{fn.name} does not take complex arguments")
        if fn.rule == FLOAT:
            return _float_of(dt)
        if fn.rule == REAL:
            return _real_of(dt)
        if fn.rule == REAL_FLOAT:
            return _float_of(_real_of(dt))
        if fn.rule == BOOL:
            return np.dtype(bool)
        return dt if dt.kind != "b" else np.dtype(np.int64)


def _is_true_division(e) -> bool:
    """a/b as SymPy holds it: a Mul with a factor b**-1, or with a coefficient p/q (x/2)."""
    return isinstance(e, sp.Mul) and any(isinstance(a, sp.Pow) and a.args[1] == -1
                                         or isinstance(a, sp.Rational) and a.q != 1 for a in e.args)


def _split_division(e):
    """(numerator, denominator) of a division, so floor(x/2) prints and types as x // 2."""
    num, den = [], []
    for a in e.args:
        if isinstance(a, sp.Pow) and a.args[1] == -1:
            den.append(a.args[0])
        elif isinstance(a, sp.Rational) and a.q != 1:
            num.append(sp.Integer(a.p))
            den.append(sp.Integer(a.q))
        else:
            num.append(a)
    return sp.Mul(*num), sp.Mul(*den)


def make_typer(symbols: tuple, in_dtypes: tuple) -> _Infer:
    return _Infer(dict(zip(symbols, in_dtypes, strict=True)), tuple(in_dtypes))


def infer_output_dtypes(exprs: tuple, symbols: tuple, in_dtypes: tuple) -> tuple:
    """Output dtypes NumPy would give the formula for inputs of ``in_dtypes``."""
    typer = make_typer(symbols, in_dtypes)
    return tuple(typer(e) for e in exprs)
