"""The cpu backend: Numba compiles the scalar kernel; we write the ufunc inner loop in LLVM IR.

Why not ``numba.vectorize``: its loop reloads a scalar argument through a zero stride on every
element, which keeps LLVM from vectorising (2.1 vs 5.1 Gelem/s for axpy in cache).  Our loop has
two paths, both with the kernel inlined once each:

* all operands contiguous: one flat loop over typed pointers;
* anything else: blocks of ``BLOCK`` elements; a contiguous operand is read in place, a scalar
  (stride 0) is broadcast once into a stack buffer, a strided one is gathered, and the block runs
  the same vectorisable loop.  When an output has stride 0 (NumPy's ``reduce``), blocks are one
  element long so each step sees the previous result.

A contiguous output of at least ``STREAM_BYTES`` (x86-64 only) is written through the block buffer
and copied out with non-temporal stores, as ``memcpy`` does for large copies: a plain store first
reads the line it writes (read-for-ownership), a quarter more traffic for ``a*x + y``.

Writing the loop in IR instead of a second Numba function keeps the cold compile within a few
milliseconds of Numba's own kernel compile.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
from llvmlite import ir
from numba.core import cgutils, compiler, types
from numba.core.compiler_lock import global_compiler_lock
from numba.core.registry import cpu_target
from numba.np import numpy_support
from numba.np.ufunc import _internal

from . import vecmath

__all__ = ["compile_kernel", "build_loop", "make_numpy_ufunc", "CompiledLoop", "BLOCK"]

BLOCK = 256  # elements per block in the general path (stack buffers of at most 4 KiB each)
STREAM_BYTES = 16 << 20  # a contiguous output this large bypasses the cache (larger than most L2 + LLC shares)


@dataclass
class CompiledLoop:
    """One compiled inner loop: the function pointer NumPy calls and what keeps it alive."""

    address: int
    in_dtypes: tuple
    out_dtypes: tuple
    keepalive: tuple
    llvm_ir: str | None = None  # the kernel's optimised IR, on request (tests read it)
    source: object = None       # the KernelSource it was compiled from
    from_disk: bool = False     # machine code loaded from the disk cache: no LLVM IR to inspect

    @property
    def typenums(self) -> list:
        return [np.dtype(d).num for d in self.in_dtypes + self.out_dtypes]


def _nb(dt) -> types.Type:
    return numpy_support.from_dtype(np.dtype(dt))


def _flags(fastmath: bool) -> compiler.Flags:
    flags = compiler.Flags()
    flags.no_cpython_wrapper = True
    flags.no_cfunc_wrapper = True
    flags.error_model = "numpy"  # integer division by zero gives 0, as NumPy does, never raises
    flags.nrt = False
    if fastmath:
        from numba.core.cpu import FastMathOptions
        flags.fastmath = FastMathOptions(True)
    return flags


def _compile(pyfunc, argtys: tuple, restype, flags: compiler.Flags):
    """Numba-compile ``pyfunc`` for exact types in the cpu target (ufunc and gufunc kernels)."""
    with global_compiler_lock:
        typingctx = cpu_target.typing_context
        targetctx = cpu_target.target_context
        typingctx.refresh()
        targetctx.refresh()
        return compiler.compile_extra(typingctx, targetctx, pyfunc, argtys, restype, flags, {})


def compile_kernel(pyfunc, in_dtypes: tuple, out_dtypes: tuple, fastmath: bool = False):
    """Numba-compile the scalar kernel for exact argument and return types."""
    argtys = tuple(_nb(d) for d in in_dtypes)
    outs = tuple(_nb(d) for d in out_dtypes)
    restype = outs[0] if len(outs) == 1 else types.Tuple(outs)
    return _compile(pyfunc, argtys, restype, _flags(fastmath))


class _Operand:
    """One ufunc operand inside the loop: its base pointer, stride, type and stack buffer."""

    def __init__(self, ctx, builder, args, steps, index, fe_type, buffer):
        self.ctx = ctx
        self.fe_type = fe_type
        self.model = ctx.data_model_manager[fe_type]
        self.data_t = self.model.get_data_type()
        i = ir.Constant(ir.IntType(64), index)
        self.base = builder.load(builder.gep(args, [i]))
        self.step = builder.load(builder.gep(steps, [i]))
        self.size = ctx.get_constant(types.intp, ctx.get_abi_sizeof(self.data_t))
        self.buffer = buffer  # [BLOCK x data_t]* allocated in the entry block
        self.typed_base = builder.bitcast(self.base, self.data_t.as_pointer())

    def load_at(self, builder, ptr, j):
        return self.model.load_from_data_pointer(builder, builder.gep(ptr, [j]))

    def store_at(self, builder, ptr, j, value):
        builder.store(self.model.as_data(builder, value), builder.gep(ptr, [j]))

    def strided_ptr(self, builder, i):
        raw = builder.gep(self.base, [builder.mul(i, self.step)])
        return builder.bitcast(raw, self.data_t.as_pointer())

    def buffer_ptr(self, builder):
        zero = ir.Constant(ir.IntType(32), 0)
        return builder.gep(self.buffer, [zero, zero])


def _call_kernel(ctx, builder, kfunc, restype, argtypes, values, nout):
    _status, ret = ctx.call_conv.call_function(builder, kfunc, restype, argtypes, values)
    if nout == 1:
        return [ret]
    return [builder.extract_value(ret, k) for k in range(nout)]


def _new_loop(cres, name: str, restype, argtypes):
    """A library holding an empty NumPy inner loop ``ufuncgen_loop_{name}`` (ufunc or gufunc) and the
    kernel's declaration, marked to be inlined: (library, kernel, loop, builder at the loop's entry).

    Call under the compiler lock; ``_finish_loop`` compiles it.
    """
    ctx = cres.target_context
    intp = ctx.get_value_type(types.intp)
    i8p = ir.IntType(8).as_pointer()
    library = ctx.codegen().create_library(f"ufuncgen_loop_{name}")
    library.enable_object_caching()  # keep the machine code, so the disk cache can store it
    module = library.create_ir_module(f"ufuncgen_loop_{name}")
    kfnty = ctx.call_conv.get_function_type(restype, argtypes)
    kfunc = ir.Function(module, kfnty, name=cres.fndesc.llvm_func_name)
    kfunc.attributes.add("alwaysinline")
    loopty = ir.FunctionType(ir.VoidType(), [i8p.as_pointer(), intp.as_pointer(), intp.as_pointer(), i8p])
    loop = ir.Function(module, loopty, name=f"ufuncgen_loop_{name}")
    return library, kfunc, loop, ir.IRBuilder(loop.append_basic_block("entry"))


def _finish_loop(library, cres, loop) -> int:
    """Link the kernel in and compile the loop's library: the loop's address."""
    library.add_ir_module(loop.module)
    vecmath.link_kernel(library, cres.library)  # = add_linking_library, with libmvec calls where in use
    return library.get_pointer_to_function(loop.name)


def build_loop(cres, in_dtypes: tuple, out_dtypes: tuple, name: str, want_ir: bool = False) -> CompiledLoop:
    """Wrap the compiled kernel in a NumPy ufunc inner loop (see the module docstring)."""
    ctx = cres.target_context
    argtypes = tuple(_nb(d) for d in in_dtypes)
    outtypes = tuple(_nb(d) for d in out_dtypes)
    restype = cres.signature.return_type
    nin, nout = len(argtypes), len(outtypes)
    intp = ctx.get_value_type(types.intp)

    with global_compiler_lock:
        library, kfunc, loop, builder = _new_loop(cres, name, restype, argtypes)
        args, dims, steps, _data = loop.args

        ops = []
        for k, ty in enumerate(argtypes + outtypes):
            data_t = ctx.data_model_manager[ty].get_data_type()
            buf = cgutils.alloca_once(builder, ir.ArrayType(data_t, BLOCK))
            ops.append(_Operand(ctx, builder, args, steps, k, ty, buf))
        ins, outs = ops[:nin], ops[nin:]
        n = builder.load(dims)

        helpers = _CopyHelpers(loop.module, ctx, intp, streams=_can_stream())
        _block_loop(ctx, builder, ins, outs, n, kfunc, restype, argtypes, nout, intp, helpers)
        builder.ret_void()
        address = _finish_loop(library, cres, loop)
        llvm_ir = library.get_llvm_str() if want_ir else None
    return CompiledLoop(address, tuple(map(np.dtype, in_dtypes)), tuple(map(np.dtype, out_dtypes)),
                        (library, cres.library, cres), llvm_ir)


class _CopyHelpers:
    """Small out-of-line copy loops, one per element type, shared by all operands.

    Kept out of line (noinline) so LLVM optimises each once instead of once per operand:
    this is most of the difference between a 150 ms and a 40 ms loop compile.
    """

    def __init__(self, module, ctx, intp, streams: bool = False):
        self.module, self.ctx, self.intp = module, ctx, intp
        self.streams = streams  # non-temporal stores available (x86-64)
        self.cache = {}

    def _define(self, kind, data_t):
        key = (kind, str(data_t))
        fn = self.cache.get(key)
        if fn is not None:
            return fn
        intp = self.intp
        ptr_t = data_t.as_pointer()
        i8p = ir.IntType(8).as_pointer()
        # fill(dst, value_ptr, m); gather(dst, src_base, step, start, m); scatter(dst_base, step, start, src, m);
        # stream(dst, src, m)
        if kind in ("fill", "stream"):
            fnty = ir.FunctionType(ir.VoidType(), [ptr_t, ptr_t, intp])
        elif kind == "gather":
            fnty = ir.FunctionType(ir.VoidType(), [ptr_t, i8p, intp, intp, intp])
        else:
            fnty = ir.FunctionType(ir.VoidType(), [i8p, intp, intp, ptr_t, intp])
        fn = ir.Function(self.module, fnty, name=f"ufuncgen_{kind}_{len(self.cache)}")
        fn.linkage = "internal"
        fn.attributes.add("noinline")
        if kind != "stream":
            fn.attributes.add("optsize")  # plain copies: not worth vectorising, and cheaper to compile
            fn.attributes.add("minsize")
        b = ir.IRBuilder(fn.append_basic_block("entry"))
        if kind == "stream":  # non-temporal stores of the bits (movnti: any alignment, any element type)
            dst, src, m = fn.args
            bits = ir.IntType(self.ctx.get_abi_sizeof(data_t) * 8).as_pointer()
            dst, src = b.bitcast(dst, bits), b.bitcast(src, bits)
            with cgutils.for_range(b, m, intp=intp) as lp:
                st = b.store(b.load(b.gep(src, [lp.index])), b.gep(dst, [lp.index]))
                st.set_metadata("nontemporal", self.module.add_metadata([ir.Constant(ir.IntType(32), 1)]))
        elif kind == "fill":
            dst, src, m = fn.args
            v = b.load(src)
            with cgutils.for_range(b, m, intp=intp) as lp:
                b.store(v, b.gep(dst, [lp.index]))
        elif kind == "gather":
            dst, base, step, start, m = fn.args
            with cgutils.for_range(b, m, intp=intp) as lp:
                p = b.bitcast(b.gep(base, [b.mul(b.add(start, lp.index), step)]), ptr_t)
                b.store(b.load(p), b.gep(dst, [lp.index]))
        else:
            base, step, start, src, m = fn.args
            with cgutils.for_range(b, m, intp=intp) as lp:
                p = b.bitcast(b.gep(base, [b.mul(b.add(start, lp.index), step)]), ptr_t)
                b.store(b.load(b.gep(src, [lp.index])), p)
        b.ret_void()
        self.cache[key] = fn
        return fn

    def fill(self, builder, op, m):
        builder.call(self._define("fill", op.data_t), [op.buffer_ptr(builder), op.typed_base, m])

    def gather(self, builder, op, start, m):
        builder.call(self._define("gather", op.data_t), [op.buffer_ptr(builder), op.base, op.step, start, m])

    def scatter(self, builder, op, start, m):
        builder.call(self._define("scatter", op.data_t), [op.base, op.step, start, op.buffer_ptr(builder), m])

    def stream(self, builder, op, start, m):
        builder.call(self._define("stream", op.data_t), [builder.gep(op.typed_base, [start]), op.buffer_ptr(builder), m])

    def fence(self, builder):
        """Order the non-temporal stores before whatever follows the loop (another thread's read)."""
        fn = self.module.globals.get("llvm.x86.sse.sfence") or ir.Function(
            self.module, ir.FunctionType(ir.VoidType(), []), name="llvm.x86.sse.sfence")
        builder.call(fn, [])


@functools.cache
def _can_stream() -> bool:
    """Non-temporal stores and ``sfence`` as written here are x86-64's."""
    import llvmlite.binding as llvm

    return llvm.get_process_triple().startswith("x86_64")


def _streamable(op) -> bool:
    """Plain numbers only (a complex value is a struct, a bool one byte: nothing to gain)."""
    return isinstance(op.data_t, (ir.DoubleType, ir.FloatType)) or (
        isinstance(op.data_t, ir.IntType) and op.data_t.width >= 32)


def _block_loop(ctx, builder, ins, outs, n, kfunc, restype, argtypes, nout, intp, helpers):
    """The loop over blocks (see the module docstring); contiguous operands are read in place."""
    zero = ir.Constant(intp, 0)
    one = ir.Constant(intp, 1)
    block = ir.Constant(intp, BLOCK)
    out_zero = cgutils.false_bit
    for op in outs:
        out_zero = builder.or_(out_zero, builder.icmp_signed("==", op.step, zero))
    blk = builder.select(out_zero, one, block)
    prefilled = []
    for op in ins:
        # broadcast a scalar once (unless blocks are single elements: then it is gathered each time)
        is_scalar = builder.and_(builder.icmp_signed("==", op.step, zero), builder.not_(out_zero))
        with builder.if_then(is_scalar):
            helpers.fill(builder, op, block)
        prefilled.append(is_scalar)

    # large contiguous outputs: computed into the block buffer, then streamed out (see module docstring)
    streams, any_stream = [], None
    for op in outs:
        if not (helpers.streams and _streamable(op)):
            streams.append(None)
            continue
        big = builder.icmp_signed(">=", builder.mul(n, op.size), ir.Constant(intp, STREAM_BYTES))
        stream = builder.and_(builder.icmp_signed("==", op.step, op.size), big)
        streams.append(stream)
        any_stream = stream if any_stream is None else builder.or_(any_stream, stream)

    nblocks = builder.udiv(builder.add(n, builder.sub(blk, one)), blk)
    with cgutils.for_range(builder, nblocks, intp=intp) as blp:
        start = builder.mul(blp.index, blk)
        rest = builder.sub(n, start)
        m = builder.select(builder.icmp_signed("<", rest, blk), rest, blk)
        qs = []
        for op, pre in zip(ins, prefilled, strict=True):
            direct = builder.icmp_signed("==", op.step, op.size)
            qs.append(builder.select(direct, builder.gep(op.typed_base, [start]), op.buffer_ptr(builder)))
            with builder.if_then(builder.and_(builder.not_(direct), builder.not_(pre))):
                helpers.gather(builder, op, start, m)
        qo = []
        for op, stream in zip(outs, streams, strict=True):
            direct = builder.icmp_signed("==", op.step, op.size)
            in_place = direct if stream is None else builder.and_(direct, builder.not_(stream))
            qo.append((builder.select(in_place, builder.gep(op.typed_base, [start]), op.buffer_ptr(builder)), direct))
        with cgutils.for_range(builder, m, intp=intp) as lp:
            vals = [op.load_at(builder, q, lp.index) for op, q in zip(ins, qs, strict=True)]
            res = _call_kernel(ctx, builder, kfunc, restype, argtypes, vals, nout)
            for (q, _d), op, v in zip(qo, outs, res, strict=True):
                op.store_at(builder, q, lp.index, v)
        for (_q, direct), op, stream in zip(qo, outs, streams, strict=True):
            with builder.if_then(builder.not_(direct)):
                helpers.scatter(builder, op, start, m)
            if stream is not None:
                with builder.if_then(stream):
                    helpers.stream(builder, op, start, m)
    if any_stream is not None:
        with builder.if_then(any_stream):
            helpers.fence(builder)


def make_numpy_ufunc(name: str, doc: str, loops: list, nin: int, nout: int):
    """A real ``numpy.ufunc`` over compiled loops (the order decides NumPy's loop search)."""
    keep = tuple(loop.keepalive for loop in loops)
    return _internal.fromfunc(name, doc, [loop.address for loop in loops], [loop.typenums for loop in loops],
                              nin, nout, [None] * len(loops), keep, _internal.PyUFunc_None)
