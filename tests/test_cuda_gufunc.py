"""Generalized ufuncs on the cuda target, against NumPy: in Numba's CUDA simulator, or on a real GPU.

The mode is chosen as in ``test_cuda.py`` (``cuda_mode.py``): with no GPU, numba-cuda is switched
to its simulator before ``numba.cuda`` is first imported (so CI runs the same generated kernels);
if ``numba.cuda`` was already imported in driver mode without a GPU, one test runs this file again
in a subprocess with the simulator on.  ``@pytest.mark.gpu`` tests need the real device and skip elsewhere.
"""
import importlib.util
import pickle

import numpy as np
import pytest

if importlib.util.find_spec("numba_cuda") is None:
    pytest.skip("the cuda target needs numba-cuda (pip install 'ufuncgen[cuda]')", allow_module_level=True)

from cuda_mode import choose_mode, mode_check, rerun_in_simulator  # noqa: E402

MODE = choose_mode()

import ufuncgen as ug  # noqa: E402

gpu = pytest.mark.gpu
only_gpu = pytest.mark.skipif(MODE != "gpu", reason="needs a real CUDA GPU")
_RUNNER = "test_gufuncs_in_the_simulator_subprocess"
_mode = mode_check(MODE, _RUNNER)  # autouse: the tests but _RUNNER skip where they cannot run here


cuda = None if MODE == "subprocess" else importlib.import_module("numba.cuda")
try:
    import cupy
except Exception:  # noqa: BLE001 - not installed, or no GPU for it
    cupy = None

BATCH = (4, 3)


def _softmax(x):
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


# name -> (formula, layout, input maker (rng, dtype), NumPy reference)
CASES = {
    "norm": ("sqrt(sum(x[i]**2, i))", "(n)->()",
             lambda r, dt: (r.normal(size=BATCH + (17,)).astype(dt),), lambda x: np.linalg.norm(x, axis=-1)),
    "dot": ("sum(x[i]*y[i], i)", None,
            lambda r, dt: (r.normal(size=BATCH + (9,)).astype(dt), r.normal(size=(9,)).astype(dt)),
            lambda x, y: np.einsum("...i,...i->...", x, y)),
    "softmax": ("exp(x[i] - max(x[j], j)) / sum(exp(x[k] - max(x[j], j)), k)", None,
                lambda r, dt: (r.normal(scale=5, size=BATCH + (11,)).astype(dt),), _softmax),
    "matvec": ("sum(A[i,j]*x[j], j)", "(m,n),(n)->(m)",
               lambda r, dt: (r.normal(size=BATCH + (5, 7)).astype(dt), r.normal(size=BATCH + (7,)).astype(dt)),
               lambda A, x: np.einsum("...ij,...j->...i", A, x)),
    "cross": ("a[i+1]*b[i+2] - a[i+2]*b[i+1]", "(3),(3)->(3)",
              lambda r, dt: (r.normal(size=BATCH + (3,)).astype(dt), r.normal(size=BATCH + (3,)).astype(dt)),
              lambda a, b: np.cross(a, b)),
    "logsumexp": ("max(x[j], j) + log(sum(exp(x[i] - max(x[j], j)), i))", "(n)->()",
                  lambda r, dt: (r.normal(loc=80, scale=3, size=BATCH + (8,)).astype(dt),),
                  lambda x: np.logaddexp.reduce(x, axis=-1)),
    "horner": ("sum(c[k]*x**k, k)", "(n),()->()",
               lambda r, dt: (r.normal(size=BATCH + (6,)).astype(dt), r.uniform(-1.5, 1.5, BATCH).astype(dt)),
               lambda c, x: np.polynomial.polynomial.polyval(x, np.moveaxis(c, -1, 0), tensor=False)),
}
_GUFUNCS: dict = {}


def _gufunc(name):
    if name not in _GUFUNCS:
        formula, layout, _, _ = CASES[name]
        _GUFUNCS[name] = ug.gufunc(formula, layout=layout, target="cuda")
    return _GUFUNCS[name]


def _kinds():
    out = {"host": (lambda a: a, np.asarray, lambda r: isinstance(r, np.ndarray))}
    if cuda is not None:
        out["numba"] = (cuda.to_device, lambda r: r.copy_to_host(), lambda r: hasattr(r, "copy_to_host"))
    if MODE == "gpu" and cupy is not None:
        out["cupy"] = (cupy.asarray, cupy.asnumpy, lambda r: isinstance(r, cupy.ndarray))
    return out


