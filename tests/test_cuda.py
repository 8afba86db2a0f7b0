"""The cuda target, compared against NumPy: on a real GPU, or in Numba's CUDA simulator.

Where no GPU is present, this module switches numba-cuda to its simulator (``cuda_mode.py``)
(``NUMBA_ENABLE_CUDASIM=1``) before ``numba.cuda`` is first imported, so CI runs the same
generated kernels (the simulator runs ``numba.cuda.jit`` kernels in Python).  The variable stays
set for the rest of the process; it only concerns ``numba.cuda``.  If ``numba.cuda`` was already
imported in driver mode without a GPU, one test runs this file again in a subprocess with the
simulator on.  ``@pytest.mark.gpu`` tests need the real device (PTX, CuPy, threads, timings-free
stress) and skip elsewhere.
"""
import importlib.util
import os
import pickle
import subprocess
import sys
import textwrap
import threading

import numpy as np
import pytest

if importlib.util.find_spec("numba_cuda") is None:  # found without importing it (that fixes the mode)
    pytest.skip("the cuda target needs numba-cuda (pip install 'ufuncgen[cuda]')", allow_module_level=True)

from cuda_mode import choose_mode, mode_check, require_mode, rerun_in_simulator  # noqa: E402

MODE = choose_mode()

import ufuncgen as ug  # noqa: E402
from ufuncgen.functions import FUNCTIONS  # noqa: E402

gpu = pytest.mark.gpu
only_gpu = pytest.mark.skipif(MODE != "gpu", reason="needs a real CUDA GPU")
_RUNNER = "test_in_the_simulator_subprocess"
_mode = mode_check(MODE, _RUNNER)  # autouse: the tests but _RUNNER skip where they cannot run here

RNG = np.random.default_rng(11)

if MODE != "subprocess":
    from numba import cuda
else:
    cuda = None

try:
    import cupy
except Exception:  # noqa: BLE001 - not installed, or no GPU for it
    cupy = None


# ---- array kinds -----------------------------------------------------------------------------
def _numba_kind():
    return (cuda.to_device, lambda r: r.copy_to_host(), lambda r: hasattr(r, "copy_to_host"))


def _cupy_kind():
    return (cupy.asarray, cupy.asnumpy, lambda r: isinstance(r, cupy.ndarray))


def _host_kind():
    return (lambda a: a, lambda r: np.asarray(r), lambda r: isinstance(r, (np.ndarray, np.generic)))


KINDS = ["host", "numba"] + (["cupy"] if MODE == "gpu" and cupy is not None else [])


@pytest.fixture(params=KINDS)
def kind(request):
    return {"host": _host_kind, "numba": _numba_kind, "cupy": _cupy_kind}[request.param]()


@pytest.fixture(scope="module")
def axpy():
    require_mode(MODE, _RUNNER)
    return ug.ufunc("a*x + y", args=("a", "x", "y"), target="cuda")


@pytest.fixture(scope="module")
def trans():
    require_mode(MODE, _RUNNER)
    return ug.ufunc("sin(x)**2 + cos(y)*exp(-x*y)", target="cuda")


def _tol(dtype):
    return {"rtol": 2e-6, "atol": 1e-6} if np.dtype(dtype) == np.float32 else {"rtol": 1e-13, "atol": 1e-14}


