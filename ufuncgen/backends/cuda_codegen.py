"""Source of a CUDA kernel for one formula: the scalar kernel plus a grid-stride launcher.

The scalar kernel comes from the shared codegen (``generate_kernel``) with a printer that calls
``math``/``cmath`` (numba-cuda compiles those on scalars, not ``np.exp``/``np.sqrt``), so a
float32 formula stays float32.  The launcher around it is generated per ``LaunchSpec``:

- ``flat``: every array operand is dense with the same layout, so element ``i`` of each is at
  offset ``i``.  The grid-stride loop is unrolled ``unroll`` times, all loads of one round first,
  so each thread keeps several independent loads in flight (that is what fills the memory pipe).
- ``strided`` (``ndim`` >= 1): NumPy broadcasting and views; each array operand gets an element
  offset and one element stride per dimension (0 where it broadcasts).

Array operands are pointers on the GPU (``CPointer``) and flat 1-d arrays in the simulator; the
launcher text is the same for both, only ``x[k]`` is read from different objects.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import sympy as sp

from ..codegen import KernelPrinter, KernelSource, generate_kernel
from ..errors import FormulaError
from ..functions import BY_SYMPY

__all__ = ["CudaKernelPrinter", "LaunchSpec", "Param", "kernel_module_source", "storage_dtype"]


# Fn.name -> (template for real arguments, template for complex arguments or None).
# {0}, {1}: printed arguments; {one}, {zero}, {two}: constants typed like the result.
_REAL_COMPLEX = {
    "sin": ("math.sin({0})", "cmath.sin({0})"), "cos": ("math.cos({0})", "cmath.cos({0})"),
    "tan": ("math.tan({0})", "cmath.tan({0})"), "asin": ("math.asin({0})", "cmath.asin({0})"),
    "acos": ("math.acos({0})", "cmath.acos({0})"), "atan": ("math.atan({0})", "cmath.atan({0})"),
    "sinh": ("math.sinh({0})", "cmath.sinh({0})"), "cosh": ("math.cosh({0})", "cmath.cosh({0})"),
    "tanh": ("math.tanh({0})", "cmath.tanh({0})"), "asinh": ("math.asinh({0})", "cmath.asinh({0})"),
    "acosh": ("math.acosh({0})", "cmath.acosh({0})"), "atanh": ("math.atanh({0})", "cmath.atanh({0})"),
    "exp": ("math.exp({0})", "cmath.exp({0})"), "log": ("math.log({0})", "cmath.log({0})"),
    "log10": ("math.log10({0})", "cmath.log10({0})"), "log2": ("math.log2({0})", None),
    "log1p": ("math.log1p({0})", None), "expm1": ("math.expm1({0})", None),
    "exp2": ("math.exp2({0})" if hasattr(math, "exp2") else "math.pow({two}, {0})", None),
    "hypot": ("math.hypot({0}, {1})", None), "atan2": ("math.atan2({0}, {1})", None),
    "Abs": ("abs({0})", "abs({0})"),
    "sign": ("({one} if {0} > {zero} else (-{one} if {0} < {zero} else {0} + {zero}))",  # sign(-0.0) is 0.0
             "({0} / abs({0}) if {0} != {zero} else {0})"),
    "floor": ("math.floor({0})", None), "ceiling": ("math.ceil({0})", None),
    "fmod": ("math.fmod({0}, {1})", None),
    "erf": ("math.erf({0})", None), "erfc": ("math.erfc({0})", None),
    "gamma": ("math.gamma({0})", None), "loggamma": ("math.lgamma({0})", None),
    "re": ("{0}", "{0}.real"), "im": ("{zero}", "{0}.imag"), "conjugate": ("{0}", "{0}.conjugate()"),
    "arg": ("math.atan2({zero}, {0})", "cmath.phase({0})"),
    "isnan": ("math.isnan({0})", "cmath.isnan({0})"), "isinf": ("math.isinf({0})", "cmath.isinf({0})"),
    "isfinite": ("math.isfinite({0})", "cmath.isfinite({0})"),
}
# Integer arguments: functions that are the identity on integers (NumPy keeps the dtype).
_INT_IDENTITY = frozenset({"floor", "ceiling", "re", "conjugate"})


class CudaKernelPrinter(KernelPrinter):
    """``KernelPrinter`` for numba-cuda: ``math``/``cmath`` calls instead of NumPy ufuncs."""

    def _float_dt(self, dt: np.dtype) -> np.dtype:
        return dt if dt.kind in "fc" else np.dtype(np.float64)

    def _print_Function(self, e):
        fn = BY_SYMPY.get(type(e))
        if fn is None:
            raise FormulaError(f"{type(e).__name__} cannot be compiled")
        arg_dts = [self._typer(a) for a in e.args]
        is_complex = any(dt.kind == "c" for dt in arg_dts)
        templates = _REAL_COMPLEX.get(fn.name)
        if templates is None:
            if fn.code is None:
                raise FormulaError(f"{fn.name} cannot be compiled for the cuda target")
            return fn.code.format(*[self._print(a) for a in e.args])  # a template numba-cuda takes as is
        if fn.name in _INT_IDENTITY and all(dt.kind in "iub" for dt in arg_dts):
            return self._print(e.args[0])
        template = templates[1] if is_complex else templates[0]
        if template is None:
            raise FormulaError(f"{fn.name} does not take complex arguments on the cuda target")
        out_dt = self._typer(e)
        real_dt = np.dtype(np.float32 if np.dtype(out_dt) in (np.float32, np.complex64) else np.float64)
        const_dt = out_dt if out_dt.kind in "iufc" else real_dt
        consts = {}
        if "{one}" in template:
            consts["one"] = self._const(1, const_dt)
        if "{zero}" in template:
            consts["zero"] = self._const(0, const_dt if fn.name != "arg" else real_dt)
        if "{two}" in template:
            consts["two"] = self._const(2.0, real_dt)
        args = [self._print(a) for a in e.args]
        return template.format(*args, **consts)

    # KernelPrinter prints these itself (np.sign, np.fmod), which numba-cuda does not compile;
    # an integer fmod keeps the base printer's arithmetic, which it does.
    def _print_sign(self, e):
        return self._print_Function(e)

    def _print_fmod(self, e):
        if self._typer(e).kind in "iub":
            return super()._print_fmod(e)
        return self._print_Function(e)

    def _sqrt(self, b) -> str:
        mod = "cmath" if self._typer(b).kind == "c" else "math"
        return f"{mod}.sqrt({self._print(b)})"

    def _print_Pow(self, e, rational=False):
        b, x = e.args
        if x == sp.S.Half:
            return self._sqrt(b)
        if x == -sp.S.Half:
            return f"({self._one_like(e)} / {self._sqrt(b)})"
        if x == sp.Rational(1, 3) and self._typer(b).kind != "c":
            return self._cbrt(b, self._typer(e))
        if isinstance(x, sp.Integer) or x == 0:
            return super()._print_Pow(e, rational)  # products, 1/products, typed one
        if x.is_Number:
            xt = self._typer(e)
            xt = np.dtype(np.float32 if xt in (np.float32, np.complex64) else np.float64) if x.is_real else xt
            c = self._const(complex(x) if not x.is_real else float(x), xt)
            return f"({self.parenthesize(b, 1000)} ** {c})"
        return f"({self.parenthesize(b, 1000)} ** {self.parenthesize(x, 1000)})"

    def _cbrt(self, arg, out_dt) -> str:
        p = self._print(arg)
        third = self._const(1.0 / 3.0, np.dtype(np.float32 if out_dt == np.float32 else np.float64))
        return f"math.copysign(math.pow(math.fabs({p}), {third}), {p})"

    def _print_Cbrt(self, e):  # noqa: N802 - SymPy's class name
        return self._cbrt(e.args[0], self._float_dt(self._typer(e.args[0])))

    def _print_floor(self, e):
        arg = e.args[0]
        from ..dtypes import _is_true_division
        if _is_true_division(arg):
            return super()._print_floor(e)
        return self._print_Function(e)

    def _print_Min(self, e):
        return self._minmax(e, "min")

    def _print_Max(self, e):
        return self._minmax(e, "max")

    def _minmax(self, e, which):
        # NaN propagates (np.minimum/np.maximum), written as conditionals numba-cuda and the
        # simulator both take.
        args = [self._print(a) for a in e.args]
        out = args[0]
        for a in args[1:]:
            out = f"_nan_{which}({out}, {a})"
        return out


# Route the table's functions through the cuda ``_print_Function`` (the base class bound its own
# in a loop); printers this class or the base class define for a node (floor, Min, Piecewise) stay.
for _cls in BY_SYMPY:
    _attr = "_print_" + _cls.__name__
    _base = KernelPrinter.__dict__.get(_attr)
    if _attr not in CudaKernelPrinter.__dict__ and (_base is None or _base is KernelPrinter._print_Function):
        setattr(CudaKernelPrinter, _attr, CudaKernelPrinter._print_Function)


def storage_dtype(dt: np.dtype) -> np.dtype:
    """The element type a kernel reads and writes: bool as uint8 (one byte, 0 or 1)."""
    dt = np.dtype(dt)
    return np.dtype(np.uint8) if dt.kind == "b" else dt


@dataclass(frozen=True)
class Param:
    """One kernel parameter: ``kind`` is 'n', 'shape', 'ptr', 'off', 'stride' or 'value'."""

    name: str
    kind: str
    dtype: np.dtype       # value type (pointers: element type)


@dataclass(frozen=True)
class LaunchSpec:
    """Which launcher to generate: argument kinds, dtypes, layout and unrolling."""

    in_kinds: tuple        # 'a' (array) or 's' (scalar) per input
    in_storage: tuple      # dtype of each input as passed (array elements or scalar value)
    in_compute: tuple      # dtype the scalar kernel takes
    out_compute: tuple     # dtype the scalar kernel returns, per output
    out_storage: tuple     # dtype of each output array
    ndim: int = 0          # 0: flat; k >= 1: strided over k (coalesced) dimensions
    unroll: int = 1

    def key(self) -> tuple:
        return (self.in_kinds, tuple(d.str for d in self.in_storage), tuple(d.str for d in self.in_compute),
                tuple(d.str for d in self.out_compute), tuple(d.str for d in self.out_storage), self.ndim,
                self.unroll)

    def params(self) -> tuple:
        """The launcher's parameters in order (scalars: complex as two reals, bool as uint8)."""
        i64 = np.dtype(np.int64)
        ps = [Param("n", "n", i64)]
        ps += [Param(f"s{d}", "shape", i64) for d in range(self.ndim)]
        for j, (kind, dt) in enumerate(zip(self.in_kinds, self.in_storage, strict=True)):
            ps += self._operand(f"a{j}", kind, dt)
        for j, dt in enumerate(self.out_storage):
            ps += self._operand(f"o{j}", "a", dt)
        return tuple(ps)

    def py_params(self) -> tuple:
        """The launcher's Python parameters (here the same as the driver's: pointers and values)."""
        return self.params()

    def arg_types(self, types, from_dtype) -> tuple:
        """numba types of the launcher's parameters (``types``: numba's types module)."""
        return tuple(types.CPointer(from_dtype(p.dtype)) if p.kind == "ptr" else from_dtype(p.dtype)
                     for p in self.params())

    def _operand(self, name: str, kind: str, dt: np.dtype) -> list:
        i64 = np.dtype(np.int64)
        if kind == "s":
            if dt.kind == "c":
                part = np.dtype(np.float32 if dt == np.complex64 else np.float64)
                return [Param(name + "_re", "value", part), Param(name + "_im", "value", part)]
            return [Param(name, "value", storage_dtype(dt))]
        out = [Param(name, "ptr", storage_dtype(dt))]
        if self.ndim:
            out.append(Param(name + "_o", "off", i64))
            out += [Param(f"{name}_t{d}", "stride", i64) for d in range(self.ndim)]
        return out


