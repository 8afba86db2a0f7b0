"""The disk cache for gufunc loops, across processes: warm loads compile nothing, damage is replaced.

A cold process fills a cache folder; a second process runs scenarios on copies of it, one phase
each (as in ``test_diskcache.py``).  "Loaded without compiling" is proved with two counters read
in the subprocess, never with a timing: ufuncgen's own (``cache_info()["compiles"]``) and Numba's,
by counting calls of ``numba.core.compiler.compile_extra`` (typing and lowering a kernel) and of
``CPUCodeLibrary._optimize_final_module`` (LLVM optimisation of any library, so also a wrapper).
Every result is checked against NumPy / ``math`` references computed in the test process.
"""
from __future__ import annotations

import inspect
import math

import numpy as np
import pytest
from cache_processes import cache_warnings, copies, damage_entries, run_phases, sound_entries

from ufuncgen import diskcache

_gamma = np.vectorize(math.gamma, otypes=[float])
_erf = np.vectorize(math.erf, otypes=[float])


def _softmax(x):
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def _cross(a, b):
    return np.cross(a, b)


# label -> (formula, layout, signatures, full input shapes, value range, reference over the inputs)
FORMULAS = {
    "norm": ("sqrt(sum(x[i]**2, i))", "(n)->()", ["float64(float64)", "float32(float32)"],
             [(4, 7)], (-2.5, 3.0), lambda x: np.linalg.norm(x, axis=-1)),
    "matvec": ("sum(A[i,j]*x[j], j)", "(m,n),(n)->(m)", ["float64(float64, float64)"],
               [(4, 3, 5), (5,)], (-2.0, 2.5), lambda A, x: np.einsum("...ij,...j->...i", A, x)),
    "softmax": ("exp(x[i] - max(x[j], j)) / sum(exp(x[k] - max(x[j], j)), k)", "(n)->(n)", ["float32(float32)"],
                [(3, 6)], (-4.0, 5.0), _softmax),
    "horner": ("sum(c[k]*x**k, k)", "(n),()->()", ["float64(float64, float64)"], [(6,), (5,)], (-1.5, 1.5),
               lambda c, x: np.polynomial.polynomial.polyval(x, c)),
    # the same formula with a fixed and with a named size: two layouts, two loops, two entries
    "cross (3)": ("a[i+1]*b[i+2] - a[i+2]*b[i+1]", "(3),(3)->(3)", ["float64(float64, float64)"],
                  [(4, 3), (4, 3)], (-1.0, 2.0), _cross),
    "cross (n)": ("a[i+1]*b[i+2] - a[i+2]*b[i+1]", "(n),(n)->(n)", ["float64(float64, float64)"],
                  [(4, 3), (4, 3)], (-1.0, 2.0), _cross),
    # Numba's C helpers (numba_gamma, ...) resolved after a load
    "gamma+erf": ("sum(gamma(x[i]) + erf(x[i]), i)", "(n)->()", ["float64(float64)"], [(3, 4)], (0.3, 4.0),
                  lambda x: (_gamma(x) + _erf(x)).sum(axis=-1)),
    "two outputs": (["sum(x[i], i)", "max(x[i], i)"], "(n)->(),()", ["(float64, float64)(float64)"], [(5, 4)],
                    (-3.0, 3.0), lambda x: np.stack([x.sum(axis=-1), x.max(axis=-1)])),
}
N_LOOPS = sum(len(v[2]) for v in FORMULAS.values())


def inputs(shapes: list, lo: float, hi: float, dtype: str) -> list:
    """Deterministic inputs whose last axis is strided (every other element of a wider array)."""
    out = []
    for k, shape in enumerate(shapes):
        wide = tuple(shape[:-1]) + (2 * shape[-1],)
        base = np.linspace(lo + 0.1 * k, hi - 0.05 * k, int(np.prod(wide))).reshape(wide)
        out.append(base.astype(np.dtype(dtype))[..., ::2])
    return out


DRIVER = r"""
import json, os, sys, warnings
import numpy as np
import ufuncgen as ug
ug.gufunc; import numba, sympy
from numba.core import codegen, compiler
from ufuncgen import diskcache
VERSION = ug.__version__
COUNTS = {"compile_extra": 0, "llvm_optimise": 0}

def counting(owner, attr, name):
    original = getattr(owner, attr)
    def wrapper(*args, **kwargs):
        COUNTS[name] += 1
        return original(*args, **kwargs)
    setattr(owner, attr, wrapper)

counting(compiler, "compile_extra", "compile_extra")
counting(codegen.CPUCodeLibrary, "_optimize_final_module", "llvm_optimise")
""" + inspect.getsource(inputs) + r"""

def phase(p):
    os.environ["UFUNCGEN_CACHE_DIR"] = p["dir"]
    os.environ.pop("UFUNCGEN_DISABLE_CACHE", None)
    os.environ.update(p.get("env", {}))
    ug.__version__ = p.get("version") or VERSION
    ug.clear_cache(memory=True, disk=False)
    diskcache.STATS.clear()
    before = dict(COUNTS, ufuncgen=ug.cache_info()["compiles"])
    results, sources = {}, {}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for label, (formula, layout, sigs, shapes, (lo, hi)) in p["formulas"].items():
            g = ug.gufunc(formula, layout, signatures=sigs, **p.get("options", {}))
            per_sig = []
            for sig in sigs:
                dtype = sig[sig.rindex("(") + 1:].split(",")[0].strip(" )")
                per_sig.append(np.asarray(g(*inputs(shapes, lo, hi, dtype))).tolist())
            results[label] = per_sig
            sources[label] = g.source
    info = ug.cache_info()
    counts = dict(COUNTS, ufuncgen=info["compiles"])
    return {"results": results, "sources": sources, "info": info,
            "compiles": {k: counts[k] - before[k] for k in counts},
            "warnings": [[w.category.__name__, str(w.message)] for w in caught]}

print(json.dumps({p["name"]: phase(p) for p in json.loads(sys.argv[1])}))
"""