# ---- results against NumPy ---------------------------------------------------------------------
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("n", [1, 5, 1000, 4099])
def test_axpy_matches_numpy_and_keeps_the_array_kind(axpy, kind, dtype, n):
    put, get, is_kind = kind
    x = RNG.normal(size=n).astype(dtype)
    y = RNG.normal(size=n).astype(dtype)
    r = axpy(2.5, put(x), put(y))
    assert is_kind(r)
    got = get(r)
    assert got.dtype == np.dtype(dtype)
    np.testing.assert_allclose(got, np.float32(2.5) * x + y if dtype == "float32" else 2.5 * x + y, **_tol(dtype))


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_transcendental_formula(trans, kind, dtype):
    put, get, _ = kind
    x = RNG.uniform(-3, 3, size=3001).astype(dtype)
    y = RNG.uniform(-3, 3, size=3001).astype(dtype)
    want = np.sin(x) ** 2 + np.cos(y) * np.exp(-x * y)
    got = get(trans(put(x), put(y)))
    assert got.dtype == np.dtype(dtype)
    np.testing.assert_allclose(got, want, rtol=1e-5 if dtype == "float32" else 1e-12, atol=1e-5 if dtype == "float32" else 1e-12)


_TABLE = [fn for fn in FUNCTIONS if fn.reference is not None and fn.name not in ("where", "Piecewise")]


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("fn", _TABLE, ids=[fn.name for fn in _TABLE])
def test_every_function_of_the_table(fn, dtype):
    nargs = fn.nargs[0] if fn.nargs else 1
    names = ("x", "y", "z")[:nargs]
    f = ug.ufunc(f"{fn.name}({', '.join(names)})", args=names, target="cuda")
    lo, hi = fn.domain
    data = [RNG.uniform(lo, hi, size=257).astype(dtype) for _ in names]
    if fn.name in ("isnan", "isinf", "isfinite"):
        data[0][:3] = [np.nan, np.inf, -np.inf]
    with np.errstate(all="ignore"):
        want = fn.reference(*data)
    got = f(*[cuda.to_device(d) for d in data]).copy_to_host()
    if want.dtype.kind == "b":
        np.testing.assert_array_equal(got, want)
        return
    tol = {"rtol": 3e-6, "atol": 3e-6} if dtype == "float32" else {"rtol": 1e-12, "atol": 1e-13}
    np.testing.assert_allclose(got, want.astype(got.dtype), **tol)


@pytest.mark.parametrize("dtype", ["float64", "float32", "int64", "int32", "complex128"])
def test_kernels_call_only_what_numba_cuda_compiles(dtype):
    """Every table function prints as math/cmath or as a NumPy ufunc in numba-cuda's own table
    (the simulator runs any NumPy function, so a kernel calling np.sign passed there and failed
    on the GPU)."""
    from numba.cuda.ufuncs import ufunc_db

    from ufuncgen.backends.cuda_codegen import CudaKernelPrinter
    from ufuncgen.build import output_dtypes
    from ufuncgen.codegen import generate_kernel
    from ufuncgen.formula import make_formula

    compiled = {u.__name__ for u in ufunc_db()}
    dt = np.dtype(dtype)
    for fn in FUNCTIONS:
        names = ("x", "y", "z")[:fn.nargs[0] if fn.nargs else 1]
        text = {"where": "where(x > 0, y, z)", "Piecewise": "Piecewise((y, x > 0), (z, True))"}.get(
            fn.name, f"{fn.name}({', '.join(names)})")
        formula = make_formula(text, args=("x", "y", "z"))
        try:
            outs = output_dtypes(formula, (dt,) * 3)
            text = generate_kernel(formula, (dt,) * 3, outs, printer=CudaKernelPrinter).text
        except (TypeError, ug.FormulaError):
            continue  # refused for this dtype, as on the cpu target
        assert _numpy_calls(text) <= compiled, (fn.name, _numpy_calls(text) - compiled, text)
    if dt.kind == "c":
        return
    from ufuncgen.backends.cuda_gucodegen import CudaGuPrinter
    from ufuncgen.gucodegen import generate_gukernel
    from ufuncgen.indexing import make_indexed_formula

    g = make_indexed_formula("sum(sign(x[i]) * fmod(x[i], 3), i) + max(abs(x[j]), j) + min(x[k], k)")
    text = generate_gukernel(g, (dt,), (np.dtype(np.float64) if dt.kind == "i" else dt,), printer=CudaGuPrinter).text
    assert _numpy_calls(text) <= compiled, (_numpy_calls(text) - compiled, text)


