"""Source of a CUDA gufunc kernel: the generated core loops plus a grid-stride launcher.

The core function is the gufunc kernel of ``gucodegen`` (the same loops the cpu target compiles),
printed with ``math``/``cmath`` calls so numba-cuda compiles it and a float32 formula stays
float32.  The launcher runs one core call per element of the broadcast loop dimensions, one CUDA
thread each, in a grid-stride loop::

    def launcher(n, s1, a0, a1, o0):        # loop shape (s0, s1); n = s0*s1
        i = cuda.grid(1)
        while i < n:
            k1 = i % s1; k0 = i // s1
            _scalar(a0[k0, k1], a1[k0, k1], o0[k0, k1])   # core views, as numba.guvectorize passes
            i += cuda.gridsize(1)

Rows staged in shared memory (``GuLaunchSpec.staged``, one loop dimension): one thread per row
reads its core row on its own, so the threads of a warp touch 32 rows apart and every load pulls a
whole sector for one element (softmax over rows of 64 float32: 0.02 of the copy bandwidth).  A
staged operand is copied tile by tile (``blockDim`` rows) between global and shared memory by all
threads of the block together, each moving neighbouring elements (coalesced), and the core runs
on the shared rows.  Rows are padded to an odd pitch, so the threads of a warp read different banks::

    base = blockIdx.x * T
    while base < n:                          # the same for every thread: syncthreads is safe
        m = min(T, n - base)
        copy rows base..base+m of each staged input into its shared rows (flat elements t, t+T, ...)
        syncthreads
        if t < m: _scalar(shared row t of a0, a1[base + t], shared row t of o0)
        syncthreads
        copy the staged outputs' shared rows out to rows base..base+m
        base += gridDim.x * T

Each array operand is passed as an array of ``loop ndim + core ndim`` dimensions whose loop strides
are 0 where it broadcasts; the caller fills in shapes and strides, so one kernel serves every
layout of a given number of (coalesced) loop dimensions.  An output with no core dimensions gets
one of length 1 (the core kernel writes ``out[0]``, as NumPy's gufunc loops do).  Arrays are passed
with numba-cuda's kernel ABI (meminfo, parent, nitems, itemsize, data, shape, strides), which is
what ``DriverEngine`` fills; the simulator gets its own array objects.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np

from ..codegen import KernelSource
from ..gucodegen import GuPrinter, generate_gukernel
from .cuda_codegen import _PRELUDE, CudaKernelPrinter, Param, storage_dtype

__all__ = ["CudaGuPrinter", "GuLaunchSpec", "gukernel_module_source", "shared_bytes", "can_stage", "STAGED_KINDS"]

STAGED_KINDS = "iuf"  # dtype kinds whose rows may be staged in shared memory


def can_stage(core_ndim: int, dt) -> bool:
    """Whether an operand's rows can be staged: one core dimension (as the layout has it) of numbers."""
    return core_ndim == 1 and np.dtype(dt).kind in STAGED_KINDS


class CudaGuPrinter(GuPrinter, CudaKernelPrinter):
    """``GuPrinter`` (array elements, index values) with the cuda printer's scalar functions."""


