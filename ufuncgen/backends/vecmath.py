"""Vector math for the cpu loop: LLVM's loop vectoriser calls glibc's libmvec.

pip's llvmlite has no SVML, so LLVM knows no vector version of ``expf``: the loop vectoriser still
widens the loop, but the backend splits ``llvm.exp.v8f32`` into eight scalar ``expf`` calls, and a
float32 ``exp(x)`` ran 8x slower than NumPy's SIMD loop.  glibc (2.22+, most functions 2.35+) ships
vector versions in ``libmvec.so.1`` under the x86-64 vector function ABI names (``_ZGVdN8v_expf``:
AVX2, unmasked, 8 lanes, one vector argument).  LLVM's vectoriser calls a vector variant when the
scalar call carries ``"vector-function-abi-variant"="_ZGV_LLVM_N8v_llvm.exp.f32(NAME)"`` and NAME
is defined or declared in the module (what clang's ``-fveclib=libmvec`` sets up).

LLVM keeps no string attribute on an intrinsic's declaration, so the attribute must sit on each
call; llvmlite cannot edit calls, so ``link_kernel`` copies the kernel's optimised IR as text,
marks the calls of the functions in ``FUNCTIONS`` and links that copy into the loop library in
place of the kernel library.  Everything else (the scalar tail, other calls) is unchanged.

NAME is not libmvec's function but a small wrapper around it (``_wrapper``): libmvec's values are
within 4 ulp (tests/test_vecmath.py), but its floating-point status flags are not C's: it raises
``invalid`` for ``exp(inf)`` or ``atan(nan)`` and ``overflow`` for ``sinf(1e30)``, which NumPy
turns into RuntimeWarnings (or errors under ``np.errstate``).  The wrapper saves MXCSR, calls
libmvec, and puts back the saved flags plus those the results call for: invalid (nan from no nan),
divide-by-zero (inf from finite at a pole), overflow (inf from finite elsewhere), underflow
(subnormal result, or 0 where the function underflows to 0).

Used when: Linux on x86-64, ``libmvec.so.1`` loads, and ``UFUNCGEN_VECTOR_MATH`` is not ``0``.
The variant offered follows Numba's target features (AVX2 where enabled, else SSE2): a variant
whose vector the target cannot pass in one register would not match libmvec's ABI.  ``state()``
names what is used; it is part of the disk-cache key (``cachekey.cpu_device``), and computing it
loads libmvec, so a stored loop that calls libmvec always finds it.
"""
from __future__ import annotations

import functools
import os
import re
import sys
from typing import NamedTuple

import numpy as np

__all__ = ["FUNCTIONS", "ENV", "state", "variants", "link_kernel", "mark_calls"]

ENV = "UFUNCGEN_VECTOR_MATH"
LIBRARY = "libmvec.so.1"


class Fn(NamedTuple):
    """A libmvec function: its arguments, where its status flags can be trusted, which flags it raises.

    plain32 / plain64: the decades ``(lo, hi)`` of argument magnitudes, ``10**lo <= |x| < 10**(hi+1)``
    (and 0), where libmvec raises the flags glibc's scalar function does, measured decade by decade
    on this machine (benchmarks/vecmath_accuracy.py --flags); a vector with a lane outside (or a nan
    or inf lane) takes the exact path.  pole: a finite input gives inf by division by zero
    ("always", or "x == 0"); to_zero: a finite result can underflow to 0 (where the first argument
    is not 0); positive_x: the plain path also needs x > 0 (pow of a negative base); zero_ok: a 0
    argument may take the plain path (libmvec's atan2(0, 0) raises invalid); odd: magnitudes that
    take the exact path (libmvec's acosh(1) raises invalid, atanh(1) invalid besides divide-by-zero).
    """

    nargs: int
    plain32: tuple
    plain64: tuple
    pole: str | None = None
    to_zero: bool = False
    positive_x: bool = False
    zero_ok: bool = True
    odd: tuple = ()


_ALL32, _ALL64 = (-45, 38), (-323, 308)