def _numpy_calls(text: str) -> set:
    """Names of the np.<name>(...) calls in a kernel's body, less dtype constructors."""
    import re

    body = text.split("def kernel", 1)[1]
    return set(re.findall(r"\bnp\.(\w+)\(", body)) - {d.name for d in map(np.dtype, "?bhilqBHILQefdgFD")}


@pytest.mark.parametrize("formula, dtype", [("x*y + 1j*x", "complex128"), ("exp(x) + sqrt(y)", "complex128"),
                                            ("x*conj(y) - abs(x)", "complex64")])
def test_complex(formula, dtype):
    f = ug.ufunc(formula, target="cuda")
    x = (RNG.normal(size=300) + 1j * RNG.normal(size=300)).astype(dtype)
    y = (RNG.normal(size=300) + 1j * RNG.normal(size=300)).astype(dtype)
    ns = {"exp": np.exp, "sqrt": np.sqrt, "conj": np.conj, "abs": np.abs, "x": x, "y": y}
    want = eval(formula, ns)  # noqa: S307 - the test's own literal formula, as the NumPy reference
    got = f(cuda.to_device(x), cuda.to_device(y)).copy_to_host()
    np.testing.assert_allclose(got, want, rtol=1e-5 if dtype == "complex64" else 1e-12)


def test_integer_bool_and_where():
    f = ug.ufunc("where(x > y, x - y, x*y)", target="cuda")
    g = ug.ufunc("x > y", target="cuda")
    h = ug.ufunc("sin(x)", target="cuda")
    x = RNG.integers(-50, 50, size=500)
    y = RNG.integers(-50, 50, size=500).astype(np.int32)
    got = f(cuda.to_device(x), cuda.to_device(y)).copy_to_host()
    np.testing.assert_array_equal(got, np.where(x > y, x - y, x * y))
    assert got.dtype == np.result_type(x, y)
    b = g(cuda.to_device(x), cuda.to_device(y)).copy_to_host()
    assert b.dtype == np.bool_
    np.testing.assert_array_equal(b, x > y)
    np.testing.assert_allclose(h(cuda.to_device(x)).copy_to_host(), np.sin(x), rtol=1e-13)
    flags = RNG.random(200) > 0.5
    np.testing.assert_array_equal(g(cuda.to_device(flags), cuda.to_device(~flags)).copy_to_host(), flags > ~flags)


def test_float16_is_computed_in_float32_and_stored_as_float16():
    f = ug.ufunc("sin(x) + x*y", target="cuda")
    x = RNG.uniform(-2, 2, size=300).astype(np.float16)
    r = f(cuda.to_device(x), cuda.to_device(x)).copy_to_host()
    assert r.dtype == np.float16
    want = (np.sin(x.astype(np.float32)) + x.astype(np.float32) * x.astype(np.float32)).astype(np.float16)
    np.testing.assert_allclose(r.astype(np.float32), want.astype(np.float32), rtol=2e-3, atol=2e-3)


def test_min_max_propagate_nan_like_numpy():
    f = ug.ufunc("Max(x, y) + Min(x, 0.5)", target="cuda")
    x = RNG.normal(size=100)
    y = RNG.normal(size=100)
    x[::7] = np.nan
    y[::5] = np.nan
    want = np.maximum(x, y) + np.minimum(x, 0.5)
    np.testing.assert_array_equal(np.isnan(f(x, y)), np.isnan(want))
    np.testing.assert_allclose(f(x, y), want, rtol=1e-14)