def phase(name: str, cache_dir, formulas: dict, **kw) -> dict:
    return {"name": name, "dir": str(cache_dir), "formulas": {k: v[:5] for k, v in formulas.items()},
            "expected": formulas, **kw}


def check_results(results: dict, formulas: dict) -> None:
    assert set(results) == set(formulas)
    for label, per_sig in results.items():
        _formula, _layout, sigs, shapes, (lo, hi), ref = formulas[label]
        assert len(per_sig) == len(sigs)
        for sig, got in zip(sigs, per_sig, strict=True):
            dtype = sig[sig.rindex("(") + 1:].split(",")[0].strip(" )")
            want = ref(*[a.astype(np.float64) for a in inputs(shapes, lo, hi, dtype)])
            rtol = 2e-5 if dtype == "float32" else 1e-12
            np.testing.assert_allclose(np.asarray(got, dtype=np.float64), want, rtol=rtol, atol=1e-12,
                                       err_msg=f"{label} {sig}")


def run(*phases) -> dict:
    """Run the phases in one fresh process; phase name -> its output (results already checked)."""
    return run_phases(DRIVER, list(phases), check_results)


DAMAGE = ["truncated", "garbage", "format", "foreign payload"]
ONE = {k: FORMULAS[k] for k in ["matvec"]}
TWO = {k: FORMULAS[k] for k in ["horner", "cross (3)"]}


@pytest.fixture(scope="module")
def cold(tmp_path_factory):
    path = tmp_path_factory.mktemp("gucold")
    return path, run(phase("cold", path, FORMULAS))["cold"]


@pytest.fixture(scope="module")
def scenarios(cold, tmp_path_factory):
    base = tmp_path_factory.mktemp("guscenarios")
    warm, damaged, version, switches = copies(cold[0], base, ("warm", "damaged", "version", "switches"))
    damage = damage_entries(damaged, DAMAGE)
    phases = [
        phase("warm", warm, FORMULAS),  # first: nothing is in this process yet
        phase("warm parallel", warm, TWO, options={"target": "parallel"}),
        phase("damaged", damaged, FORMULAS),
        phase("damaged-reload", damaged, FORMULAS),
        phase("version", version, ONE, version="999.0"),
        phase("cache=False", switches, TWO, options={"cache": False}),
        phase("env var", switches, TWO, env={diskcache.ENV_DISABLE: "1"}),
    ]
    return {"out": run(*phases), "dirs": {"damaged": damaged, "version": version, "switches": switches},
            "damage": damage}


def test_cold_process_compiles_and_stores_every_loop(cold):
    path, out = cold
    assert out["compiles"]["ufuncgen"] == out["compiles"]["compile_extra"] == N_LOOPS
    assert out["compiles"]["llvm_optimise"] >= N_LOOPS  # the counters see compiles: their 0 when warm means none
    assert out["info"]["disk"]["stores"] == N_LOOPS and out["info"]["disk"]["hits"] == 0
    assert cache_warnings(out) == []
    entries = sound_entries(path)
    assert len(entries) == N_LOOPS and all(entries.values())  # one entry per loop: layouts do not share


def test_warm_process_loads_without_any_numba_compile(cold, scenarios):
    out = scenarios["out"]["warm"]
    assert out["compiles"] == {"ufuncgen": 0, "compile_extra": 0, "llvm_optimise": 0}
    assert out["info"]["disk"]["hits"] == N_LOOPS and out["info"]["disk"]["misses"] == 0
    assert cache_warnings(out) == []
    assert out["results"] == cold[1]["results"]  # the same machine code: bit for bit
    assert out["sources"] == cold[1]["sources"]  # GUFunc.source comes back from the entry
    assert "# layout: (3),(3)->(3)" in out["sources"]["cross (3)"]
    assert "# layout: (n),(n)->(n)" in out["sources"]["cross (n)"]


def test_parallel_target_loads_the_same_loops(scenarios):
    out = scenarios["out"]["warm parallel"]
    n = sum(len(v[2]) for v in TWO.values())
    assert out["compiles"]["compile_extra"] == 0 and out["info"]["disk"]["hits"] == n