def _load(spec: LaunchSpec, j: int, index: str) -> str:
    """Expression for input j at element ``index`` (a scalar input ignores the index)."""
    kind, st, ct = spec.in_kinds[j], spec.in_storage[j], spec.in_compute[j]
    if kind == "s":
        if st.kind == "c":
            raw = f"complex(a{j}_re, a{j}_im)"
        elif st.kind == "b":
            raw = f"(a{j} != 0)"
        else:
            raw = f"a{j}"
        return raw if st == ct and st.kind != "c" else f"_I{j}({raw})" if ct.kind != "b" else raw
    raw = f"a{j}[{index}]"
    if st.kind == "b":
        raw = f"({raw} != 0)"
        return raw if ct.kind == "b" else f"_I{j}({raw})"
    return raw if st == ct else f"_I{j}({raw})"


def _strided_index(spec: LaunchSpec, name: str) -> str:
    terms = [f"{name}_o"] + [f"k{d}*{name}_t{d}" for d in range(spec.ndim)]
    return " + ".join(terms)


def launcher_source(spec: LaunchSpec, single_tuple: bool) -> str:
    """Python text of ``def launcher(...)``: calls ``_scalar`` (the formula) per element."""
    nin, nout = len(spec.in_kinds), len(spec.out_storage)
    lines = ["", "", "# ---- cuda launcher ----"]
    for j in range(nin):
        lines.append(f"_I{j} = np.{spec.in_compute[j].name}")
    for j in range(nout):
        lines.append(f"_O{j} = np.{storage_dtype(spec.out_storage[j]).name}")
    names = ", ".join(p.name for p in spec.params())
    lines += ["", "", f"def launcher({names}):", "    i = cuda.grid(1)", "    st = cuda.gridsize(1)"]

    def stores(res: str, index_of) -> list:
        if nout == 1 and not single_tuple:
            return [f"o0[{index_of(0)}] = _O0({res})"]
        return [f"o{j}[{index_of(j)}] = _O{j}({res}[{j}])" for j in range(nout)]

    if spec.ndim == 0:
        u = spec.unroll
        if u > 1:
            lines.append(f"    while i + {u - 1}*st < n:")
            idx = ["i"] + [f"i{r}" for r in range(1, u)]
            for r in range(1, u):
                lines.append(f"        {idx[r]} = {idx[r - 1]} + st")
            for r in range(u):
                for j in range(nin):
                    if spec.in_kinds[j] == "a":
                        lines.append(f"        x{j}_{r} = {_load(spec, j, idx[r])}")
            for r in range(u):
                call = ", ".join(f"x{j}_{r}" if spec.in_kinds[j] == "a" else _load(spec, j, "")
                                 for j in range(nin))
                lines.append(f"        r{r} = _scalar({call})")
            for r in range(u):
                lines += ["        " + s for s in stores(f"r{r}", lambda j, r=r: idx[r])]
            lines.append(f"        i = {idx[-1]} + st")
        call = ", ".join(_load(spec, j, "i") for j in range(nin))
        lines.append("    while i < n:")
        lines.append(f"        r = _scalar({call})")
        lines += ["        " + s for s in stores("r", lambda j: "i")]
        lines.append("        i += st")
    else:
        k = spec.ndim
        lines.append("    while i < n:")
        lines.append("        q = i")
        for d in range(k - 1, 0, -1):
            lines.append(f"        k{d} = q % s{d}")
            lines.append(f"        q = q // s{d}")
        lines.append("        k0 = q")
        call = ", ".join(_load(spec, j, _strided_index(spec, f"a{j}")) for j in range(nin))
        lines.append(f"        r = _scalar({call})")
        lines += ["        " + s for s in stores("r", lambda j: _strided_index(spec, f"o{j}"))]
        lines.append("        i += st")
    return "\n".join(lines) + "\n"


