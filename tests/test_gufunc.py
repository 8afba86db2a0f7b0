"""Generalized ufuncs from index notation, against NumPy (norm, einsum, softmax, polyval, cross, roll).

Every case runs for float32 and float64 on the cpu and parallel targets; compiled loops are shared
through the in-memory cache (the target does not change the loop), so each formula and dtype
compiles once per session.
"""
import pickle
import warnings
from collections import namedtuple

import numpy as np
import pytest
import sympy as sp

import ufuncgen as ug
from ufuncgen.indexing import Idx, reduce_max, reduce_sum

DTYPES = (np.float32, np.float64)
RTOL = {np.float32: 2e-5, np.float64: 1e-12}
ATOL = {np.float32: 1e-6, np.float64: 1e-13}
BATCH = (4, 3)

Case = namedtuple("Case", "formula layout inferred make reference")


def _softmax(x):
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


CASES = {
    "norm": Case("sqrt(sum(x[i]**2, i))", "(n)->()", "(n)->()",
                 lambda r, dt: (r.normal(size=BATCH + (17,)).astype(dt),),
                 lambda x: np.linalg.norm(x, axis=-1)),
    "dot": Case("sum(x[i]*y[i], i)", None, "(n),(n)->()",
                lambda r, dt: (r.normal(size=BATCH + (9,)).astype(dt), r.normal(size=(9,)).astype(dt)),
                lambda x, y: np.einsum("...i,...i->...", x, y)),
    "softmax": Case("exp(x[i] - max(x[j], j)) / sum(exp(x[k] - max(x[j], j)), k)", None, "(n)->(n)",
                    lambda r, dt: (r.normal(scale=5, size=BATCH + (11,)).astype(dt),), _softmax),
    # stable: exp(1000) overflows, the formula must not
    "logsumexp": Case("max(x[j], j) + log(sum(exp(x[i] - max(x[j], j)), i))", "(n)->()", "(n)->()",
                      lambda r, dt: (r.normal(loc=1000, scale=3, size=BATCH + (8,)).astype(dt),),
                      lambda x: np.logaddexp.reduce(x, axis=-1)),
    "horner": Case("sum(c[k]*x**k, k)", "(n),()->()", "(n),()->()",
                   lambda r, dt: (r.normal(size=BATCH + (6,)).astype(dt), r.uniform(-1.5, 1.5, BATCH).astype(dt)),
                   lambda c, x: np.polynomial.polynomial.polyval(x, np.moveaxis(c, -1, 0), tensor=False)),
    "matvec": Case("sum(A[i,j]*x[j], j)", "(m,n),(n)->(m)", "(n,m),(m)->(n)",
                   lambda r, dt: (r.normal(size=BATCH + (5, 7)).astype(dt), r.normal(size=BATCH + (7,)).astype(dt)),
                   lambda A, x: np.einsum("...ij,...j->...i", A, x)),
    "cross": Case("a[i+1]*b[i+2] - a[i+2]*b[i+1]", "(3),(3)->(3)", "(n),(n)->(n)",
                  lambda r, dt: (r.normal(size=BATCH + (3,)).astype(dt), r.normal(size=BATCH + (3,)).astype(dt)),
                  lambda a, b: np.cross(a, b)),
    "forward_difference": Case("x[i+1] - x[i]", None, "(n)->(n)",
                               lambda r, dt: (r.normal(size=BATCH + (10,)).astype(dt),),
                               lambda x: np.roll(x, -1, axis=-1) - x),
    "laplacian": Case("x[i-1] - 2*x[i] + x[i+1]", None, "(n)->(n)",
                      lambda r, dt: (r.normal(size=BATCH + (10,)).astype(dt),),
                      lambda x: np.roll(x, 1, axis=-1) - 2 * x + np.roll(x, -1, axis=-1)),
    "unit": Case("x[i] / sqrt(sum(x[j]**2, j))", None, "(n)->(n)",
                 lambda r, dt: (r.normal(size=BATCH + (6,)).astype(dt),),
                 lambda x: x / np.linalg.norm(x, axis=-1, keepdims=True)),
    "outer": Case("x[i]*y[j]", None, "(n),(m)->(n,m)",
                  lambda r, dt: (r.normal(size=(5,)).astype(dt), r.normal(size=BATCH + (4,)).astype(dt)),
                  lambda x, y: np.einsum("i,...j->...ij", x, y)),
    "transpose": Case("A[j,i]", "(p,q)->(q,p)", "(n,m)->(m,n)",
                      lambda r, dt: (r.normal(size=BATCH + (2, 5)).astype(dt),),
                      lambda A: np.swapaxes(A, -1, -2)),
    "trace_of_product": Case("sum(sum(A[i,j]*B[j,i], j), i)", None, "(n,m),(m,n)->()",
                             lambda r, dt: (r.normal(size=BATCH + (3, 4)).astype(dt),
                                            r.normal(size=BATCH + (4, 3)).astype(dt)),
                             lambda A, B: np.einsum("...ij,...ji->...", A, B)),
    "prod": Case("prod(x[i], i)", None, "(n)->()",
                 lambda r, dt: (r.uniform(0.5, 1.5, BATCH + (7,)).astype(dt),), lambda x: np.prod(x, axis=-1)),
    "min": Case("min(x[i], i)", None, "(n)->()",
                lambda r, dt: (r.normal(size=BATCH + (7,)).astype(dt),), lambda x: np.min(x, axis=-1)),
    "clip_below": Case("max(x[i], a)", None, "(),(n)->(n)",
                       lambda r, dt: (dt(0.1), r.normal(size=BATCH + (7,)).astype(dt)),
                       lambda a, x: np.maximum(x, a)),
    "variance": Case("sum((x[i] - sum(x[j], j)/sum(1, j))**2, i) / sum(1, i)", None, "(n)->()",
                     lambda r, dt: (r.normal(loc=3, size=BATCH + (12,)).astype(dt),), lambda x: np.var(x, axis=-1)),
}


