"""ug.load: named formulas from TOML/YAML files, checked against NumPy; all problems reported at once."""
import importlib
import pathlib
import textwrap

import numpy as np
import pytest

import ufuncgen as ug
from ufuncgen.cacheapi import cache_info
from ufuncgen.config import ConfigError, Formulas, entries

EXAMPLE = pathlib.Path(__file__).resolve().parent.parent / "examples" / "formulas.toml"
RNG = np.random.default_rng(7)


def _has_module(name):
    try:
        importlib.import_module(name)
    except ImportError:
        return False
    return True


HAS_GUFUNC = _has_module("ufuncgen.generalized")
needs_gufunc = pytest.mark.skipif(not HAS_GUFUNC, reason="layout entries need ufuncgen.generalized "
                                                         "(the gufunc branch), not merged yet")
needs_yaml = pytest.mark.skipif(not _has_module("yaml"), reason="YAML needs PyYAML (extra [yaml])")


def write(tmp_path, text, name="f.toml"):
    path = tmp_path / name
    path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
    return path


def line_of(path, needle, occurrence=1):
    lines = path.read_text().splitlines()
    hits = [i + 1 for i, line in enumerate(lines) if needle in line]
    return hits[occurrence - 1]


# ---- the documented example -------------------------------------------------------------------
@pytest.fixture(scope="module")
def example():
    return ug.load(EXAMPLE)


def test_example_names_in_file_order(example):
    assert list(example) == ["kinetic", "gaussian", "relu", "polar", "norm"]
    assert len(example) == 5
    assert "kinetic" in example and "nothing" not in example


def test_example_kinetic(example):
    m, v = RNG.uniform(0.1, 5, 20), RNG.uniform(-3, 3, 20)
    np.testing.assert_allclose(example.kinetic(m, v), 0.5 * m * v ** 2, rtol=1e-15)
    assert example["kinetic"] is example.kinetic
    assert example.kinetic.args == ("m", "v")
    assert example.kinetic.__doc__.startswith("Kinetic energy")


@pytest.mark.parametrize("dtype,rtol", [(np.float64, 1e-14), (np.float32, 1e-5)])
def test_example_gaussian_signatures(example, dtype, rtol):
    x, mu, s = (RNG.uniform(-2, 2, 30).astype(dtype), dtype(0.3), RNG.uniform(0.5, 2, 30).astype(dtype))
    out = example.gaussian(x, np.full_like(x, mu), s)
    assert out.dtype == dtype
    expected = np.exp(-(x - mu) ** 2 / (2 * s ** 2)) / (s * np.sqrt(2 * np.pi))
    np.testing.assert_allclose(out, expected, rtol=rtol)
    assert set(example.gaussian.signatures) == {"float64(float64, float64, float64)",
                                                "float32(float32, float32, float32)"}


def test_example_relu_and_polar(example):
    x, y = RNG.normal(size=25), RNG.normal(size=25)
    np.testing.assert_array_equal(example.relu(x), np.where(x > 0, x, 0.0))
    r, theta = example.polar(x, y)
    assert example.polar.target == "parallel"
    np.testing.assert_allclose(r, np.hypot(x, y), rtol=1e-15)
    np.testing.assert_allclose(theta, np.arctan2(y, x), rtol=1e-15)


@needs_gufunc
def test_example_norm_is_a_gufunc(example):
    a = RNG.normal(size=(6, 4))
    np.testing.assert_allclose(example.norm(a), np.linalg.norm(a, axis=-1), rtol=1e-13)


# ---- the namespace ----------------------------------------------------------------------------
SIMPLE = """
    [kinetic]
    expr = "0.5 * m * v**2"
    args = ["m", "v"]
    doc = "Kinetic energy."

    [shifted]
    expr = "x - 1.25"
"""


def test_namespace_is_read_only(tmp_path):
    fs = ug.load(write(tmp_path, SIMPLE))
    assert isinstance(fs, Formulas)
    with pytest.raises(AttributeError, match="read-only"):
        fs.kinetic = None
    with pytest.raises(AttributeError, match="read-only"):
        del fs.kinetic
    with pytest.raises(TypeError):
        fs["kinetic"] = None


def test_unknown_name_suggests(tmp_path):
    fs = ug.load(write(tmp_path, SIMPLE))
    with pytest.raises(AttributeError, match="did you mean 'kinetic'"):
        _ = fs.kinetc
    with pytest.raises(KeyError, match="its formulas: kinetic, shifted"):
        fs["nothing"]