_PRELUDE = '''

# ---- cuda prelude ----
import cmath
from numba import cuda


@cuda.jit(device=True, fastmath={fastmath})
def _nan_min(a, b):
    return a if (a < b or a != a) else b


@cuda.jit(device=True, fastmath={fastmath})
def _nan_max(a, b):
    return a if (a > b or a != a) else b


# device functions take their own fastmath flag (the kernel's does not reach them)
_scalar = cuda.jit(device=True, fastmath={fastmath})(kernel)
'''


def kernel_module_source(formula, spec: LaunchSpec, cse: bool = True, fastmath: bool = False) -> KernelSource:
    """The whole module text (scalar kernel, prelude, launcher) as a ``KernelSource``."""
    scalar = generate_kernel(formula, spec.in_compute, spec.out_compute, cse=cse, printer=CudaKernelPrinter)
    ret_line = [ln for ln in scalar.text.splitlines() if ln.startswith("    return ")][-1]
    single_tuple = len(spec.out_storage) == 1 and ret_line.rstrip().endswith(",)")
    text = scalar.text + _PRELUDE.format(fastmath=bool(fastmath)) + launcher_source(spec, single_tuple)
    import hashlib
    digest = hashlib.sha256(text.encode()).hexdigest()[:16]
    return KernelSource(text, f"<ufuncgen cuda kernel {digest}>", digest, tuple(spec.in_compute),
                        tuple(spec.out_compute), func_name="launcher")