def _run(case, dtype, target, rng):
    g = ug.gufunc(case.formula, layout=case.layout, target=target)
    args = case.make(rng, dtype)
    got = g(*args)
    ref = case.reference(*[np.asarray(a, dtype=np.float64) for a in args])
    return g, got, ref


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("name", sorted(CASES))
def test_case_against_numpy(name, dtype, target):
    case = CASES[name]
    g, got, ref = _run(case, dtype, target, np.random.default_rng(len(name)))
    assert got.dtype == dtype  # float32 stays float32
    assert got.shape == ref.shape
    scale = max(1.0, float(np.abs(ref).max()))
    np.testing.assert_allclose(got, ref, rtol=RTOL[dtype] * 10, atol=ATOL[dtype] * 10 * scale)
    assert g.layout == (case.layout or case.inferred)


@pytest.mark.parametrize("name", sorted(CASES))
def test_layout_inferred(name):
    case = CASES[name]
    assert ug.gufunc(case.formula).layout == case.inferred


@pytest.mark.parametrize("name", ["norm", "softmax", "horner", "matvec", "logsumexp"])
def test_float32_kernel_has_no_float64(name):
    g = ug.gufunc(CASES[name].formula, layout=CASES[name].layout)
    src = g.kernel_source((np.float32,) * g.nin).text
    body = src.split("def kernel", 1)[1]
    assert "float64" not in src.split("# signature", 1)[1].split("\n", 1)[1]
    assert "np.float32(" in src or "_c" not in body  # typed constants, when there are any


def test_softmax_max_is_hoisted():
    """The max and the sum are computed once per call, before the loop over the output."""
    g = ug.gufunc(CASES["softmax"].formula)
    body = g.source.split("def kernel", 1)[1]
    assert body.count("for j in") == 1  # the loop of the max, once
    out_loop = body.index("for i in")
    assert body.index("for j in") < out_loop and body.index("np.exp") < out_loop
    # the terms of the sum are kept in the output buffer, so exp runs once per element
    assert body.count("np.exp") == 1 and "_out0[i] = _out0[i]/" in body