KINDS = ["host", "numba"] + (["cupy"] if MODE == "gpu" and cupy is not None else [])


@pytest.fixture(params=KINDS)
def kind(request):
    return _kinds()[request.param]


def _close(got, ref, dtype):
    tol = {np.float32: (2e-5, 1e-6), np.float64: (1e-12, 1e-13)}[np.dtype(dtype).type]
    scale = max(1.0, float(np.abs(ref).max()))
    np.testing.assert_allclose(got, ref, rtol=tol[0] * 10, atol=tol[1] * 10 * scale)


# ---- results against NumPy ---------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("name", sorted(CASES))
def test_case_against_numpy(name, dtype, kind):
    put, get, is_kind = kind
    _, _, make, reference = CASES[name]
    args = make(np.random.default_rng(len(name)), dtype)
    r = _gufunc(name)(*[put(a) for a in args])
    assert is_kind(r)
    got = get(r)
    ref = reference(*[np.asarray(a, dtype=np.float64) for a in args])
    assert got.dtype == dtype  # float32 stays float32
    assert got.shape == ref.shape
    _close(got, ref, dtype)


def test_loop_dimensions_broadcast_and_views(kind):
    put, get, _ = kind
    r = np.random.default_rng(3)
    dot, matvec = _gufunc("dot"), _gufunc("matvec")
    x = r.normal(size=(4, 3, 9))
    y = r.normal(size=(4, 1, 9))
    _close(get(dot(put(x), put(y))), np.einsum("...i,...i->...", x, y), np.float64)
    A = r.normal(size=(5, 7))
    v = r.normal(size=(4, 3, 7))
    _close(get(matvec(put(A), put(v))), np.einsum("ij,...j->...i", A, v), np.float64)
    # strided loop and core dimensions (views, not copies)
    w = r.normal(size=(6, 4, 18))
    _close(get(dot(put(w)[::2, :, ::2], put(w)[1::2, :, 1::2])),
           np.einsum("...i,...i->...", w[::2, :, ::2], w[1::2, :, 1::2]), np.float64)
    # a transposed (F-ordered) matrix as the core
    At = r.normal(size=(7, 5))
    _close(get(matvec(put(At).T, put(v))), np.einsum("ij,...j->...i", At.T, v), np.float64)


def test_more_loop_elements_than_threads():
    # the simulator's grid has 64 threads, the GPU's a few per SM: each thread takes several rows
    r = np.random.default_rng(17)
    a, b = r.normal(size=(500, 3)), r.normal(size=(500, 3))
    np.testing.assert_allclose(_gufunc("cross")(a, b), np.cross(a, b), rtol=1e-12, atol=1e-14)


def test_one_core_vector_gives_a_scalar_on_the_host():
    x = np.random.default_rng(4).normal(size=10)
    got = _gufunc("norm")(x)
    assert np.ndim(got) == 0
    np.testing.assert_allclose(got, np.linalg.norm(x), rtol=1e-13)


def test_scalar_argument_and_weak_python_scalars(kind):
    put, get, _ = kind
    horner = _gufunc("horner")
    c = np.array([1.0, -2.0, 0.5, 3.0], np.float32)
    r = horner(put(c), 1.5)
    assert get(r).dtype == np.float32
    np.testing.assert_allclose(get(r), np.polynomial.polynomial.polyval(1.5, c.astype(np.float64)), rtol=1e-6)
    xs = np.linspace(-1, 1, 7).astype(np.float32)
    np.testing.assert_allclose(get(horner(put(c), put(xs))), np.polynomial.polynomial.polyval(xs, c), rtol=1e-5,
                               atol=1e-6)
    assert get(horner(put(c.astype(np.float64)), np.float32(2.0))).dtype == np.float64


def test_out_on_the_device_and_on_the_host(kind):
    put, get, _ = kind
    x = np.random.default_rng(5).normal(size=(6, 8))
    norm = _gufunc("norm")
    out = put(np.full(6, np.nan))
    assert norm(put(x), out=out) is out
    np.testing.assert_allclose(get(out), np.linalg.norm(x, axis=-1), rtol=1e-13)
    out32 = put(np.zeros(6, np.float32))
    norm(put(x), out=out32)  # float64 -> float32 is 'same_kind'
    np.testing.assert_allclose(get(out32), np.linalg.norm(x, axis=-1), rtol=1e-6)
    with pytest.raises(ValueError, match="shape"):
        norm(put(x), out=put(np.zeros(5)))
    with pytest.raises(TypeError, match="cannot cast"):
        norm(put(x), out=put(np.zeros(6, np.int32)))


