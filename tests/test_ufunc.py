"""NumPy ufunc semantics of the objects ``ug.ufunc`` returns, on the cpu and parallel targets."""
import pickle
import platform

import numpy as np
import pytest

import ufuncgen as ug

RNG = np.random.default_rng(7)
BIG = 100_003  # above the parallel target's threshold, so it really splits


@pytest.fixture(scope="module")
def axpy_fixed():
    return {t: ug.ufunc("a*x + y", signatures=["float64(float64, float64, float64)",
                                                "float32(float32, float32, float32)"], target=t)
            for t in ("cpu", "parallel")}


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("n", [1, 7, 300, BIG])
def test_broadcasting_scalars_and_strides(target, dtype, n):
    f = ug.ufunc("a*x + y", target=target)
    x = RNG.normal(size=2 * n).astype(dtype)
    y = RNG.normal(size=n).astype(dtype)
    a = dtype == "float32" and np.float32(1.5) or 1.5
    np.testing.assert_allclose(f(a, x[::2], y), a * x[::2] + y, rtol=1e-6)
    np.testing.assert_allclose(f(x[:n], x[::-2], 2.0), x[:n] * x[::-2] + 2.0, rtol=1e-6)
    col = RNG.normal(size=(3, 1)).astype(dtype)
    np.testing.assert_allclose(f(col, y[:4], 1.0), col * y[:4] + 1.0, rtol=1e-6)
    assert f(a, x[::2], y).dtype == np.dtype(dtype)


def test_out_and_out_aliasing_an_input(target):
    f = ug.ufunc("a*x + y", target=target)
    x = RNG.normal(size=BIG)
    y = RNG.normal(size=BIG)
    want = 2 * x + y
    out = np.empty_like(x)
    assert f(2.0, x, y, out=out) is out
    np.testing.assert_allclose(out, want)
    f(2.0, x, y, out=x)  # in place
    np.testing.assert_allclose(x, want)


def test_where_keeps_masked_output_untouched(target):
    f = ug.ufunc("x * 2", target=target)
    x = np.arange(10.0)
    out = np.full(10, -1.0)
    f(x, out=out, where=x > 4)
    np.testing.assert_array_equal(out, np.where(x > 4, 2 * x, -1.0))


def test_explicit_signatures_make_a_real_numpy_ufunc(axpy_fixed):
    f = axpy_fixed["cpu"]
    assert isinstance(f.ufunc, np.ufunc)
    assert f.ufunc.types == ["ddd->d", "fff->f"]
    assert f.signatures == ["float64(float64, float64, float64)", "float32(float32, float32, float32)"]
    x = np.arange(4, dtype=np.float32)
    assert f(x, x, x).dtype == np.float32
    # int64 inputs are cast by NumPy's rules to the float64 loop
    np.testing.assert_array_equal(f(2, np.arange(3), np.arange(3)), 3 * np.arange(3.0))


def test_reduce_and_accumulate_for_binary_formulas():
    sub = ug.ufunc("x - y", signatures="float64(float64, float64)")
    v = RNG.normal(size=1000)
    np.testing.assert_allclose(sub.reduce(v), np.subtract.reduce(v))
    np.testing.assert_allclose(sub.accumulate(v), np.subtract.accumulate(v))
    m = RNG.normal(size=(30, 40))
    np.testing.assert_allclose(sub.reduce(m, axis=1), np.subtract.reduce(m, axis=1))
    np.testing.assert_allclose(sub.outer(v[:5], v[:3]), np.subtract.outer(v[:5], v[:3]))
    lazy = ug.ufunc("x*y + 1")
    np.testing.assert_allclose(lazy.reduce(np.array([1.0, 2.0, 3.0])), (1 * 2 + 1) * 3 + 1)


def test_lazy_float32_after_float64_gets_its_own_loop(target):
    f = ug.ufunc("0.5*x + 0.1", target=target)
    assert f(np.ones(3)).dtype == np.float64
    out32 = f(np.ones(3, dtype=np.float32))
    assert out32.dtype == np.float32  # Numba's DUFunc would reuse dd->d here
    assert f.types == ["d->d", "f->f"]
    np.testing.assert_array_equal(out32, np.float32(0.5) * np.float32(1) + np.float32(0.1))