def test_softmax_in_place():
    """out= aliasing the input: NumPy copies overlapping operands, so keeping terms in out is safe."""
    g = ug.gufunc(CASES["softmax"].formula)
    x = np.random.default_rng(5).normal(size=(3, 7))
    want = _softmax(x)
    assert g(x, out=x) is x
    np.testing.assert_allclose(x, want, rtol=1e-12)


def test_invariant_factor_hoisted():
    g = ug.gufunc("x[i] / sqrt(sum(x[j]**2, j))")
    body = g.source.split("def kernel", 1)[1]
    assert body.index("np.sqrt") < body.index("for i in")


def test_horner_has_no_power():
    g = ug.gufunc("sum(c[k]*x**k, k)")
    assert "power" not in g.source and "range(_n0 - 1, -1, -1)" in g.source


def test_golden_dot_source_float32():
    g = ug.gufunc("sum(x[i]*y[i], i)")
    assert g.kernel_source((np.float32, np.float32)).text == (
        "# ufuncgen gufunc kernel for 'sum(x[i]*y[i], i)'\n"
        "# layout: (n),(n)->()\n"
        "# signature: float32(float32, float32)\n"
        "import math\n"
        "import numpy as np\n"
        "\n"
        "_c0 = np.float32(0.0)\n"
        "\n"
        "\n"
        "def kernel(x, y, _out0):\n"
        "    _n0 = x.shape[0]\n"
        "    _t0 = _c0\n"
        "    for i in range(_n0):\n"
        "        _t0 += x[i]*y[i]\n"
        "    _out0[0] = _t0\n")


def test_codegen_keeps_the_tree_unevaluated():
    # rebuilt with evaluation, SymPy turns sin(atan2(x, x)) into x/sqrt(2*x**2): nan at 0
    x = np.array([0.0, 1.0, -2.0, np.inf])
    g = ug.gufunc("sin(atan2(x[i], x[i])) * cos(atan2(x[i], x[i]))")
    np.testing.assert_array_equal(g(x), np.sin(np.arctan2(x, x)) * np.cos(np.arctan2(x, x)))
    s = ug.gufunc("sum(sin(atan2(x[i], x[i])), i)")  # inside a reduction too
    np.testing.assert_allclose(s(x[:3]), np.sin(np.arctan2(x[:3], x[:3])).sum(), rtol=0, atol=1e-15)


# ---- several outputs, integers, edge values --------------------------------------------------------
def test_several_outputs(target):
    g = ug.gufunc(["sum(x[i], i)", "x[i] - sum(x[j], j) / sum(1, j)"], target=target)
    assert g.layout == "(n)->(),(n)" and g.nout == 2
    x = np.random.default_rng(1).normal(size=(6, 5))
    total, centered = g(x)
    np.testing.assert_allclose(total, x.sum(-1), rtol=1e-12)
    np.testing.assert_allclose(centered, x - x.mean(-1, keepdims=True), rtol=1e-12, atol=1e-14)


def test_list_of_one_formula_gives_a_tuple():
    out = ug.gufunc(["sum(x[i], i)"])(np.ones(3))
    assert isinstance(out, tuple) and len(out) == 1 and out[0] == 3


@pytest.mark.parametrize("dtype,want", [(np.int32, np.int64), (np.int64, np.int64), (np.uint8, np.uint64),
                                        (np.bool_, np.int64)])
def test_integer_sums_accumulate_like_np_sum(dtype, want):
    x = (np.arange(24).reshape(4, 6) * 37 % 11).astype(dtype)
    got = ug.gufunc("sum(x[i], i)")(x)
    ref = np.sum(x, axis=-1)
    assert got.dtype == want == ref.dtype
    np.testing.assert_array_equal(got, ref)