@dataclass(frozen=True)
class GuLaunchSpec:
    """Which gufunc launcher to generate: argument kinds, dtypes and dimensions."""

    in_kinds: tuple        # 'a' (array) or 's' (scalar value) per input
    in_core: tuple         # core ndim of each input (0 for scalars)
    in_storage: tuple      # dtype of each input as passed
    in_compute: tuple      # dtype the core kernel takes
    out_compute: tuple     # dtype the core kernel computes, per output
    out_storage: tuple     # dtype of each output array
    out_core: tuple        # core ndim of each output array (at least 1: a () output is written as out[0])
    loop_ndim: int = 1     # loop dimensions after coalescing (at least 1)
    staged: tuple = ()     # per operand (inputs, then outputs): rows staged in shared memory (loop_ndim 1)

    def key(self) -> tuple:
        return ("gu", self.in_kinds, self.in_core, tuple(d.str for d in self.in_storage),
                tuple(d.str for d in self.in_compute), tuple(d.str for d in self.out_compute),
                tuple(d.str for d in self.out_storage), self.out_core, self.loop_ndim, self.staged)

    def staged_dtypes(self) -> list:
        """(operand name, dtype) of each staged operand, in the order of their shared regions."""
        ops = [(f"a{j}", dt) for j, dt in enumerate(self.in_storage)]
        ops += [(f"o{j}", dt) for j, dt in enumerate(self.out_storage)]
        return [op for op, staged in zip(ops, self.staged, strict=False) if staged]

    # ---- parameters ----
    def _operands(self):
        """(name, kind, dtype, array ndim) of every operand, inputs then outputs."""
        for j, (kind, dt, core) in enumerate(zip(self.in_kinds, self.in_storage, self.in_core, strict=True)):
            yield f"a{j}", kind, dt, self.loop_ndim + core
        for j, (dt, core) in enumerate(zip(self.out_storage, self.out_core, strict=True)):
            yield f"o{j}", "a", dt, self.loop_ndim + core

    def py_params(self) -> tuple:
        """The launcher's Python parameters: ``n``, loop sizes 1.., then one per operand."""
        i64 = np.dtype(np.int64)
        ps = [Param("n", "n", i64)] + [Param(f"s{d}", "shape", i64) for d in range(1, self.loop_ndim)]
        for name, kind, dt, _ndim in self._operands():
            if kind == "s":
                ps += _value_params(name, dt)
            else:
                ps.append(Param(name, "array", np.dtype(dt)))
        return tuple(ps)

    def params(self) -> tuple:
        """The kernel's parameters as the driver sees them: each array flattened as numba-cuda's ABI."""
        i64, u64 = np.dtype(np.int64), np.dtype(np.uint64)
        ps = [Param("n", "n", i64)] + [Param(f"s{d}", "shape", i64) for d in range(1, self.loop_ndim)]
        for name, kind, dt, ndim in self._operands():
            if kind == "s":
                ps += _value_params(name, dt)
                continue
            ps += [Param(name + "_meminfo", "null", u64), Param(name + "_parent", "null", u64),
                   Param(name + "_nitems", "nitems", i64), Param(name + "_itemsize", "itemsize", i64),
                   Param(name, "ptr", np.dtype(dt))]
            ps += [Param(f"{name}_n{d}", "dim", i64) for d in range(ndim)]
            ps += [Param(f"{name}_t{d}", "stride", i64) for d in range(ndim)]
        return tuple(ps)

    def arg_types(self, types, from_dtype) -> tuple:
        """numba types of the launcher's Python parameters (arrays of any layout)."""
        out = [types.int64] * self.loop_ndim
        for name, kind, dt, ndim in self._operands():
            if kind == "s":
                out += [from_dtype(p.dtype) for p in _value_params(name, dt)]
            else:
                out.append(types.Array(from_dtype(np.dtype(dt)), ndim, "A"))
        return tuple(out)


def _value_params(name: str, dt: np.dtype) -> list:
    if dt.kind == "c":
        part = np.dtype(np.float32 if dt == np.complex64 else np.float64)
        return [Param(name + "_re", "value", part), Param(name + "_im", "value", part)]
    return [Param(name, "value", storage_dtype(dt))]


def _value(spec: GuLaunchSpec, j: int, index: str) -> str:
    """The core kernel's argument ``j``: a core view, an element, or a scalar parameter."""
    st, ct = spec.in_storage[j], spec.in_compute[j]
    if spec.in_kinds[j] == "s":
        raw = f"complex(a{j}_re, a{j}_im)" if st.kind == "c" else f"(a{j} != 0)" if st.kind == "b" else f"a{j}"
        return raw if (st == ct and st.kind != "c") or ct.kind == "b" else f"_I{j}({raw})"
    raw = f"a{j}[{index}]"
    if spec.in_core[j] or st == ct:
        return raw  # core views have the compute dtype (the caller converts others first)
    return f"({raw} != 0)" if ct.kind == "b" else f"_I{j}({raw})"


def launcher_source(spec: GuLaunchSpec) -> str:
    nin = len(spec.in_kinds)
    lines = ["", "", "# ---- cuda gufunc launcher ----"]
    for j in range(nin):
        lines.append(f"_I{j} = np.{spec.in_compute[j].name}")
    names = ", ".join(p.name for p in spec.py_params())
    if any(spec.staged):
        return "\n".join(lines + ["", ""] + _staged_launcher(spec, names)) + "\n"
    lines += ["", "", f"def launcher({names}):", "    i = cuda.grid(1)", "    st = cuda.gridsize(1)",
              "    while i < n:"]
    L = spec.loop_ndim
    if L == 1:
        lines.append("        k0 = i")
    else:
        lines.append("        q = i")
        for d in range(L - 1, 0, -1):
            lines.append(f"        k{d} = q % s{d}")
            lines.append(f"        q = q // s{d}")
        lines.append("        k0 = q")
    index = ", ".join(f"k{d}" for d in range(L))
    call = [_value(spec, j, index) for j in range(nin)] + [f"o{j}[{index}]" for j in range(len(spec.out_storage))]
    lines.append(f"        _scalar({', '.join(call)})")
    lines.append("        i += st")
    return "\n".join(lines) + "\n"