@pytest.mark.parametrize("formula,make", [
    ("x / y", lambda x, y: x / y),
    ("x // y", lambda x, y: x // y),
    ("x % y", lambda x, y: x % y),
    ("x * y + 3", lambda x, y: x * y + 3),
    ("x ** 2 - y", lambda x, y: x ** 2 - y),
    ("abs(x - y)", lambda x, y: np.abs(x - y)),
    ("sin(x) + y", lambda x, y: np.sin(x) + y),
    ("x > y", lambda x, y: x > y),
])
@pytest.mark.parametrize("dtype", ["int64", "int32", "int16", "uint8"])
def test_integer_inputs_follow_numpy_type_rules(formula, make, dtype):
    x = RNG.integers(1, 50, 64).astype(dtype)
    y = RNG.integers(1, 9, 64).astype(dtype)
    f = ug.ufunc(formula)
    got = f(x, y)
    with np.errstate(all="ignore"):
        want = make(x, y)
    if want.dtype == np.float16:  # documented: Numba has no float16, 1-byte ints compute in float32
        with np.errstate(all="ignore"):
            want = make(x.astype(np.float32), y.astype(np.float32))
    assert got.dtype == want.dtype
    np.testing.assert_allclose(got, want, rtol=1e-6 if got.dtype == np.float32 else 1e-12)


def test_mixed_dtypes_and_python_scalars_follow_numpy():
    f = ug.ufunc("x * y + 1.5")
    x32 = np.ones(3, np.float32)
    assert f(x32, 2.0).dtype == np.float32      # Python float is weak
    assert f(x32, np.ones(3)).dtype == np.float64
    assert f(np.arange(3), 2).dtype == np.float64
    assert ug.ufunc("x * y")(np.arange(3, dtype=np.int32), 2).dtype == np.int32


def test_complex_arithmetic():
    z = RNG.normal(size=50) + 1j * RNG.normal(size=50)
    f = ug.ufunc("exp(1j*z) * conj(z) + abs(z) + real(z)*imag(z)")
    want = np.exp(1j * z) * np.conj(z) + np.abs(z) + z.real * z.imag
    np.testing.assert_allclose(f(z), want, rtol=1e-12)
    z64 = z.astype(np.complex64)
    assert f(z64).dtype == np.complex64


def test_booleans_comparisons_and_where():
    x = np.linspace(-2, 2, 41)
    y = np.linspace(1, -1, 41)
    f = ug.ufunc("where((x > 0) & ~(y > 0.5) | (x < -1.5), x, -y)")
    np.testing.assert_array_equal(f(x, y), np.where((x > 0) & ~(y > 0.5) | (x < -1.5), x, -y))
    chained = ug.ufunc("-1 < x <= 1")
    np.testing.assert_array_equal(chained(x), (-1 < x) & (x <= 1))
    assert chained(x).dtype == np.bool_
    pw = ug.ufunc("Piecewise((x, x < 0), (x**2, x < 1))")  # no default branch: nan
    np.testing.assert_array_equal(pw(x), np.where(x < 0, x, np.where(x < 1, x ** 2, np.nan)))


@pytest.mark.parametrize("dtype", ["float64", "float32", "int64", "int32", "complex128", "int8"])
def test_outputs_large_enough_to_be_streamed_past_the_cache(dtype):
    """Contiguous outputs over ``STREAM_BYTES`` go through the block buffer with non-temporal stores
    (numbers of 4 and 8 bytes; the others are stored in place): every element, the ragged last
    block, in place, next to a strided output, and on the parallel target."""
    from ufuncgen.backends.cpu import STREAM_BYTES

    dt = np.dtype(dtype)
    n = STREAM_BYTES // min(dt.itemsize, 4) + 131  # over the limit for every type, not a whole block
    x = (RNG.normal(size=n) * 100).astype(dt)
    f = ug.ufunc(["x + x", "x * 3"], target="cpu")
    want = (x + x, x * 3)
    a, b = f(x)
    np.testing.assert_array_equal(a, want[0])
    np.testing.assert_array_equal(b, want[1])
    strided = np.zeros(2 * n, dt)
    f(x, out=(a, strided[::2]))  # one output streamed, one scattered
    np.testing.assert_array_equal(strided[::2], want[1])
    assert not strided[1::2].any()
    f(x, out=(x, a))  # in place: each block reads x before its buffer is streamed back
    np.testing.assert_array_equal(x, want[0])
    np.testing.assert_array_equal(a, want[1])
    g = ug.ufunc("x * 3", target="parallel")
    np.testing.assert_array_equal(g(want[0]), want[0] * 3)
    if platform.machine() in ("x86_64", "AMD64") and dt.itemsize in (4, 8):
        ir_text = ug.ufunc("x * 3", signatures=f"{dt.name}({dt.name})", cache=False).inspect_llvm()
        assert "!nontemporal" in next(iter(ir_text.values()))


def test_several_outputs_return_a_tuple(target):
    f = ug.ufunc(["x + y", "x * y", "x > y"], target=target)
    x = RNG.normal(size=BIG)
    y = RNG.normal(size=BIG)
    s, p, g = f(x, y)
    np.testing.assert_allclose(s, x + y)
    np.testing.assert_allclose(p, x * y)
    np.testing.assert_array_equal(g, x > y)
    assert (f.nin, f.nout) == (2, 3)
    outs = (np.empty(BIG), np.empty(BIG), np.empty(BIG, bool))
    assert f(x, y, out=outs)[0] is outs[0]
    single = ug.ufunc(["x + 1"])
    assert isinstance(single(np.ones(2)), tuple)


def test_args_order_and_unused_args():
    f = ug.ufunc("x - y", args=("y", "x", "unused"))
    np.testing.assert_array_equal(f(np.ones(2), np.full(2, 5.0), 0.0), [4.0, 4.0])
    assert f.args == ("y", "x", "unused")
    with pytest.raises(ug.FormulaError, match="z"):
        ug.ufunc("x + z", args=("x",))
    with pytest.raises(TypeError, match="missing 1 required positional argument: 'unused'"):
        f(np.ones(2), np.ones(2))
    with pytest.raises(TypeError, match="takes 3 positional arguments"):
        f(1.0, 2.0, 3.0, 4.0)


def test_sympy_expressions_are_accepted():
    import sympy as sp
    x, y = sp.symbols("x y", real=True)
    f = ug.ufunc(sp.sin(x) * sp.exp(y) + sp.Rational(1, 3))
    xs = np.linspace(0, 1, 5)
    np.testing.assert_allclose(f(xs, xs), np.sin(xs) * np.exp(xs) + 1 / 3)
    with pytest.raises(ug.FormulaError, match="besselj"):
        ug.ufunc(sp.besselj(0, x))


def test_signature_errors():
    with pytest.raises(ug.SignatureError, match="2 input"):
        ug.ufunc("a*x + y", signatures="float64(float64, float64)")
    with pytest.raises(ug.SignatureError, match="flaot32"):
        ug.ufunc("x", signatures="flaot32(float32)")
    with pytest.raises(ug.SignatureError, match="does not parse"):
        ug.ufunc("x", signatures="float64 float64")


@pytest.mark.parametrize("bad", [np.array(["a", "b"]), np.array([object(), 1], dtype=object),
                                 np.array(["2020-01-01"], dtype="datetime64[D]")])
def test_unsupported_input_dtypes_raise_type_error(bad):
    with pytest.raises(TypeError, match="dtype"):
        ug.ufunc("x + 1")(bad)


def test_attributes_repr_and_latex():
    f = ug.ufunc("sin(x)**2 + a*exp(-y)", name="wave")
    assert f.__name__ == "wave"
    assert f.args == ("a", "x", "y") and f.nin == 3 and f.nout == 1 and f.target == "cpu"
    assert f.signatures == []
    assert "lazy" in repr(f) and "wave" in repr(f)
    f(1.0, 2.0, 3.0)
    assert f.signatures == ["float64(float64, float64, float64)"]
    assert "def kernel(a, x, y):" in f.source
    latex = f._repr_latex_()
    assert latex.startswith("$") and "\\sin" in latex
    assert "wave" in f._repr_html_()


def test_pickle_roundtrip_recompiles_from_the_formula():
    f = ug.ufunc("a*x + y", signatures=["float32(float32, float32, float32)"], name="axpy", fastmath=True)
    g = pickle.loads(pickle.dumps(f))
    assert g.signatures == f.signatures and g.__name__ == "axpy" and g.options["fastmath"]
    x = np.arange(5, dtype=np.float32)
    np.testing.assert_array_equal(g(2, x, x), 3 * x)


def test_unknown_target_and_option_are_clear_errors():
    with pytest.raises(ValueError, match="valid targets"):
        ug.ufunc("x", target="gpu")
    with pytest.raises(TypeError, match="fastmath"):
        ug.ufunc("x", fastmth=True)


def test_a_kernel_line_shows_in_tracebacks_and_linecache():
    import linecache
    f = ug.ufunc("x + 1")
    f(1.0)
    src = f.source
    name = [k for k in linecache.cache if k.startswith("<ufuncgen kernel")]
    assert any("".join(linecache.getlines(k)) == src for k in name)