def test_empty_core_dimension_gives_identities():
    x = np.empty((3, 0))
    np.testing.assert_array_equal(ug.gufunc("sum(x[i], i)")(x), np.sum(x, axis=-1))
    np.testing.assert_array_equal(ug.gufunc("prod(x[i], i)")(x), np.prod(x, axis=-1))
    assert np.all(ug.gufunc("max(x[i], i)")(x) == -np.inf)
    assert np.all(ug.gufunc("min(x[i], i)")(x) == np.inf)


@pytest.mark.parametrize("op", ["max", "min"])
def test_extrema_propagate_nan_without_warning(op):
    x = np.array([[1.0, np.nan, 3.0], [1.0, 2.0, 3.0], [np.nan, 1.0, 2.0], [1.0, 2.0, np.nan]])
    g = ug.gufunc(f"{op}(x[i], i)")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # NumPy does not warn here either
        np.testing.assert_array_equal(g(x), getattr(np, op)(x, axis=-1))


@pytest.mark.parametrize("dtype", [np.int16, np.uint32, np.int64])
def test_extrema_of_integers(dtype):
    x = (np.arange(30).reshape(5, 6) * 7919 % 97).astype(dtype)
    got = ug.gufunc("max(x[i], i) - min(x[j], j)")(x)
    np.testing.assert_array_equal(got, np.ptp(x, axis=-1))


def test_index_value_in_formula():
    """An index used as a value: weighted sum sum(i*x[i]); float32 stays float32."""
    x = np.linspace(0, 1, 9, dtype=np.float32)
    got = ug.gufunc("sum(i*x[i], i)")(x)
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, np.dot(np.arange(9), x.astype(np.float64)), rtol=1e-6)


def test_fixed_sizes_are_checked_by_numpy():
    cross = ug.gufunc(CASES["cross"].formula, layout="(3),(3)->(3)")
    with pytest.raises(ValueError):
        cross(np.ones(4), np.ones(4))


def test_broadcasting_out_and_axes():
    norm = ug.gufunc("sqrt(sum(x[i]**2, i))")
    x = np.random.default_rng(2).normal(size=(5, 8))
    out = np.empty(8)
    assert norm(x, axes=[(0,), ()], out=out) is out
    np.testing.assert_allclose(out, np.linalg.norm(x, axis=0), rtol=1e-12)
    np.testing.assert_allclose(norm(x[:, ::2]), np.linalg.norm(x[:, ::2], axis=-1), rtol=1e-12)


def test_python_scalars_and_lists():
    horner = ug.gufunc("sum(c[k]*x**k, k)")
    assert horner([1.0, 2.0, 3.0], 2.0) == pytest.approx(17.0)
    c = np.array([1, 2, 3], dtype=np.float32)
    assert horner(c, 0.5).dtype == np.float32  # a Python float is weak, as in NumPy