# ---- broadcasting, views, scalars ---------------------------------------------------------------
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_broadcasting_views_and_scalars(axpy, kind, dtype):
    put, get, is_kind = kind
    x = RNG.normal(size=(6, 8)).astype(dtype)
    y = RNG.normal(size=8).astype(dtype)
    col = RNG.normal(size=(6, 1)).astype(dtype)
    a = np.float32(1.5) if dtype == "float32" else 1.5
    cases = [
        ((a, put(x), put(y)), a * x + y),                                   # row broadcast
        ((put(col), put(x), 1.0), col * x + 1.0),                           # column broadcast + scalar
        ((a, put(x)[:, ::2], put(y)[::2]), a * x[:, ::2] + y[::2]),         # strided views
        ((put(col), put(y), put(y)), col * y + y),                          # outer-product shape
        ((np.asarray(a, dtype), put(x), put(x)), a * x + x),                # 0-d host array = scalar
    ]
    if kind[0] is not cuda.to_device:  # numba device arrays do not take negative steps
        cases.append(((a, put(x)[::-1, ::-3], put(y)[::-3]), a * x[::-1, ::-3] + y[::-3]))
    for args, want in cases:
        r = axpy(*args)
        assert is_kind(r)
        got = get(r)
        assert got.shape == want.shape and got.dtype == np.dtype(dtype)
        np.testing.assert_allclose(got, want, **_tol(dtype))


def _f_contiguous(a) -> bool:
    return a.is_f_contiguous() if hasattr(a, "is_f_contiguous") else a.flags.f_contiguous


def test_fortran_order_input_gives_fortran_order_output(axpy, kind):
    put, get, _ = kind
    x = np.asfortranarray(RNG.normal(size=(5, 7)))
    dx = put(x) if cupy is None or put is not cupy.asarray else cupy.asfortranarray(cupy.asarray(x))
    assert _f_contiguous(dx)
    r = axpy(2.0, dx, dx)
    np.testing.assert_allclose(get(r), 3 * x, rtol=1e-14)
    assert _f_contiguous(r)


def test_weak_python_scalars_keep_float32(axpy):
    x = RNG.normal(size=10).astype(np.float32)
    assert axpy(2.5, cuda.to_device(x), 1).copy_to_host().dtype == np.float32
    assert axpy(np.float64(2.5), cuda.to_device(x), 1).copy_to_host().dtype == np.float64


def test_empty_and_all_scalar_inputs(axpy):
    e = np.empty(0)
    assert axpy(1.0, cuda.to_device(e), cuda.to_device(e)).copy_to_host().shape == (0,)
    r = axpy(2.0, 3.0, 1.0)
    assert r == 7.0 and np.ndim(r) == 0


def test_several_outputs():
    f = ug.ufunc(["x + y", "x * y"], target="cuda")
    x = RNG.normal(size=(4, 33))
    y = RNG.normal(size=33)
    s, p = f(cuda.to_device(x), cuda.to_device(y))
    np.testing.assert_allclose(s.copy_to_host(), x + y, rtol=1e-14)
    np.testing.assert_allclose(p.copy_to_host(), x * y, rtol=1e-14)
    hs, hp = f(x, y)
    np.testing.assert_allclose(hp, x * y, rtol=1e-14)


# ---- out=, stream=, errors ------------------------------------------------------------------
def test_out_on_the_device(axpy, kind):
    put, get, _ = kind
    x = RNG.normal(size=64)
    out = put(np.full(64, np.nan))
    assert axpy(2.0, put(x), put(x), out=out) is out
    np.testing.assert_allclose(get(out), 3 * x, rtol=1e-14)
    out32 = put(np.zeros(64, np.float32))
    axpy(2.0, put(x), put(x), out=out32)  # float64 -> float32 is 'same_kind'
    np.testing.assert_allclose(get(out32), (3 * x).astype(np.float32), rtol=1e-6)
    with pytest.raises(TypeError, match="cannot cast"):
        axpy(2.0, put(x), put(x), out=put(np.zeros(64, np.int32)))
    with pytest.raises(ValueError, match="shape"):
        axpy(2.0, put(x), put(x), out=put(np.zeros(65)))