def test_damaged_entries_are_replaced_with_a_warning(scenarios):
    out, damage = scenarios["out"]["damaged"], scenarios["damage"]
    msgs = cache_warnings(out)
    assert len(msgs) == len(damage) == len(DAMAGE)
    for name, reason in damage.items():
        assert any(name in m and reason in m for m in msgs), (name, reason, msgs)
    assert out["compiles"]["ufuncgen"] == out["compiles"]["compile_extra"] == len(damage)
    assert out["info"]["disk"]["replaced"] == len(damage)
    assert out["info"]["disk"]["hits"] == N_LOOPS - len(damage)
    entries = sound_entries(scenarios["dirs"]["damaged"])
    assert len(entries) == N_LOOPS and all(entries.values())
    reload = scenarios["out"]["damaged-reload"]
    assert reload["compiles"]["compile_extra"] == 0 and cache_warnings(reload) == []
    assert reload["results"] == out["results"]


def test_version_change_invalidates(scenarios):
    out = scenarios["out"]["version"]
    assert out["compiles"]["ufuncgen"] == 1 and out["info"]["disk"]["hits"] == 0
    assert len(sound_entries(scenarios["dirs"]["version"])) == N_LOOPS + 1


def test_cache_false_and_env_var_skip_the_disk(scenarios):
    n = sum(len(v[2]) for v in TWO.values())
    for name in ("cache=False", "env var"):
        out = scenarios["out"][name]
        assert out["compiles"]["ufuncgen"] == out["compiles"]["compile_extra"] == n, name
        assert out["info"]["disk"]["hits"] == 0 and out["info"]["disk"]["stores"] == 0, name
    assert scenarios["out"]["env var"]["info"]["disk"]["enabled"] is False
    assert len(sound_entries(scenarios["dirs"]["switches"])) == N_LOOPS  # nothing added


# ---- in process: the key -------------------------------------------------------------------------
def _key(formula, layout, dtypes=("float64", "float64"), **kw):
    import ufuncgen as ug
    from ufuncgen.gubuild import guloop_key
    g = ug.gufunc(formula, layout, **kw)
    req = g._request(tuple(np.dtype(d) for d in dtypes), None)
    return guloop_key(req, req.key())


def test_key_holds_the_layout_dtypes_and_options(monkeypatch):
    cross = "a[i+1]*b[i+2] - a[i+2]*b[i+1]"
    base = _key(cross, "(3),(3)->(3)")
    assert base == _key(cross, "(3),(3)->(3)")
    assert len({base, _key(cross, "(n),(n)->(n)"), _key(cross, "(3),(3)->(3)", ("float32", "float32")),
                _key(cross, "(3),(3)->(3)", fastmath=True), _key(cross, "(3),(3)->(3)", args=["b", "a"])}) == 5
    # the cache switch is not part of the key: the loop is the same
    assert _key(cross, "(3),(3)->(3)", cache=False) == base
    from numba.core import config
    monkeypatch.setattr(config, "BOUNDSCHECK", True)  # bounds-checked kernels are other machine code
    assert _key(cross, "(3),(3)->(3)") != base


# ---- in process: what the loop needs from the compiling process -----------------------------------
@pytest.mark.parametrize("label", sorted(FORMULAS))
def test_kernel_never_returns_an_error_status_and_the_loop_uses_no_python(label):
    """The loop ignores the kernel's status (backends/gucpu.py): pin that the kernels cannot raise,
    and that the stored loop calls nothing of Python's or of Numba's environment."""
    import re

    from numba.core import config

    import ufuncgen as ug
    from ufuncgen import gubuild
    if config.BOUNDSCHECK:
        pytest.skip("NUMBA_BOUNDSCHECK=1 adds IndexError paths (never taken: subscripts are in bounds)")
    formula, layout, sigs = FORMULAS[label][:3]
    g = ug.gufunc(formula, layout)
    for sig in sigs:
        dtype = sig[sig.rindex("(") + 1:].split(",")[0].strip(" )")
        loop = gubuild._compile(g._request((np.dtype(dtype),) * g.nin, None))  # fresh: with its IR
        library, _kernel_library, cres = loop.keepalive[:3]
        kernel_ir = cres.library.get_llvm_str()
        name = re.escape(cres.fndesc.llvm_func_name)
        fn = re.search(rf'^define [^\n]*@"?{name}"?\(.*?^}}$', kernel_ir, re.S | re.M).group(0)
        assert set(re.findall(r"ret i32 (\S+)", fn)) == {"0"}, (label, sig)
        loop_ir = library.get_llvm_str()
        assert not re.search(r"@\"?(Py|_Py|numba_unpickle|NRT_)", loop_ir), (label, sig)
        env = [line for line in loop_ir.splitlines() if "NumbaEnv" in line and not line.startswith("@")]
        assert env == [], (label, sig)  # the environment global is defined (zero-filled), never read