# ---- the parallel target ----------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["norm", "softmax", "matvec", "horner"])
def test_parallel_split_over_loop_dimensions(name):
    """Large enough to be split over threads; out= and broadcasting go through the split too."""
    case = CASES[name]
    g = ug.gufunc(case.formula, layout=case.layout, target="parallel")
    rng = np.random.default_rng(3)
    args = case.make(rng, np.float64)
    big = tuple(np.broadcast_to(a, (3000,) + np.shape(a)).copy() if np.ndim(a) else a for a in args)
    ref = case.reference(*big)
    np.testing.assert_allclose(g(*big), ref, rtol=1e-12, atol=1e-12)
    out = np.empty_like(ref)
    assert g(*big, out=out) is out
    np.testing.assert_allclose(out, ref, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("target", ["cpu", "parallel"])
def test_out_overlapping_the_input_by_a_row_is_as_numpy(target):
    """out=a[1:] with input a[:-1]: NumPy copies overlapping operands first; threads splitting the
    rows must not read rows another thread has already written (it did, now and then)."""
    g = ug.gufunc("x[i] * 2 - sum(x[j], j)", layout="(n)->(n)", target=target)
    for seed in range(5):
        a = np.random.default_rng(seed).normal(size=(40_000, 8))
        want = a[:-1] * 2 - a[:-1].sum(axis=1, keepdims=True)
        g(a[:-1], out=a[1:])
        np.testing.assert_allclose(a[1:], want, rtol=1e-12, atol=1e-12)


# ---- signatures, objects, pickling ------------------------------------------------------------------
def test_explicit_signatures_make_one_numpy_gufunc():
    g = ug.gufunc("sum(x[i]*y[i], i)", signatures=["float32(float32, float32)", "float64(float64, float64)"])
    assert isinstance(g.ufunc, np.ufunc) and g.ufunc.signature == "(n),(n)->()"
    assert g.signatures == ["float32(float32, float32)", "float64(float64, float64)"]
    assert g.types == ["ff->f", "dd->d"]
    x = np.arange(4, dtype=np.float32)
    assert g(x, x).dtype == np.float32 and g(x, x) == 14


def test_numba_style_signature():
    g = ug.gufunc("sqrt(sum(x[i]**2, i))", signatures="void(float64[:], float64[:])")
    assert g.signatures == ["float64(float64)"]
    assert g(np.array([3.0, 4.0])) == 5.0
    with pytest.raises(ug.SignatureError):
        ug.gufunc("sqrt(sum(x[i]**2, i))", signatures="void(float64[:], float64[:], float64[:])")


def test_lazy_compiles_per_dtype():
    g = ug.gufunc("sum(x[i], i) * 2", layout="(k)->()")
    assert g.signatures == []
    g(np.ones(3, np.float32))
    g(np.ones(3))
    assert g.signatures == ["float32(float32)", "float64(float64)"]


def test_object_attributes():
    g = ug.gufunc("a*sum(A[i,j]*x[j], j)", name="scaled_matvec")
    assert g.args == ("A", "a", "x") and g.nin == 3 and g.nout == 1
    assert g.layout == "(n,m),(),(m)->(n)"
    assert isinstance(g.expr, sp.Expr)
    assert g.target == "cpu" and g.__name__ == "scaled_matvec"
    assert "for j in" in g.source and "def kernel(A, a, x, _out0)" in g.source
    assert "scaled_matvec" in repr(g) and "(n,m),(),(m)->(n)" in repr(g)
    latex = g._repr_latex_()
    assert latex.startswith("$") and r"\sum_{j}" in latex and "{A}_{i,j}" in latex
    assert "<code>" in g._repr_html_()


def test_args_order_and_unused_argument():
    g = ug.gufunc("sum(x[i], i) * s", args=("s", "x", "unused"))
    assert g.layout == "(),(n),()->()"
    assert g(2.0, np.ones(3), 7.0) == 6.0


@pytest.mark.parametrize("target", ["cpu", "parallel"])
def test_pickle_round_trip(target):
    g = ug.gufunc(["x[i] / sum(x[j], j)", "sum(x[j], j)"], layout="(q)->(q),()", target=target,
                  signatures="(float64)")
    h = pickle.loads(pickle.dumps(g))
    assert h.layout == g.layout and h.args == g.args and h.target == target and h.signatures == g.signatures
    x = np.array([1.0, 3.0])
    for a, b in zip(h(x), (x / 4, 4.0), strict=True):
        np.testing.assert_allclose(a, b)


# ---- SymPy input and guvectorize ----------------------------------------------------------------------
def test_sympy_indexed_and_sum():
    x, y = sp.IndexedBase("x"), sp.IndexedBase("y")
    i = sp.Idx("i", sp.Symbol("n"))
    g = ug.gufunc(sp.Sum(x[i] * y[i], i))
    assert g.layout == "(n),(n)->()"
    k, N = sp.Symbol("k"), sp.Symbol("N")
    norm = ug.gufunc(sp.sqrt(sp.Sum(x[k] ** 2, (k, 0, N - 1))))
    assert norm.layout == "(N)->()"
    assert norm(np.array([3.0, 4.0])) == 5.0
    p = ug.gufunc(sp.Product(x[k], (k, 0, 2)))
    assert p.layout == "(3)->()" and p(np.array([2.0, 3.0, 4.0])) == 24.0


def test_sympy_input_is_checked_against_the_allow_list():
    x, i = sp.IndexedBase("x"), sp.Symbol("i")
    with pytest.raises(ug.FormulaError, match="Integral"):
        ug.gufunc(sp.Integral(x[i], sp.Symbol("t")))
    with pytest.raises(ug.FormulaError, match="whole dimension"):
        ug.gufunc(sp.Sum(x[i], (i, 1, sp.Symbol("n") - 1)))
    with pytest.raises(ug.FormulaError, match="subscript"):
        ug.gufunc(x[2 * i])


def test_guvectorize_traces_index_notation(target):
    i = ug.Idx("i")

    @ug.guvectorize(layout="(n)->()", target=target)
    def norm(x):
        """Euclidean norm."""
        return sp.sqrt(reduce_sum(x[i] ** 2, i))

    assert isinstance(norm, ug.GUFunc) and norm.__name__ == "norm" and norm.__doc__ == "Euclidean norm."
    x = np.random.default_rng(4).normal(size=(3, 5))
    np.testing.assert_allclose(norm(x), np.linalg.norm(x, axis=-1), rtol=1e-12)


def test_guvectorize_with_ug_functions_as_in_the_api():
    i = ug.Idx("i")

    @ug.guvectorize(layout="(n)->()")
    def norm(x):
        return ug.sqrt(ug.sum(x[i] ** 2, i))

    @ug.guvectorize
    def softmax(x, t):
        m = ug.max(x[i] / t, i)
        return ug.exp(x[i] / t - m) / ug.sum(ug.exp(x[i] / t - m), i)

    @ug.guvectorize
    def relu_then_max(x):
        return ug.max(ug.max(x[i], 0), i)  # elementwise max(a, b) inside a reduction max(e, i)

    x = np.random.default_rng(6).normal(size=(3, 5))
    np.testing.assert_allclose(norm(x), np.linalg.norm(x, axis=-1), rtol=1e-12)
    assert softmax.layout == "(n),()->(n)"
    np.testing.assert_allclose(softmax(x, 2.0), _softmax(x / 2.0), rtol=1e-12)
    np.testing.assert_array_equal(relu_then_max(x), np.maximum(x, 0).max(axis=-1))


def test_guvectorize_scalar_parameter_and_bare_decorator():
    i = ug.Idx("i")

    @ug.guvectorize
    def scale(x, a):
        return a * x[i] / reduce_max(x[i], i)

    assert scale.layout == "(n),()->(n)" and scale.args == ("x", "a")
    np.testing.assert_allclose(scale(np.array([1.0, 2.0, 4.0]), 2.0), [0.5, 1.0, 2.0])


def test_guvectorize_control_flow_names_the_line():
    i = ug.Idx("i")

    def bad(x):
        if x[i] > 0:  # this line is named in the error
            return x[i]
        return -x[i]

    line = bad.__code__.co_firstlineno + 1
    with pytest.raises(ug.FormulaError, match=f"test_gufunc.py:{line}:(.|\n)*where"):
        ug.guvectorize(layout="(n)->(n)")(bad)


def test_idx_is_public():
    i = ug.Idx("i")
    assert isinstance(i, Idx) and i.name == "i" and pickle.loads(pickle.dumps(i)) == i
    with pytest.raises(ug.FormulaError):
        ug.Idx("not a name")


# ---- errors -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("formula,layout,names", [
    ("sum(x[i], j)", None, "'j' is not an index"),
    ("prod(x[i], k)", None, "'k' is not an index"),
    ("sum(x[i]*y[i], i)", "(n),(m)->()", "index i used inconsistently"),
    ("sum(sum(A[i,j]*B[j,i], j), i)", "(n,m),(n,m)->()", "index i used inconsistently"),
    ("x[i] + y[i]", "(3),(4)->(3)", "index i used inconsistently"),
    ("x[i] + x[i, j]", None, "'x' has 2 subscript"),
    ("i[i]", None, "'i' is used both as an index and as an array"),
    ("x + x[i]", None, "'x' is used both as a scalar and as an array"),
])
def test_inconsistent_use_names_the_culprit(formula, layout, names):
    with pytest.raises(ug.FormulaError, match=names):
        ug.gufunc(formula, layout=layout)