def test_repr_and_dir(tmp_path):
    fs = ug.load(write(tmp_path, SIMPLE))
    text = repr(fs)
    assert "f.toml" in text and "2 formulas" in text
    assert "kinetic(m, v) = 0.5 * m * v**2" in text and "Kinetic energy." in text
    assert "shifted(x) = x - 1.25" in text
    assert {"kinetic", "shifted"} <= set(dir(fs))


def test_lazy_by_default_and_eager_compiles(tmp_path):
    text = """
        [a]
        expr = "x * 3.5 - 0.125"
        signatures = "float64(float64)"
        [b]
        expr = "x * 7.5 + 0.25"
    """
    path = write(tmp_path, text)
    before = cache_info()["memory"]["compiles"]
    lazy = ug.load(path)
    assert cache_info()["memory"]["compiles"] == before        # nothing compiled at load
    x = RNG.normal(size=9)
    np.testing.assert_allclose(lazy.a(x), x * 3.5 - 0.125, rtol=1e-15)
    eager = ug.load(path, eager=True)
    assert eager.a.signatures == ["float64(float64)"]
    assert eager.b.signatures == ["float64(float64)"]           # lazy entries: the float64 loop
    np.testing.assert_allclose(eager.b(x), x * 7.5 + 0.25, rtol=1e-15)


def test_shorthand_and_options(tmp_path):
    text = """
        short = "sin(x) + 1"
        [fast]
        expr = "x * y"
        fastmath = true
        cse = false
        cache = false
    """
    fs = ug.load(write(tmp_path, text))
    x = RNG.normal(size=11)
    np.testing.assert_allclose(fs.short(x), np.sin(x) + 1, rtol=1e-15)
    np.testing.assert_allclose(fs.fast(x, x), x * x, rtol=1e-15)
    assert fs.fast.options["fastmath"] is True and fs.fast.options["cse"] is False
    assert entries(fs)["short"].expr == "sin(x) + 1"


# ---- problems, all reported together ------------------------------------------------------
BAD = """
    [kinetic]
    expr = "0.5 * m * v**2"

    [gauss]
    exrp = "exp(-x**2)"

    [kinetic]
    expr = "m * v"

    [typo]
    expr = "sinn(x) + 1"

    [sig]
    expr = "x + y"
    signatures = "float64(float64)"

    [types]
    expr = "x"
    target = "gpu"
    fastmath = "yes"
    args = ["x", 3]

    [missing]
    expr = "a * x"
    args = ["x"]
"""


def test_all_problems_in_one_error(tmp_path):
    path = write(tmp_path, BAD)
    with pytest.raises(ConfigError) as info:
        ug.load(path)
    err = info.value
    assert isinstance(err, ug.FormulaError)
    found = {(p.entry, p.line): p.message for p in err.problems}
    expected = {
        ("gauss", line_of(path, "exrp")): "unknown key 'exrp'; did you mean 'expr'?",
        ("gauss", line_of(path, "[gauss]")): "has no expr",
        ("kinetic", line_of(path, "[kinetic]", 2)): f"defined twice (first at line {line_of(path, '[kinetic]')})",
        ("typo", line_of(path, "sinn")): "unknown function 'sinn'; did you mean 'sin'",
        ("sig", line_of(path, "float64(float64)")): "has 1 input(s); the formula takes 2",
        ("types", line_of(path, "gpu")): "target 'gpu' is not known; did you mean 'cpu'?",
        ("types", line_of(path, '"yes"')): "fastmath must be true or false, not a string",
        ("types", line_of(path, '["x", 3]')): "args must be a list of argument names",
        ("missing", line_of(path, 'expr = "a * x"')): "uses a, which args=['x'] does not list",
    }
    for key, text in expected.items():
        assert key in found, (key, sorted(found))
        assert text in found[key]
    assert len(err.problems) == len(expected)
    message = str(err)
    assert message.startswith(f"{len(expected)} problems in {path}:")
    assert f"{path}:{line_of(path, 'sinn')}: [typo] expr: unknown function 'sinn'" in message
    assert "sinn(x) + 1\n" in message and "^" in message          # the caret under the bad name


def test_toml_syntax_error_has_a_line(tmp_path):
    path = write(tmp_path, """
        [a]
        expr = "x + 1"
        args = ["x"
        [b]
    """)
    with pytest.raises(ConfigError, match="is not valid TOML") as info:
        ug.load(path)
    assert info.value.problems[0].line is not None