# Numba calls the scalar version either as an LLVM intrinsic (llvm.exp.f32 / llvm.exp.f64) or as
# libm (expf / exp); both spellings are marked.  Each entry is checked against NumPy over the whole
# range and the edge cases, values and warnings (tests/test_vecmath.py).
FUNCTIONS = {
    "exp": Fn(1, (-45, 14), _ALL64, to_zero=True),
    "exp2": Fn(1, _ALL32, _ALL64, to_zero=True),
    "expm1": Fn(1, (-18, 0), (-153, 1)),
    "log": Fn(1, _ALL32, _ALL64, pole="always"),
    "log2": Fn(1, _ALL32, _ALL64, pole="always"),
    "log10": Fn(1, _ALL32, _ALL64, pole="always"),
    "log1p": Fn(1, _ALL32, (-153, 304), pole="always"),
    "pow": Fn(2, (-45, 2), (-151, 2), pole="x == 0", to_zero=True, positive_x=True),
    "sin": Fn(1, (-18, 10), (-153, 36)),
    "cos": Fn(1, _ALL32[:1] + (10,), (-323, 36)),
    "tan": Fn(1, (-18, 16), (-153, 59)),
    "asin": Fn(1, (-9, 7), (-38, 25)),
    "acos": Fn(1, (-9, 7), (-38, 25)),
    "atan": Fn(1, (-9, 8), (-76, 153)),
    "atan2": Fn(2, (-9, 8), (-38, 37), to_zero=True, zero_ok=False),
    "sinh": Fn(1, (-18, 0), (-153, 1)),
    "cosh": Fn(1, (-18, 0), (-153, 1)),
    "tanh": Fn(1, _ALL32, (-307, 308)),
    "asinh": Fn(1, (-9, 5), (-76, 18)),
    "acosh": Fn(1, (-28, 18), (-298, 18), odd=(1.0,)),
    "atanh": Fn(1, (-31, 18), (-154, 37), pole="always", odd=(1.0,)),
    "erf": Fn(1, _ALL32, _ALL64),
    "erfc": Fn(1, _ALL32, _ALL64, to_zero=True),
}

# ISA letter of the vector function ABI: (target feature it needs, register bytes).  No AVX-512
# ("e", 64 bytes): on CPUs that prefer 256-bit vectors (most) the vectoriser picks the AVX2 width
# anyway, and how a 512-bit argument is passed then depends on function attributes
# (min-legal-vector-width) that Numba sets, not us.  The one case seen (float32 cbrt, computed in
# float64 through pow) was no faster with it.
_ISAS = (("b", None, 16), ("d", "avx2", 32))

# MXCSR status bits
_INVALID, _DIVIDE, _OVERFLOW, _UNDERFLOW, _INEXACT = 0, 2, 3, 4, 5


def _plain_range(fn: Fn, ty: str) -> tuple:
    """``fn.plain32/64`` as magnitudes (powers of two inside the decades; 0 and the largest finite at the ends)."""
    import math
    (lo, hi), (lo_all, hi_all) = (fn.plain32, _ALL32) if ty == "float" else (fn.plain64, _ALL64)
    big = float(np.finfo(np.float32 if ty == "float" else np.float64).max)
    tiny = float(np.finfo(np.float32 if ty == "float" else np.float64).tiny)  # subnormals: exact path
    low = tiny if lo <= lo_all else max(tiny, 2.0 ** math.ceil(math.log2(10.0 ** lo)))
    high = big if hi >= hi_all else 2.0 ** math.floor(math.log2(10.0 ** (hi + 1)))
    return low, high


def _target_features() -> set:
    from numba.core.registry import cpu_target
    features = cpu_target.target_context.codegen().magic_tuple()[2]
    return {f[1:] for f in features.split(",") if f.startswith("+")}


@functools.cache
def state() -> str:
    """``"off"``, or the libmvec variant in use (``"libmvec:d"``: AVX2); loads libmvec when on."""
    if os.environ.get(ENV, "1").strip() == "0":
        return "off"
    import platform
    if not sys.platform.startswith("linux") or platform.machine() not in ("x86_64", "AMD64"):
        return "off"
    from llvmlite import binding as ll
    try:
        ll.load_library_permanently(LIBRARY)  # its symbols become visible to Numba's JIT
    except Exception:  # musl, old glibc, a container without it: the scalar calls stay
        return "off"
    features = _target_features()
    # the widest only: the narrower one would serve the vectorised remainder loop, which is not
    # measurably faster with it, and each variant costs a wrapper to compile (10-15% of a cold compile)
    isas = [isa for isa, feature, _ in _ISAS if feature is None or feature in features]
    return "libmvec:" + isas[-1]