def test_reduction_over_unknown_index_from_sympy_names_it():
    x, i, j = sp.IndexedBase("x"), Idx("i"), Idx("j")
    with pytest.raises(ug.FormulaError, match="unknown index j"):
        ug.gufunc(reduce_sum(x[i], j) + x[i])


@pytest.mark.parametrize("formula,layout,match", [
    ("sum(x[i], i)", "(n)->(n)", "output 0 has 1 core dimension"),
    ("sum(x[i], i)", "(n),()->()", "2 input"),
    ("sum(A[i,j], j)", "(n)->(n)", "A is indexed with 2 subscript"),
    ("x[i]*y[j]", "(n),(m)->(m,p)", "core dimension p"),
    ("sum(x[i], i)", "(n)->", "no outputs"),
    ("sum(x[i], i)", "(n->()", "does not parse"),
    ("sum(x[i], i)", "(n)->(1.5)", "not a dimension"),
])
def test_bad_layouts(formula, layout, match):
    with pytest.raises(ug.FormulaError, match=match):
        ug.gufunc(formula, layout=layout)


@pytest.mark.parametrize("formula,col", [
    ("x[2*i]", 2), ("x[0]", 2), ("x[i+j]", 2), ("x[i.real]", 2), ("x[i:j]", 2),
])
def test_bad_subscripts_point_at_them(formula, col):
    with pytest.raises(ug.FormulaError, match="subscript") as err:
        ug.gufunc(formula)
    assert err.value.col == col