def test_out_aliasing_an_input(axpy, kind):
    put, get, _ = kind
    x = RNG.normal(size=1000)
    d = put(x.copy())
    axpy(2.0, d, d, out=d)
    np.testing.assert_allclose(get(d), 3 * x, rtol=1e-14)


def test_out_overlapping_an_input_other_than_element_for_element(axpy, kind):
    """NumPy copies overlapping operands first: out=x[1:] with input x[:-1] (or reversed) must not
    read elements that other threads have already written."""
    put, get, _ = kind
    x = RNG.normal(size=300_001 if MODE == "gpu" else 3001)
    cases = {"later": (slice(None, -1), slice(1, None)), "earlier": (slice(1, None), slice(None, -1)),
             "reversed": (slice(None), slice(None, None, -1))}
    for src, dst in cases.values():
        d = put(x.copy())
        axpy(2.0, d[src], d[src], out=d[dst])
        want = x.copy()
        want[dst] = 3 * x[src]
        np.testing.assert_allclose(get(d), want, rtol=1e-14)
    d = put(x.copy())  # two outputs over one array
    two = ug.ufunc(["x + 1", "x - 1"], target="cuda")
    two(d[:10], out=(d[5:15], d[5:15]))
    np.testing.assert_allclose(get(d)[5:15], x[:10] - 1, rtol=1e-14)


def test_overlap_check_on_driver_pointers():
    """The driver's check reads addresses from ctypes slots (the GPU path; CI runs the simulator)."""
    import ctypes

    from ufuncgen.backends.cuda import _clash_check

    def slot(address):
        return ctypes.c_uint64(address)

    x, y, o = slot(1000), slot(5000), slot(0)
    row = ((100,), (8,), 8)                                    # 100 float64, contiguous
    check = _clash_check([(x, *row, True), (y, *row, True)], [(o, *row)], sim=False)
    for out_at, clash in [(1000, False), (1008, True), (992, True), (1800, False), (200, False), (201, True),
                          (4200, False), (4201, True)]:
        o.value = out_at
        assert check() is clash, out_at
    back = ((100,), (-8,), 8)                                  # reversed view ending at its element 0
    o.value = 1000
    assert _clash_check([(x, *row, True)], [(o, *back)], sim=False)()
    o.value = 1000 + 99 * 8
    assert _clash_check([(x, *row, True)], [(o, *back)], sim=False)()
    o.value = 1000 + 99 * 8 + 800
    assert not _clash_check([(x, *row, True)], [(o, *back)], sim=False)()
    o.value = 1000                                             # the same view is a clash where not safe
    assert _clash_check([(x, *row, False)], [(o, *row)], sim=False)()
    broadcast = ((100,), (0,), 8)                              # one element read by every thread
    o.value = 1000
    assert _clash_check([(x, *broadcast, True)], [(o, *row)], sim=False)()
    assert _clash_check([], [(o, *row)], sim=False) is None


def test_stream_argument(axpy):
    s = cuda.stream()
    x = RNG.normal(size=777)
    r = axpy(2.0, cuda.to_device(x), cuda.to_device(x), stream=s)
    s.synchronize()
    np.testing.assert_allclose(r.copy_to_host(), 3 * x, rtol=1e-14)


def test_mixing_host_and_device_arrays_is_an_error(axpy):
    x = RNG.normal(size=10)
    with pytest.raises(TypeError, match="host .*mixed with device.* y"):
        axpy(1.0, cuda.to_device(x), x)
    with pytest.raises(TypeError, match="mixed"):
        axpy(1.0, x, x, out=cuda.to_device(x))