def test_softmax_in_place_on_the_device():
    x = np.random.default_rng(6).normal(size=(5, 9))
    d = cuda.to_device(x.copy())
    _gufunc("softmax")(d, out=d)
    np.testing.assert_allclose(d.copy_to_host(), _softmax(x), rtol=1e-12)


@pytest.mark.parametrize("n", [40, 200])  # rows staged in shared memory, and too long to stage
def test_out_overlapping_the_input_by_a_row(n):
    """NumPy copies overlapping operands first; one thread per row would read rows that other
    threads have written.  The very same view is copied too unless its rows are staged."""
    g = ug.gufunc("x[i] * 2 - sum(x[j], j)", layout="(n)->(n)", target="cuda")
    a = np.random.default_rng(n).normal(size=(100, n))
    d = cuda.to_device(a)
    g(d[:-1], out=d[1:])
    want = a[:-1] * 2 - a[:-1].sum(axis=1, keepdims=True)
    np.testing.assert_allclose(d.copy_to_host()[1:], want, rtol=1e-12, atol=1e-12)
    r = ug.gufunc("x[i+1] - x[i]", layout="(n)->(n)", target="cuda")  # wraps: reads x[0] after out[0]
    d = cuda.to_device(a)
    r(d, out=d)
    np.testing.assert_allclose(d.copy_to_host(), np.roll(a, -1, axis=1) - a, rtol=1e-12, atol=1e-12)


def test_several_outputs_and_a_list_of_one():
    f = ug.gufunc(["sum(x[i], i)", "max(x[i], i)"], target="cuda")
    x = np.random.default_rng(7).normal(size=(3, 10))
    s, m = f(cuda.to_device(x))
    np.testing.assert_allclose(s.copy_to_host(), x.sum(-1), rtol=1e-13)
    np.testing.assert_array_equal(m.copy_to_host(), x.max(-1))
    hs, hm = f(x)
    np.testing.assert_array_equal(hm, x.max(-1))
    one = ug.gufunc(["sum(x[i], i)"], target="cuda")
    res = one(x)
    assert isinstance(res, tuple) and len(res) == 1
    np.testing.assert_allclose(res[0], x.sum(-1), rtol=1e-13)


def test_empty_loop_and_empty_core():
    norm = _gufunc("norm")
    assert norm(cuda.to_device(np.empty((0, 5)))).copy_to_host().shape == (0,)
    np.testing.assert_array_equal(norm(np.empty((3, 0))), np.zeros(3))


def test_integer_and_bool_inputs_follow_numpy_types():
    s = ug.gufunc("sum(x[i], i)", target="cuda")
    x = np.random.default_rng(8).integers(-100, 100, size=(4, 50)).astype(np.int16)
    got = s(cuda.to_device(x)).copy_to_host()
    assert got.dtype == np.sum(x, axis=-1).dtype  # small integers accumulate in int64, as np.sum
    np.testing.assert_array_equal(got, x.sum(-1))
    flags = np.random.default_rng(9).random((3, 20)) > 0.5
    np.testing.assert_array_equal(s(flags), flags.sum(-1))


# ---- errors ----------------------------------------------------------------------------------
# ---- rows staged in shared memory --------------------------------------------------------------
def _staged(g) -> bool:
    return "cuda.shared.array" in g.source  # the kernel compiled last


def test_staged_rows_over_several_tiles_and_a_ragged_last_one():
    """More rows than one round of the grid, a last tile that is not full, rows of odd and even length."""
    from ufuncgen.backends.cuda import TUNING

    g = _gufunc("softmax")
    rows = TUNING["sim_block"] * TUNING["sim_grid"] * 2 + 5 if MODE != "gpu" else 100_003
    for n in (8, 13, 45):  # rows shorter and longer than a block
        x = np.random.default_rng(n).normal(scale=4, size=(rows, n)).astype(np.float32)
        got = g(cuda.to_device(x)).copy_to_host()
        assert _staged(g)
        _close(got, _softmax(x), np.float32)