def pitch(core_len: int) -> int:
    """Elements from one shared row to the next: odd, so a warp's threads hit different banks."""
    return core_len | 1


def shared_bytes(itemsizes, core_lens, rows: int) -> list:
    """Byte offset of each staged region and, last, the total (regions start on 8 bytes).

    ``launcher_source`` computes the same offsets on the device; keep the two in step.
    """
    offsets, at = [], 0
    for size, n in zip(itemsizes, core_lens, strict=True):
        offsets.append(at)
        at += (rows * pitch(n) * size + 7) // 8 * 8
    return offsets + [at]


def _staged_launcher(spec: GuLaunchSpec, names: str) -> list:
    """The tiled launcher body (module docstring): staged rows copied through shared memory."""
    if spec.loop_ndim != 1 or any(core != 1 for core, st in zip(spec.in_core + spec.out_core, spec.staged,
                                                                strict=True) if st):
        raise ValueError("rows are staged for one loop dimension and operands of one core dimension")
    regions = spec.staged_dtypes()
    lines = ["from numba.cuda import types as _cuda_types", ""]
    lines += [f"_D_{op} = _cuda_types.{dt.name}" for op, dt in regions]  # numba types: the simulator needs them
    lines += ["", "", f"def launcher({names}):", "    t = cuda.threadIdx.x", "    T = cuda.blockDim.x"]
    at = "0"
    for r, (op, dt) in enumerate(regions):
        # thread t copies flat elements t, t+T, ... of a tile: row/column of its first, and the step
        # (divisions once per thread: one per element made the copy compute-bound)
        lines += [f"    c_{op} = {op}.shape[1]", f"    p_{op} = c_{op} | 1",
                  f"    q_{op} = max(c_{op}, 1)", f"    r0_{op} = t // q_{op}", f"    s0_{op} = t - r0_{op} * q_{op}",
                  f"    dr_{op} = T // q_{op}", f"    ds_{op} = T - dr_{op} * q_{op}",
                  f"    sh_{op} = cuda.shared.array(0, _D_{op})",
                  f"    e_{op} = ({at}) // {dt.itemsize}"]
        at = f"b{r}"
        lines.append(f"    b{r} = e_{op} * {dt.itemsize} + (T * p_{op} * {dt.itemsize} + 7) // 8 * 8")
    lines += ["    base = cuda.blockIdx.x * T", "    step = cuda.gridDim.x * T", "    while base < n:",
              "        m = min(T, n - base)"]

    def copy(op, into_shared):
        src = f"sh_{op}[e_{op} + r * p_{op} + c]"
        dst = f"{op}[base + r, c]"
        return [f"        r = r0_{op} if c_{op} else m", f"        c = s0_{op}", "        while r < m:",
                f"            {src} = {dst}" if into_shared else f"            {dst} = {src}",
                f"            r += dr_{op}", f"            c += ds_{op}", f"            if c >= c_{op}:",
                f"                c -= c_{op}", "                r += 1"]

    nin = len(spec.in_kinds)
    for op, _dt in regions:
        if op.startswith("a"):
            lines += copy(op, True)
    lines += ["        cuda.syncthreads()", "        if t < m:", "            k0 = base + t"]
    call = []
    for j in range(nin):
        op = f"a{j}"
        call.append(f"sh_{op}[e_{op} + t * p_{op}:e_{op} + t * p_{op} + c_{op}]" if spec.staged[j]
                    else _value(spec, j, "k0"))
    for j in range(len(spec.out_storage)):
        op = f"o{j}"
        call.append(f"sh_{op}[e_{op} + t * p_{op}:e_{op} + t * p_{op} + c_{op}]" if spec.staged[nin + j]
                    else f"{op}[k0]")
    lines += [f"            _scalar({', '.join(call)})", "        cuda.syncthreads()"]
    for op, _dt in regions:
        if op.startswith("o"):
            lines += copy(op, False)
    lines.append("        base += step")
    return lines


def gukernel_module_source(formula, spec: GuLaunchSpec, cse: bool = True, fastmath: bool = False) -> KernelSource:
    """The whole module text (core gufunc kernel, prelude, launcher) as a ``KernelSource``."""
    core = generate_gukernel(formula, spec.in_compute, spec.out_compute, cse=cse, printer=CudaGuPrinter)
    text = core.text + _PRELUDE.format(fastmath=bool(fastmath)) + launcher_source(spec)
    digest = hashlib.sha256(text.encode()).hexdigest()[:16]
    return KernelSource(text, f"<ufuncgen cuda gukernel {digest}>", digest, tuple(spec.in_compute),
                        tuple(spec.out_compute), func_name="launcher")