@pytest.mark.parametrize("formula,match", [
    ("sum(x[i])", "needs the index"),
    ("sum(x[i], 1)", "must be an index name"),
    ("sum(x[i] > 0, i)", "where"),
    ("(x+y)[i]", "only an input can be indexed"),
    ("x[i].real", "attribute"),
    ("__import__('os')[i]", "only an input"),
])
def test_other_formula_errors(formula, match):
    with pytest.raises(ug.FormulaError, match=match):
        ug.gufunc(formula)


def test_subscripts_still_rejected_in_ufunc():
    with pytest.raises(ug.FormulaError, match="gufunc"):
        ug.ufunc("x[i]")


def test_two_value_max_stays_elementwise():
    g = ug.gufunc("max(x[i], y)")  # y is not an index: elementwise Max
    assert g.layout == "(n),()->(n)"
    np.testing.assert_array_equal(g(np.array([1.0, 5.0]), 2.0), [2.0, 5.0])
    g = ug.gufunc("Max(x[i], i)")  # i is an index: a reduction
    assert g.layout == "(n)->()" and g(np.array([1.0, 5.0, 2.0])) == 5.0


def test_wrong_argument_count():
    with pytest.raises(TypeError, match="takes 2 argument"):
        ug.gufunc("sum(x[i]*y[i], i)")(np.ones(3))


def test_float16_input_computes_in_float32_on_the_host():
    norm = ug.gufunc("sqrt(sum(x[i]**2, i))")
    x = np.arange(12, dtype=np.float16).reshape(3, 4)
    got = norm(x)
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, np.linalg.norm(x.astype(np.float32), axis=1), rtol=1e-6)