def test_staged_regions_of_mixed_dtypes_and_a_broadcast_row():
    """int32 and float64 rows staged side by side (regions aligned to 8 bytes), a shared weight row
    read in place (loop stride 0), and a strided out= written back from shared memory."""
    g = ug.gufunc("w[i] * x[i] + y[i] / 3", layout="(n),(n),(n)->(n)", args=("x", "w", "y"), target="cuda")
    r = np.random.default_rng(5)
    x = r.integers(-50, 50, size=(70, 9)).astype(np.int32)
    w = r.normal(size=9)
    y = r.normal(size=(70, 9)).astype(np.float32)
    out = cuda.to_device(np.zeros((70, 18)))
    g(cuda.to_device(x), cuda.to_device(w), cuda.to_device(y), out=out[:, ::2])
    assert _staged(g)
    host = out.copy_to_host()
    np.testing.assert_allclose(host[:, ::2], w * x + y.astype(np.float64) / 3, rtol=1e-6)
    assert not host[:, 1::2].any()


def test_rows_too_long_for_shared_memory_are_read_in_place():
    from ufuncgen.backends.cuda import TUNING

    g = ug.gufunc("x[i] - sum(x[j], j) / 2", layout="(n)->(n)", target="cuda")
    n = TUNING["gu_stage_smem"] // (32 * 8)  # 32 rows of float64, in and out, do not fit
    x = np.random.default_rng(6).normal(size=(3, n))
    got = g(cuda.to_device(x)).copy_to_host()
    assert not _staged(g)
    np.testing.assert_allclose(got, x - x.sum(axis=1, keepdims=True) / 2, rtol=1e-10, atol=1e-10)


def test_core_dimension_errors_name_the_dimension():
    dot, cross, matvec = _gufunc("dot"), _gufunc("cross"), _gufunc("matvec")
    with pytest.raises(ValueError, match="'n' has size 4 .* and 5 in y"):
        dot(cuda.to_device(np.ones(4)), cuda.to_device(np.ones(5)))
    with pytest.raises(ValueError, match="size 3"):
        cross(np.ones(4), np.ones(4))
    with pytest.raises(ValueError, match="A has 1 dimension"):
        matvec(np.ones(3), np.ones(3))
    with pytest.raises(ValueError, match="broadcast"):
        dot(np.ones((2, 4)), np.ones((3, 4)))


def test_unsupported_keywords_and_mixed_sides():
    norm = _gufunc("norm")
    x = np.ones((2, 3))
    with pytest.raises(TypeError, match="axes"):
        norm(x, axes=[(0,), ()])
    with pytest.raises(TypeError, match="mixed"):
        _gufunc("dot")(cuda.to_device(x), x)
    with pytest.raises(TypeError, match="takes 1 argument"):
        norm(x, x)


# ---- compilation and dtypes ----------------------------------------------------------------
def test_lazy_compile_per_dtype_and_source():
    g = ug.gufunc("sum(x[i]*x[i], i) + 1", target="cuda")
    assert g.signatures == []
    g(cuda.to_device(np.ones((2, 3), np.float32)))
    assert g.signatures == ["float32(float32)"]
    g(cuda.to_device(np.ones((2, 3))))
    assert g.signatures == ["float32(float32)", "float64(float64)"]
    assert "def kernel(x, _out0)" in g.source and "def launcher(" in g.source
    assert "# signature: float64(float64)" in g.source  # the kernel compiled last


def test_explicit_signatures_compile_at_once_and_convert_inputs():
    from ufuncgen.backends.cuda import KERNELS
    before = KERNELS.info()["compiles"]
    g = ug.gufunc("sqrt(sum(x[i]**2, i)) / 3", signatures=["float32(float32)"], target="cuda")
    assert KERNELS.info()["compiles"] == before + 1
    assert g.signatures == ["float32(float32)"]
    x = np.random.default_rng(10).integers(-9, 9, size=(5, 4)).astype(np.int16)
    r = g(cuda.to_device(x)).copy_to_host()  # int16 core vectors are converted on the device
    assert r.dtype == np.float32
    np.testing.assert_allclose(r, np.linalg.norm(x.astype(np.float64), axis=-1) / 3, rtol=1e-6)
    # (n)->(n): rows read in place, and rows staged in shared memory; no call compiles again
    before = KERNELS.info()["compiles"]
    h = ug.gufunc("x[i] / sum(x[j], j)", signatures=["float32(float32)"], target="cuda")
    assert KERNELS.info()["compiles"] == before + 2
    for shape in [(2, 3, 40), (7, 1), (1, 300), (5, 2, 3)]:
        many = np.random.default_rng(11).uniform(1, 2, size=shape).astype(np.float32)
        got = h(cuda.to_device(many)).copy_to_host()
        np.testing.assert_allclose(got, many / many.sum(axis=-1, keepdims=True), rtol=1e-6)
    assert KERNELS.info()["compiles"] == before + 2
    with pytest.raises(TypeError, match="no compiled signature"):
        g(cuda.to_device(x.astype(np.float64)))