def test_unsupported_keyword_and_bad_shapes(axpy):
    x = cuda.to_device(RNG.normal(size=10))
    with pytest.raises(TypeError, match="where"):
        axpy(1.0, x, x, where=True)
    with pytest.raises(ValueError, match="broadcast"):
        axpy(1.0, x, cuda.to_device(np.zeros(3)))
    with pytest.raises(TypeError, match="takes 3 argument"):
        axpy(1.0, x)
    with pytest.raises(TypeError, match="dtype"):
        axpy(1.0, np.array(["a"]), np.array(["b"]))


# ---- compilation and dtypes ----------------------------------------------------------------
def test_lazy_compile_per_dtype():
    f = ug.ufunc("x*x + 1", target="cuda")
    assert f.signatures == []
    f(cuda.to_device(np.ones(3, np.float32)))
    assert f.signatures == ["float32(float32)"]
    f(cuda.to_device(np.ones(3, np.float64)))
    assert f.signatures == ["float32(float32)", "float64(float64)"]
    assert "cuda.grid(1)" in f.source and "def kernel(x)" in f.source


def test_explicit_signatures_compile_at_once_and_cast_inputs():
    f = ug.ufunc("x*2 + y", signatures=["float32(float32, float32)"], target="cuda")
    assert f.signatures == ["float32(float32, float32)"]
    x = RNG.integers(0, 100, size=50).astype(np.int16)
    y = RNG.normal(size=50).astype(np.float32)
    r = f(cuda.to_device(x), cuda.to_device(y)).copy_to_host()
    assert r.dtype == np.float32
    np.testing.assert_allclose(r, x.astype(np.float32) * 2 + y, rtol=1e-6)
    with pytest.raises(TypeError, match="no compiled signature"):
        f(cuda.to_device(y.astype(np.float64)), cuda.to_device(y))


def test_same_formula_compiles_once():
    from ufuncgen.backends.cuda import KERNELS
    x = cuda.to_device(RNG.normal(size=10))
    ug.ufunc("x/3 - 7", target="cuda")(x)
    before = KERNELS.info()["compiles"]
    g = ug.ufunc("x/3 - 7", target="cuda")
    np.testing.assert_allclose(g(x).copy_to_host(), x.copy_to_host() / 3 - 7, rtol=1e-14)
    assert KERNELS.info()["compiles"] == before


def test_pickles_and_derivatives_stay_on_cuda(trans):
    g = pickle.loads(pickle.dumps(trans))
    assert g.target == "cuda"
    x = RNG.normal(size=20)
    np.testing.assert_allclose(g(x, x), trans(x, x), rtol=1e-14)
    d = trans.diff("x")
    assert d.target == "cuda"
    np.testing.assert_allclose(d(x, x), 2 * np.sin(x) * np.cos(x) - x * np.cos(x) * np.exp(-x * x), rtol=1e-12)


def test_auto_sends_device_arrays_to_cuda_and_host_arrays_to_cpu():
    f = ug.ufunc("x*y - 1", target="auto")
    x = RNG.normal(size=50)
    r = f(cuda.to_device(x), cuda.to_device(x))
    assert hasattr(r, "copy_to_host")
    np.testing.assert_allclose(r.copy_to_host(), x * x - 1, rtol=1e-14)
    h = f(x, x)
    assert isinstance(h, np.ndarray)
    np.testing.assert_allclose(h, x * x - 1, rtol=1e-14)


# ---- real GPU only ---------------------------------------------------------------------------
@gpu
@only_gpu
def test_float32_ptx_has_no_float64_instruction():
    f = ug.ufunc("2.5*x**2 + exp(-x*y)/3 + sqrt(y) + log1p(x*x) + tanh(y) + Max(x, 0.5)", target="cuda")
    x = cuda.to_device(RNG.uniform(0, 1, size=100).astype(np.float32))
    f(x, x)
    from ufuncgen.backends.cuda import KERNELS  # noqa: F401
    ptx = [k for k in _kernels_of(f) if k.ptx][-1].ptx
    body = [ln for ln in ptx.splitlines() if ".f64" in ln and ".reg" not in ln]
    assert body == [], body[:5]
    g = ug.ufunc("sin(x)*cos(y)", target="cuda", fastmath=True)
    g(x, x)
    assert not [ln for ln in _kernels_of(g)[-1].ptx.splitlines() if ".f64" in ln and ".reg" not in ln]


