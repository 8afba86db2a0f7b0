"""The cpu backend for gufuncs: Numba compiles the loop kernel; we write the gufunc inner loop in LLVM IR.

The inner loop has NumPy's generalized-loop signature ``(char **args, npy_intp *dims, npy_intp
*steps, void *data)``: ``dims[0]`` is the number of loop elements, then one size per core
dimension (in order of first appearance in the layout, a fixed size such as ``3`` counting as a
name); ``steps`` holds one loop stride per operand, then the core strides of each operand in
turn.  For each element the loop builds Numba array structs over the core slices (no meminfo, no
parent: NRT is off) and calls the kernel, inlined.

Why not Numba's own wrapper (``numba.np.ufunc.wrappers.build_gufunc_wrapper``), which ufuncgen used
before its gufunc loops were disk-cached:

* the loop must need nothing from the process that compiled it.  Numba's wrapper hands back a Numba
  environment to keep alive and compiles a Python-API error path (take the GIL, unpickle and raise
  the kernel's exception); for our kernels that path is dead code (``error_model='numpy'``, no NRT,
  no bounds checks: they never return an error status, which
  ``tests/test_gufunc_diskcache.py`` checks in the optimised IR), so it would only be absent after LLVM's dead-code elimination.  Ours never builds
  it (the status is not read, as in the elementwise loop of ``backends/cpu.py``);
* the symbol is ours: ``ufuncgen_loop_gu_<kernel digest>[_fastmath]``, like the elementwise loops,
  so ``cpustore`` stores and loads the loop unchanged.  Numba's is ``__gufunc__.`` plus the kernel's
  mangled name, which holds a per-process counter;
* core dimensions are read in NumPy's order over the whole layout (Numba's counts inputs only);
* it relies on no Numba internals beyond the calling convention and the array data model, which
  the elementwise loop already uses.

Measured against Numba's wrapper when this was written (2-core VM, six gufuncs): building either takes
30-200 ms (most of it LLVM optimising the kernel inlined into the loop), the same within noise,
and the loops run at the same speed with bit-identical results.
"""
from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba.core import cgutils, compiler, types
from numba.core.compiler_lock import global_compiler_lock
from numba.core.registry import cpu_target
from numba.np import numpy_support

from . import vecmath
from .cpu import CompiledLoop, _flags

__all__ = ["kernel_types", "compile_gukernel", "build_guloop", "dim_order"]


def kernel_types(layout, in_dtypes: tuple, out_dtypes: tuple) -> tuple:
    """Numba argument types of the kernel: inputs, then outputs (a ``()`` output is a 1-element array)."""
    argtys = []
    for dt, dims in zip(in_dtypes, layout.inputs, strict=True):
        ty = numpy_support.from_dtype(np.dtype(dt))
        argtys.append(types.Array(ty, len(dims), "A") if dims else ty)
    for dt, dims in zip(out_dtypes, layout.outputs, strict=True):
        argtys.append(types.Array(numpy_support.from_dtype(np.dtype(dt)), max(1, len(dims)), "A"))
    return tuple(argtys)


def compile_gukernel(pyfunc, layout, in_dtypes: tuple, out_dtypes: tuple, fastmath: bool = False):
    """Numba-compile the gufunc kernel (writes its outputs, returns nothing) with the core's flags."""
    argtys = kernel_types(layout, in_dtypes, out_dtypes)
    flags = _flags(fastmath)  # bounds checks stay off unless NUMBA_BOUNDSCHECK=1 (then in the disk key)
    with global_compiler_lock:
        typingctx = cpu_target.typing_context
        targetctx = cpu_target.target_context
        typingctx.refresh()
        targetctx.refresh()
        return compiler.compile_extra(typingctx, targetctx, pyfunc, argtys, types.void, flags, {})


def dim_order(layout) -> dict:
    """Core dimension -> its position in NumPy's ``dims[1:]``: order of first appearance, inputs first."""
    order: dict = {}
    for dims in layout.inputs + layout.outputs:
        for d in dims:
            order.setdefault(d, len(order))
    return order