def variants() -> list:
    """(ISA letter, lanes for float32, lanes for float64) of the variants in use, empty when off."""
    s = state()
    if s == "off":
        return []
    isas = s.split(":", 1)[1].split(",")
    return [(isa, size // 4, size // 8) for isa, _, size in _ISAS if isa in isas]


def _callees() -> dict:
    """Scalar callee name -> (libmvec base name, float32?, Fn)."""
    table = {}
    for name, fn in FUNCTIONS.items():
        table[f"llvm.{name}.f32"] = table[f"{name}f"] = (name + "f", True, fn)
        table[f"llvm.{name}.f64"] = table[name] = (name, False, fn)
    return table


def _bits(v: float, ty: str) -> int:
    import struct
    return struct.unpack("<I", struct.pack("<f", v))[0] if ty == "float" else struct.unpack("<Q", struct.pack("<d", v))[0]


def _wrapper(wname: str, vname: str, ty: str, lanes: int, fn: Fn) -> str:
    """IR of ``wname``: ``vname`` (libmvec) with the status flags its results call for (module docstring).

    Lanes are compared through their bits (|x| as an unsigned integer orders like the float, nan
    above inf): a float comparison with a nan raises ``invalid`` itself.
    """
    it = "i32" if ty == "float" else "i64"
    vt, mt, vi = f"<{lanes} x {ty}>", f"<{lanes} x i1>", f"<{lanes} x {it}>"
    sfx = f"v{lanes}{'f32' if ty == 'float' else 'f64'}"
    args = [f"%a{k}" for k in range(fn.nargs)]
    params = ", ".join(f"{vt} {a}" for a in args)
    true, none = "splat (i1 true)", "zeroinitializer"
    lo, hi = (_bits(v, ty) for v in _plain_range(fn, ty))
    inf, tiny = _bits(float("inf"), ty), _bits(float(np.finfo(np.float32 if ty == "float" else np.float64).tiny), ty)
    out = [f"define internal {vt} @{wname}({params}) alwaysinline nounwind {{", "  %slot = alloca i32, align 4"]

    def mag(name, v):  # |v| as an integer vector
        out.extend([f"  %{name}.f = call {vt} @llvm.fabs.{sfx}({vt} {v})", f"  %{name} = bitcast {vt} %{name}.f to {vi}"])

    # plain path: every lane's arguments have magnitudes in [lo, hi] (or are 0): libmvec's flags are C's there
    plain = true
    for k, a in enumerate(args):
        mag(f"m{k}", a)
        out += [f"  %z{k} = icmp eq {vi} %m{k}, {none}",
                f"  %ge{k} = icmp uge {vi} %m{k}, splat ({it} {lo})",
                f"  %le{k} = icmp ule {vi} %m{k}, splat ({it} {hi})",
                f"  %in{k} = and {mt} %ge{k}, %le{k}",
                f"  %ok{k}.0 = or {mt} %in{k}, {f'%z{k}' if fn.zero_ok else none}"]
        ok = f"%ok{k}.0"
        for j, v in enumerate(fn.odd):
            out += [f"  %odd{k}.{j} = icmp ne {vi} %m{k}, splat ({it} {_bits(v, ty)})",
                    f"  %ok{k}.o{j} = and {mt} {ok}, %odd{k}.{j}"]
            ok = f"%ok{k}.o{j}"
        if fn.positive_x and k == 0:
            out += [f"  %x.i = bitcast {vt} {a} to {vi}", f"  %pos = icmp sgt {vi} %x.i, {none}",
                    f"  %ok{k}.1 = and {mt} {ok}, %pos"]
            ok = f"%ok{k}.1"
        out += [f"  %plain{k} = and {mt} {plain}, {ok}"]
        plain = f"%plain{k}"
    out += [f"  %slow = xor {mt} {plain}, {true}",
            f"  %anyslow = call i1 @llvm.vector.reduce.or.v{lanes}i1({mt} %slow)",
            "  br i1 %anyslow, label %exact, label %plain",
            "plain:",
            f"  %rp = call {vt} @{vname}({params})",
            f"  ret {vt} %rp",
            # exact path: the flags libmvec raised are replaced by those the results call for
            "exact:",
            "  call void @llvm.x86.sse.stmxcsr(ptr %slot)",
            "  %before = load i32, ptr %slot, align 4",
            f"  %r = call {vt} @{vname}({params})",
            "  call void @llvm.x86.sse.stmxcsr(ptr %slot)",
            "  %after = load i32, ptr %slot, align 4"]
    nan_in, fin_in, snan_in = none, true, none
    quiet = 1 << (22 if ty == "float" else 51)
    for k in range(fn.nargs):
        out += [f"  %nan{k} = icmp ugt {vi} %m{k}, splat ({it} {inf})",
                f"  %fin{k} = icmp ult {vi} %m{k}, splat ({it} {inf})",
                f"  %nanin{k} = or {mt} {nan_in}, %nan{k}",
                f"  %finin{k} = and {mt} {fin_in}, %fin{k}"]
        nan_in, fin_in = f"%nanin{k}", f"%finin{k}"
        out += [f"  %q{k} = and {vi} %m{k}, splat ({it} {quiet})",
                f"  %nq{k} = icmp eq {vi} %q{k}, {none}",
                f"  %sn{k} = and {mt} %nan{k}, %nq{k}",
                f"  %snin{k} = or {mt} {snan_in}, %sn{k}"]
        snan_in = f"%snin{k}"
    mag("mr", "%r")
    out += [f"  %rnan = icmp ugt {vi} %mr, splat ({it} {inf})",
            f"  %rinf = icmp eq {vi} %mr, splat ({it} {inf})",
            f"  %rtiny = icmp ult {vi} %mr, splat ({it} {tiny})",
            f"  %rz = icmp eq {vi} %mr, {none}",
            f"  %rnz = xor {mt} %rz, {true}",
            f"  %x0nz = xor {mt} %z0, {true}",
            f"  %nonan = xor {mt} {nan_in}, {true}",
            f"  %m.inv.0 = and {mt} %nonan, %rnan",
            f"  %m.inv = or {mt} %m.inv.0, {snan_in}",  # a signalling nan argument is invalid (IEEE)
            f"  %big = and {mt} {fin_in}, %rinf"]
    if fn.pole == "always":
        out += [f"  %m.div = or {mt} %big, {none}", f"  %m.ovf = and {mt} %big, {none}"]
    elif fn.pole == "x == 0":
        out += [f"  %m.div = and {mt} %big, %z0", f"  %m.ovf = and {mt} %big, %x0nz"]
    else:
        out += [f"  %m.div = and {mt} %big, {none}", f"  %m.ovf = or {mt} %big, {none}"]
    out += [f"  %small = and {mt} {fin_in}, %rtiny", f"  %sub = and {mt} %small, %rnz"]
    if fn.to_zero:
        out += [f"  %z.0 = and {mt} %small, %rz", f"  %z.1 = and {mt} %z.0, %x0nz", f"  %m.unf = or {mt} %sub, %z.1"]
    else:
        out += [f"  %m.unf = or {mt} %sub, {none}"]
    flags = "%after.pe"
    out += [f"  %after.pe = and i32 %after, {1 << _INEXACT}"]
    for tag, bit in (("inv", _INVALID), ("div", _DIVIDE), ("ovf", _OVERFLOW), ("unf", _UNDERFLOW)):
        out += [f"  %any.{tag} = call i1 @llvm.vector.reduce.or.v{lanes}i1({mt} %m.{tag})",
                f"  %bit.{tag} = select i1 %any.{tag}, i32 {1 << bit}, i32 0",
                f"  %fl.{tag} = or i32 {flags}, %bit.{tag}"]
        flags = f"%fl.{tag}"
    out += [f"  %new = or i32 %before, {flags}",
            "  %same = icmp eq i32 %new, %after",  # no flag to change: skip the slow ldmxcsr
            "  br i1 %same, label %done, label %fix",
            "fix:",
            "  store i32 %new, ptr %slot, align 4",
            "  call void @llvm.x86.sse.ldmxcsr(ptr %slot)",
            "  br label %done",
            "done:",
            f"  ret {vt} %r", "}"]
    return "\n".join(out)


def _left_to_llvm(call: str, fn: Fn) -> bool:
    """A fast-math call with a constant argument: LLVM rewrites it (Numba's cbrt is a fast
    ``pow(x, 1/3)`` that LLVM turns into ``cbrt``; ``pow(x, 0.5)`` becomes ``sqrt``)."""
    if fn.nargs < 2 or not re.search(r"call (?:[a-z]+ )*?(?:fast|afn) ", call):
        return False
    args = call[call.index("(", call.index("@")) + 1:-1].split(",")
    return any("%" not in a for a in args)


def mark_calls(text: str) -> str:
    """The module text with each call of a mapped function marked with its (wrapped) libmvec variants."""
    vs = variants()
    if not vs:
        return text
    table = _callees()
    names = "|".join(re.escape(n) for n in sorted(table, key=len, reverse=True))
    call = re.compile(r'(\bcall [^@\n]*@(' + names + r')\([^()\n]*\))')
    marks, defs, decls, wrappers = {}, [], {}, []

    def mark(m):
        callee = m.group(2)
        if _left_to_llvm(m.group(1), table[callee][2]):
            return m.group(1)
        if callee not in marks:
            base, single, fn = table[callee]
            ty = "float" if single else "double"
            sfx = "f32" if single else "f64"
            maps = []
            for isa, n32, n64 in vs:
                lanes = n32 if single else n64
                vt = f"<{lanes} x {ty}>"
                vname = f"_ZGV{isa}N{lanes}{'v' * fn.nargs}_{base}"
                wname = f"ufuncgen_vecmath_{vname}"
                maps.append(f"_ZGV_LLVM_N{lanes}{'v' * fn.nargs}_{callee}({wname})")
                decls[vname] = f"declare {vt} @{vname}({', '.join([vt] * fn.nargs)})"
                decls[f"llvm.fabs.v{lanes}{sfx}"] = f"declare {vt} @llvm.fabs.v{lanes}{sfx}({vt})"
                decls[f"llvm.vector.reduce.or.v{lanes}i1"] = \
                    f"declare i1 @llvm.vector.reduce.or.v{lanes}i1(<{lanes} x i1>)"
                defs.append(_wrapper(wname, vname, ty, lanes, fn))
                wrappers.append(wname)
            marks[callee] = f' "vector-function-abi-variant"="{",".join(maps)}"'
        return m.group(1) + marks[callee]

    marked = call.sub(mark, text)
    if not wrappers:
        return text
    decls["llvm.x86.sse.stmxcsr"] = "declare void @llvm.x86.sse.stmxcsr(ptr)"
    decls["llvm.x86.sse.ldmxcsr"] = "declare void @llvm.x86.sse.ldmxcsr(ptr)"
    declared = set(re.findall(r'^declare [^@\n]*@"?([\w.$]+)"?\(', text, re.M))
    # the wrappers must exist when the vectoriser runs: unused until then, llvm.compiler.used keeps them
    used = ", ".join(f"ptr @{w}" for w in wrappers)
    return "\n".join([marked, *defs, *(d for name, d in decls.items() if name not in declared),
                      f'@llvm.compiler.used = appending global [{len(wrappers)} x ptr] [{used}], '
                      'section "llvm.metadata"', ""])


def link_kernel(library, kernel_library) -> None:
    """Link the kernel into the loop library, its math calls marked for libmvec where in use."""
    if state() == "off":
        library.add_linking_library(kernel_library)
        return
    text = kernel_library.get_llvm_str()
    marked = mark_calls(text)
    if marked is text:
        library.add_linking_library(kernel_library)
        return
    from llvmlite import binding as ll
    module = ll.parse_assembly(marked)
    for fn in module.functions:  # as Numba links a library: its definitions may be inlined and dropped
        if not fn.is_declaration and fn.linkage == ll.Linkage.external:
            fn.linkage = ll.Linkage.linkonce_odr
    library.add_llvm_module(module)
