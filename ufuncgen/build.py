"""From a checked formula and dtypes to a compiled loop, through the compile cache.

This is the seam between the front end (parse, types, codegen) and the backends: everything a
target needs is a ``LoopRequest``; ``compiled_loop`` returns the same object for the same
request, compiling at most once per process.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .codegen import KernelSource, generate_kernel, load_kernel
from .dtypes import infer_output_dtypes
from .errors import FormulaError
from .formula import Formula
from .memcache import LOOPS

__all__ = ["LoopRequest", "compiled_loop", "kernel_source", "output_dtypes"]


@dataclass(frozen=True)
class LoopRequest:
    formula: Formula
    in_dtypes: tuple
    out_dtypes: tuple
    fastmath: bool = False
    cse: bool = True

    def key(self, backend: str) -> tuple:
        return (self.formula.canonical(), tuple(d.str for d in self.in_dtypes),
                tuple(d.str for d in self.out_dtypes), backend, self.fastmath, self.cse)


def output_dtypes(formula: Formula, in_dtypes: tuple) -> tuple:
    """NumPy's result dtypes for the formula; TypeError where a function refuses a dtype."""
    try:
        return infer_output_dtypes(formula.exprs, formula.symbols, in_dtypes)
    except TypeError as err:
        names = ", ".join(np.dtype(d).name for d in in_dtypes)
        raise TypeError(f"{err} (inputs: {names})") from None


def kernel_source(req: LoopRequest) -> KernelSource:
    return generate_kernel(req.formula, req.in_dtypes, req.out_dtypes, cse=req.cse)


def _build_cpu(req: LoopRequest):
    from .backends import cpu
    src = kernel_source(req)
    pyfunc = load_kernel(src)
    try:
        cres = cpu.compile_kernel(pyfunc, req.in_dtypes, req.out_dtypes, fastmath=req.fastmath)
    except Exception as err:  # Numba's typing errors are long; say what failed and keep the cause
        if type(err).__name__ in ("TypingError", "UnsupportedError", "LoweringError", "NumbaError"):
            raise TypeError(f"the formula cannot be compiled for inputs "
                            f"({', '.join(d.name for d in req.in_dtypes)}): "
                            f"{str(err).splitlines()[0] if str(err) else type(err).__name__}") from err
        raise
    loop = cpu.build_loop(cres, req.in_dtypes, req.out_dtypes, src.digest)
    loop.source = src
    loop.keepalive += (pyfunc,)  # keeps the kernel's linecache entry while the loop lives
    return loop


def compiled_loop(req: LoopRequest, backend: str = "cpu"):
    """The compiled loop for ``req`` (cached in memory; one compile per key per process)."""
    if backend != "cpu":
        raise FormulaError(f"unknown backend {backend!r}")
    return LOOPS.get_or_build(req.key(backend), lambda: _build_cpu(req))