def build_guloop(cres, layout, in_dtypes: tuple, out_dtypes: tuple, name: str) -> CompiledLoop:
    """Wrap the compiled kernel in a NumPy gufunc inner loop named ``ufuncgen_loop_{name}``."""
    ctx = cres.target_context
    argtys = tuple(cres.signature.args)
    groups = tuple(layout.inputs) + tuple(layout.outputs)
    nargs = len(groups)
    intp = ctx.get_value_type(types.intp)
    i8p = ir.IntType(8).as_pointer()
    order = dim_order(layout)

    def const(v):
        return ir.Constant(intp, v)

    with global_compiler_lock:
        library = ctx.codegen().create_library(f"ufuncgen_loop_{name}")
        library.enable_object_caching()  # keep the machine code, so the disk cache can store it
        module = library.create_ir_module(f"ufuncgen_loop_{name}")
        kfnty = ctx.call_conv.get_function_type(cres.fndesc.restype, cres.fndesc.argtypes)
        kfunc = ir.Function(module, kfnty, name=cres.fndesc.llvm_func_name)
        kfunc.attributes.add("alwaysinline")
        loopty = ir.FunctionType(ir.VoidType(), [i8p.as_pointer(), intp.as_pointer(), intp.as_pointer(), i8p])
        loop = ir.Function(module, loopty, name=f"ufuncgen_loop_{name}")
        args, dims, steps, _data = loop.args
        builder = ir.IRBuilder(loop.append_basic_block("entry"))

        n = builder.load(dims)
        sizes = {d: builder.load(builder.gep(dims, [const(1 + k)])) for d, k in order.items()}
        bases, loop_steps, shapes, strides = [], [], [], []
        core = nargs  # core strides follow the nargs loop strides, operand by operand
        for k, (ty, group) in enumerate(zip(argtys, groups, strict=True)):
            bases.append(builder.load(builder.gep(args, [const(k)])))
            loop_steps.append(builder.load(builder.gep(steps, [const(k)])))
            if not group:  # a scalar: a value for an input, a 1-element array for an output
                shapes.append([const(1)] if isinstance(ty, types.Array) else None)
                strides.append([const(0)] if isinstance(ty, types.Array) else None)
                continue
            shapes.append([sizes[d] for d in group])
            strides.append([builder.load(builder.gep(steps, [const(core + j)])) for j in range(len(group))])
            core += len(group)

        with cgutils.for_range(builder, n, intp=intp) as lp:
            values = []
            for ty, base, step, shape, stride in zip(argtys, bases, loop_steps, shapes, strides, strict=True):
                ptr = builder.gep(base, [builder.mul(lp.index, step)])
                if not isinstance(ty, types.Array):
                    data_t = ctx.get_data_type(ty)
                    values.append(ctx.data_model_manager[ty].load_from_data_pointer(
                        builder, builder.bitcast(ptr, data_t.as_pointer())))
                    continue
                ary = ctx.make_array(ty)(ctx, builder)
                itemsize = ctx.get_abi_sizeof(ctx.get_data_type(ty.dtype))
                ctx.populate_array(ary, data=builder.bitcast(ptr, ary.data.type),
                                   shape=cgutils.pack_array(builder, shape),
                                   strides=cgutils.pack_array(builder, stride),
                                   itemsize=const(itemsize), meminfo=None)
                values.append(ary._getvalue())
            # the status is not read: with error_model='numpy', no NRT and no bounds checks the kernel
            # cannot raise (as in the elementwise loop of backends/cpu.py).  With NUMBA_BOUNDSCHECK=1
            # it has IndexError paths, never taken: generated subscripts are in bounds (stencils wrap)
            ctx.call_conv.call_function(builder, kfunc, cres.signature.return_type, argtys, values)
        builder.ret_void()

        library.add_ir_module(module)
        vecmath.link_kernel(library, cres.library)  # = add_linking_library, with libmvec calls where in use
        address = library.get_pointer_to_function(loop.name)
    return CompiledLoop(address, tuple(map(np.dtype, in_dtypes)), tuple(map(np.dtype, out_dtypes)),
                        (library, cres.library, cres))