@pytest.mark.parametrize("text,match", [
    ("x = 3\n", "must be a table"),
    ("[_private]\nexpr = 'x'\n", "not a usable name"),
    ("['two words']\nexpr = 'x'\n", "not a usable name"),
    ("[a]\nexpr = []\n", "expr must be a formula string, or a list of them"),
    ("[a]\nexpr = 'x'\nsignatures = 'float64'\n", "signatures"),
    ("", "defines no formulas"),
    ("[a]\nexpr = 'x'\n[a.options]\nfast = true\n", "unknown key 'options'"),
    ("[[a]]\nexpr = 'x'\n[[a]]\nexpr = 'y'\n", "must be a table"),
])
def test_single_problems(tmp_path, text, match):
    with pytest.raises(ConfigError, match=match):
        ug.load(write(tmp_path, text))


def test_unknown_suffix_and_missing_file(tmp_path):
    with pytest.raises(ValueError, match="suffix"):
        ug.load(write(tmp_path, "{}", name="f.json"))
    with pytest.raises(FileNotFoundError):
        ug.load(tmp_path / "absent.toml")


def test_eager_reports_every_compile_failure(tmp_path):
    text = """
        [good]
        expr = "x + 1"
        [bad1]
        expr = "erf(x)"
        signatures = "complex128(complex128)"
        [bad2]
        expr = "floor(x)"
        signatures = "complex128(complex128)"
    """
    path = write(tmp_path, text)
    fs = ug.load(path)                                   # lazy: checked, not compiled
    with pytest.raises(TypeError):
        _ = fs.bad1
    with pytest.raises(ConfigError) as info:
        ug.load(path, eager=True)
    assert [(p.entry, p.line) for p in info.value.problems] == [
        ("bad1", line_of(path, "[bad1]")), ("bad2", line_of(path, "[bad2]"))]
    assert all("does not compile" in p.message for p in info.value.problems)


def test_layout_entry(tmp_path):
    path = write(tmp_path, """
        [dot]
        expr = "sum(x[i] * y[i], i)"
        layout = "(n),(n)->()"
        args = ["x", "y"]
    """)
    fs = ug.load(path)
    assert entries(fs)["dot"].layout == "(n),(n)->()"
    if not HAS_GUFUNC:
        with pytest.raises(ug.FormulaError, match="no gufunc support"):
            _ = fs.dot
        pytest.skip("layout entries need ufuncgen.generalized (the gufunc branch), not merged yet")
    a, b = RNG.normal(size=(3, 5)), RNG.normal(size=(3, 5))
    np.testing.assert_allclose(fs.dot(a, b), np.einsum("ij,ij->i", a, b), rtol=1e-13)


@needs_gufunc
def test_layout_entry_formula_errors_are_reported(tmp_path):
    path = write(tmp_path, """
        [bad]
        expr = "sum(x[i], j)"
        layout = "(n)->()"
    """)
    with pytest.raises(ConfigError) as info:
        ug.load(path)
    assert info.value.problems[0].entry == "bad"
    assert info.value.problems[0].line == line_of(path, "expr")


# ---- YAML ------------------------------------------------------------------------------------
@needs_yaml
def test_yaml_file(tmp_path):
    path = write(tmp_path, """
        kinetic:
          expr: 0.5 * m * v**2
          args: [m, v]
          doc: Kinetic energy.
        short: cos(x) * 2
    """, name="f.yaml")
    fs = ug.load(path)
    m, v = RNG.uniform(0, 2, 8), RNG.normal(size=8)
    np.testing.assert_allclose(fs.kinetic(m, v), 0.5 * m * v ** 2, rtol=1e-15)
    np.testing.assert_allclose(fs.short(v), np.cos(v) * 2, rtol=1e-15)


@needs_yaml
def test_yaml_problems_with_lines(tmp_path):
    path = write(tmp_path, """
        kinetic:
          expr: 0.5 * m * v**2
        bad:
          expr: x +
          tagret: cpu
        kinetic:
          expr: m
    """, name="f.yml")
    with pytest.raises(ConfigError) as info:
        ug.load(path)
    found = {(p.entry, p.line): p.message for p in info.value.problems}
    assert "did you mean 'target'" in found[("bad", line_of(path, "tagret"))]
    assert "syntax error" in found[("bad", line_of(path, "x +"))]
    assert "defined twice (first at line 1)" in found[("kinetic", line_of(path, "kinetic:", 2))]
