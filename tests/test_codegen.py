"""Generated kernel source: golden text, typed literals, and float32 end to end in the LLVM IR."""
import re

import numpy as np
import pytest

import ufuncgen as ug
from ufuncgen.codegen import generate_kernel
from ufuncgen.dtypes import infer_output_dtypes
from ufuncgen.formula import make_formula


def _source(text, *dtypes, args=None):
    f = make_formula(text, args)
    dts = tuple(np.dtype(d) for d in dtypes)
    return generate_kernel(f, dts, infer_output_dtypes(f.exprs, f.symbols, dts)).text


def test_golden_source_float32():
    assert _source("sin(x)**2 + 0.5*x*y + y**3", "float32", "float32") == '''\
# ufuncgen kernel for '0.5*x*y + y**3 + sin(x)**2'
# signature: float32(float32, float32)
import math
import numpy as np

_c0 = np.float32(0.5)


def kernel(x, y):
    _t0 = np.sin(x)
    return (_t0*_t0) + _c0*x*y + (y*y*y)
'''


def test_literals_take_the_signature_type():
    src64 = _source("x/3 + 2.5", "float64")
    src32 = _source("x/3 + 2.5", "float32")
    assert "np.float64(2.5)" in src64 and "np.float32(2.5)" in src32
    assert "np.float64" not in src32
    assert "np.int32(3)" in _source("x + 3", "int32")


def test_common_subexpressions_are_computed_once():
    src = _source("exp(-x*y)*sin(x*y) + exp(-x*y)", "float64", "float64")
    assert src.count("np.exp(") == 1


def test_unsafe_names_are_renamed_in_the_kernel():
    src = _source("np + math + kernel + range", "float64", "float64", "float64", "float64")
    assert "def kernel(_a0, _a1, _a2, _a3):" in src


def test_piecewise_without_default_is_nan_not_none():
    src = _source("Piecewise((x, x > 0))", "float64")
    assert "None" not in src and "float('nan')" in src


FLOAT32_FORMULAS = [
    "sin(x)**2 + 0.5*x + exp(-x/3)",
    "where(x > 1, sqrt(x), -x**2) + 1/x + x**2.5",
    "(3*x + 2.0)/(1 + x*x) + abs(x) + Max(x, 0.25) + floor(x) + log1p(x)",
    "tanh(x) * pi + e + cos(2*pi*x)",
]


@pytest.mark.parametrize("formula", FLOAT32_FORMULAS)
def test_float32_kernels_have_no_float64_in_the_llvm_ir(formula):
    f = ug.ufunc(formula, signatures="float32(float32)")
    ir = f.inspect_llvm()["float32(float32)"]
    assert not re.search(r"\bdouble\b", ir), [line for line in ir.splitlines() if "double" in line][:5]
    x = np.linspace(0.1, 3, 50, dtype=np.float32)
    assert f(x).dtype == np.float32


def test_float64_kernel_ir_does_use_double():  # the IR check above can fail
    f = ug.ufunc("0.5*x", signatures="float64(float64)")
    assert "double" in f.inspect_llvm()["float64(float64)"]


def test_linecache_entry_is_dropped_with_the_kernel():
    import gc
    import linecache

    from ufuncgen.codegen import load_kernel
    f = make_formula("x*x + 17.25")
    src = generate_kernel(f, (np.dtype("f8"),), (np.dtype("f8"),))
    func = load_kernel(src)
    assert linecache.getlines(src.filename) == src.text.splitlines(True)
    import inspect
    assert "17.25" in inspect.getsource(func) or "_c0" in inspect.getsource(func)
    del func
    gc.collect()
    assert src.filename not in linecache.cache