def _kernels_of(f):
    return [plan.kernel for plan in f._device_impl._plans.values() if hasattr(plan, "kernel")]


@gpu
@only_gpu
@pytest.mark.skipif(cupy is None, reason="needs CuPy")
def test_cupy_in_cupy_out_on_a_cupy_stream(axpy):
    x = cupy.asarray(RNG.normal(size=10_000).astype(np.float32))
    with cupy.cuda.Stream(non_blocking=True) as s:
        r = axpy(2.0, x, x)
        assert isinstance(r, cupy.ndarray)
        r2 = axpy(2.0, x, x, stream=s)
    s.synchronize()
    np.testing.assert_allclose(cupy.asnumpy(r), 3 * cupy.asnumpy(x), rtol=1e-6)
    np.testing.assert_allclose(cupy.asnumpy(r2), 3 * cupy.asnumpy(x), rtol=1e-6)
    xh = RNG.normal(size=2_000_000)
    with cupy.cuda.Stream(non_blocking=True) as s2:
        h = axpy(2.0, xh, xh, stream=s2)  # host in, host out: the stream's work is waited for
    np.testing.assert_allclose(h, 3 * xh, rtol=1e-14)


@gpu
@only_gpu
def test_threads_share_a_ufunc(trans):
    xs = [RNG.normal(size=5000) for _ in range(8)]
    results = [None] * 8

    def work(i):
        d = cuda.to_device(xs[i])
        for _ in range(20):
            results[i] = trans(d, d).copy_to_host()

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for x, r in zip(xs, results, strict=True):
        np.testing.assert_allclose(r, np.sin(x) ** 2 + np.cos(x) * np.exp(-x * x), rtol=1e-12)


@gpu
@only_gpu
def test_large_arrays_use_the_whole_grid(axpy):
    n = 50_000_017
    x = cuda.to_device(np.ones(n, np.float32))
    r = axpy(np.float32(2), x, x).copy_to_host()
    assert r.min() == 3 and r.max() == 3


@gpu
@only_gpu
def test_auto_threshold_sends_large_host_arrays_to_the_gpu(monkeypatch):
    monkeypatch.setenv("UFUNCGEN_CUDA_AUTO_MIN_SIZE", "1000")
    f = ug.ufunc("x + 1", target="auto")
    x = RNG.normal(size=5000)
    np.testing.assert_allclose(f(x), x + 1, rtol=1e-14)
    assert f._device_impl._plans


# ---- processes ---------------------------------------------------------------------------
def test_without_a_gpu_cuda_is_a_clear_error_and_auto_falls_back():
    code = textwrap.dedent("""
        import sys
        import numpy as np
        import ufuncgen as ug
        f = ug.ufunc("x + 1", target="auto")
        assert (f(np.ones(3)) == 2).all()
        assert "numba.cuda" not in sys.modules, "auto with host arrays imported numba.cuda"
        try:
            ug.ufunc("x + 1", target="cuda")
        except RuntimeError as err:
            print("ERROR:", err)
        else:
            print("NO ERROR")
    """)
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_ENABLE_CUDASIM"}
    env["CUDA_VISIBLE_DEVICES"] = ""
    env["PYTHONPATH"] = os.pathsep.join([os.path.dirname(os.path.dirname(ug.__file__)), env.get("PYTHONPATH", "")])
    res = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "ERROR:" in res.stdout and "GPU" in res.stdout, res.stdout


@pytest.mark.skipif(MODE != "subprocess", reason="the tests above ran in this process")
def test_in_the_simulator_subprocess():
    rerun_in_simulator(__file__)