def test_float16_is_computed_in_float32():
    g = _gufunc("norm")
    x = np.random.default_rng(11).uniform(-2, 2, size=(4, 6)).astype(np.float16)
    r = g(cuda.to_device(x)).copy_to_host()
    assert r.dtype == np.float16
    np.testing.assert_allclose(r.astype(np.float32), np.linalg.norm(x.astype(np.float32), axis=-1), rtol=2e-3)


def test_pickle_and_gradient_stay_on_cuda():
    norm = _gufunc("norm")
    g = pickle.loads(pickle.dumps(norm))
    assert g.target == "cuda"
    x = np.random.default_rng(12).normal(size=(3, 5))
    np.testing.assert_allclose(g(x), np.linalg.norm(x, axis=-1), rtol=1e-13)
    grad = norm.diff("x")
    assert grad.target == "cuda"
    np.testing.assert_allclose(grad(x), x / np.linalg.norm(x, axis=-1, keepdims=True), rtol=1e-12)


def test_auto_sends_device_arrays_to_cuda_and_host_arrays_to_cpu():
    g = ug.gufunc("sum(x[i]*y[i], i)", target="auto")
    x = np.random.default_rng(13).normal(size=(4, 6))
    r = g(cuda.to_device(x), cuda.to_device(x))
    assert hasattr(r, "copy_to_host")
    np.testing.assert_allclose(r.copy_to_host(), (x * x).sum(-1), rtol=1e-13)
    h = g(x, x)
    assert isinstance(h, np.ndarray)
    assert g._device_impl._plans and all(hasattr(p, "kernel") for p in g._device_impl._plans.values())


# ---- real GPU only ---------------------------------------------------------------------------
@gpu
@only_gpu
@pytest.mark.parametrize("name", ["norm", "softmax", "matvec", "logsumexp", "horner"])
def test_float32_ptx_has_no_float64_instruction(name):
    formula, layout, make, _ = CASES[name]
    g = ug.gufunc(formula, layout=layout, target="cuda")
    g(*[cuda.to_device(a) for a in make(np.random.default_rng(1), np.float32)])
    ptx = [p.kernel for p in g._device_impl._plans.values() if hasattr(p, "kernel")][-1].ptx
    body = [ln for ln in ptx.splitlines() if ".f64" in ln and ".reg" not in ln]
    assert body == [], body[:5]


@gpu
@only_gpu
@pytest.mark.skipif(cupy is None, reason="needs CuPy")
def test_cupy_in_cupy_out_on_a_cupy_stream():
    x = cupy.asarray(np.random.default_rng(14).normal(size=(1000, 32)).astype(np.float32))
    norm = _gufunc("norm")
    with cupy.cuda.Stream(non_blocking=True) as s:
        r = norm(x)
        r2 = norm(x, stream=s)
    s.synchronize()
    assert isinstance(r, cupy.ndarray) and r.dtype == np.float32
    want = np.linalg.norm(cupy.asnumpy(x).astype(np.float64), axis=-1)
    np.testing.assert_allclose(cupy.asnumpy(r), want, rtol=1e-5)
    np.testing.assert_allclose(cupy.asnumpy(r2), want, rtol=1e-5)


@gpu
@only_gpu
def test_many_loop_elements_use_the_whole_grid():
    n = 3_000_001
    x = np.random.default_rng(15).normal(size=(n, 3)).astype(np.float32)
    y = np.random.default_rng(16).normal(size=(n, 3)).astype(np.float32)
    got = _gufunc("cross")(cuda.to_device(x), cuda.to_device(y)).copy_to_host()
    np.testing.assert_allclose(got, np.cross(x, y), rtol=1e-5, atol=1e-5)


# ---- processes ---------------------------------------------------------------------------
@pytest.mark.skipif(MODE != "subprocess", reason="the tests above ran in this process")
def test_gufuncs_in_the_simulator_subprocess():
    rerun_in_simulator(__file__)
