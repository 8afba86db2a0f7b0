"""The disk cache: entry format and locking in-process; loading, races and damage across processes.

The cross-process tests run ufuncgen in subprocesses (``DRIVER``, run by ``cache_processes.py``),
each with its own cache directory, and prove "loaded without compiling" with ufuncgen's compile counter
(``cache_info()["compiles"]``), never with a timing.  Results are compared with NumPy / ``math``
references computed here, in the test process.
"""
from __future__ import annotations

import contextlib
import inspect
import math
import os
import shutil
import subprocess
import threading
import warnings
from pathlib import Path

import numpy as np
import pytest
from cache_processes import (
    cache_warnings,
    copies,
    corrupt,
    damage_entries,
    driver_command,
    driver_env,
    driver_outputs,
    run_phases,
    sound_entries,
)

from ufuncgen import diskcache
from ufuncgen.diskcache import CacheWarning, DiskCache

# ---- references -------------------------------------------------------------------------------
_gamma = np.vectorize(math.gamma, otypes=[float])
_erf = np.vectorize(math.erf, otypes=[float])

# label -> (formula, signatures, reference over the inputs in args order)
FORMULAS = {
    "sin(x)**2 + a*exp(-y)": ("sin(x)**2 + a*exp(-y)",
                              ["float64(float64, float64, float64)", "float32(float32, float32, float32)"],
                              lambda a, x, y: np.sin(x) ** 2 + a * np.exp(-y)),
    "gamma(x) + erf(x)": ("gamma(x) + erf(x)", ["float64(float64)"],  # Numba's C helpers, after a load
                          lambda x: _gamma(x) + _erf(x)),
    "x // y + x % y": ("x // y + x % y", ["int64(int64, int64)"], lambda x, y: x // y + x % y),
    "[x*y, x - y]": (["x*y", "x - y"], ["(float64, float64)(float64, float64)"],  # two outputs
                     lambda x, y: np.stack([x * y, x - y])),
}
NEW = {"cos(x) * y + 3": ("cos(x) * y + 3", ["float64(float64, float64)"], lambda x, y: np.cos(x) * y + 3),
       "where(x > 1, log(x), -x)": ("where(x > 1, log(x), -x)", ["float64(float64)"],
                                   lambda x: np.where(x > 1, np.log(x), -x))}


def inputs(dtype: str, nin: int) -> list:
    dt = np.dtype(dtype)
    if dt.kind in "iu":
        base = np.arange(1, 40, dtype=dt)
        return [base * (k + 3) + k for k in range(nin)]
    return [np.linspace(0.25 + 0.1 * k, 3.0 + k, 37).astype(dt) for k in range(nin)]


def _sig_inputs(sig: str) -> tuple:
    """(first input dtype, number of inputs) of a signature string."""
    args = sig[sig.rindex("(") + 1:].rstrip(")").split(",")
    return args[0].strip(), len(args)


def check_results(results: dict, formulas: dict) -> None:
    assert set(results) == set(formulas)
    for label, per_sig in results.items():
        _formula, sigs, ref = formulas[label]
        assert len(per_sig) == len(sigs)
        for sig, got in zip(sigs, per_sig, strict=True):
            dtype, nin = _sig_inputs(sig)
            want = ref(*[a.astype(np.float64) if np.dtype(dtype).kind == "f" else a for a in inputs(dtype, nin)])
            rtol = 1e-5 if dtype == "float32" else 1e-12
            np.testing.assert_allclose(np.asarray(got, dtype=np.float64), want, rtol=rtol, err_msg=f"{label} {sig}")


# ---- the subprocess driver ----------------------------------------------------------------------
# One process runs a list of phases; each phase points UFUNCGEN_CACHE_DIR at its own folder, clears
# the in-memory cache and the disk counters first, so it sees the disk as a fresh process would
# (the directory and the switches are read at each lookup).  Phases share one Numba start-up,
# which keeps this file fast; the first phase of a process is a truly fresh process.
DRIVER = r"""
import json, os, sys, time, warnings
import numpy as np
import ufuncgen as ug
ug.ufunc; import numba, sympy  # imports done before any barrier, so processes race on compiling
from ufuncgen import diskcache
VERSION = ug.__version__
""" + inspect.getsource(inputs) + r"""

def phase(p):
    os.environ["UFUNCGEN_CACHE_DIR"] = p["dir"]
    os.environ.pop("UFUNCGEN_DISABLE_CACHE", None)
    os.environ.update(p.get("env", {}))
    ug.__version__ = p.get("version") or VERSION
    ug.clear_cache(memory=True, disk=False)
    diskcache.STATS.clear()
    compiles = ug.cache_info()["compiles"]
    if p.get("barrier"):
        while not os.path.exists(p["barrier"]):
            time.sleep(0.001)
    results = {}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for label, (formula, sigs) in p["formulas"].items():
            f = ug.ufunc(formula, signatures=sigs, **p.get("options", {}))
            per_sig = []
            for sig in sigs:
                dtype = sig[sig.rindex("(") + 1:].split(",")[0].strip(" )")  # first input's dtype
                per_sig.append(np.asarray(f(*inputs(dtype, f.nin))).tolist())
            results[label] = per_sig
            assert "def kernel(" in f.source
            if p.get("inspect"):  # a loaded loop has no IR of its own: inspect_llvm compiles one
                irs = f.inspect_llvm()
                assert len(irs) == len(sigs) and all("define" in ir and "ufuncgen_loop_" in ir for ir in irs.values())
    info = ug.cache_info()
    info["compiles"] -= compiles
    return {"results": results, "info": info, "warnings": [[w.category.__name__, str(w.message)] for w in caught]}

print(json.dumps({p["name"]: phase(p) for p in json.loads(sys.argv[1])}))
"""


def phase(name: str, cache_dir, formulas: dict, **kw) -> dict:
    return {"name": name, "dir": str(cache_dir), "formulas": {k: v[:2] for k, v in formulas.items()},
            "expected": formulas, **kw}


def run(*phases) -> dict:
    """Run the phases in one fresh process; phase name -> {results, info, warnings}."""
    return run_phases(DRIVER, list(phases), check_results)


def n_loops(formulas: dict) -> int:
    return sum(len(v[1]) for v in formulas.values())


N_LOOPS = n_loops(FORMULAS)
ONE = {k: FORMULAS[k] for k in ["x // y + x % y"]}  # for phases that need one stored loop
OTHER_SPELLING = {"exp(-y)*a + sin(x)**2": FORMULAS["sin(x)**2 + a*exp(-y)"]}

DAMAGE = ["truncated", "header cut", "garbage", "empty", "bad magic", "checksum", "format", "foreign payload"]
# across processes, a few kinds (every kind is checked in process below): short file, random bytes,
# an entry of another cache format, and a sound entry whose payload is not a loop
DAMAGE_XPROC = ["truncated", "garbage", "format", "foreign payload"]


@contextlib.contextmanager
def read_only_folder(path: Path):
    """Make ``path`` unwritable: chmod for users, the immutable attribute for root."""
    if os.geteuid() != 0:
        os.chmod(path, 0o555)
        try:
            yield True
        finally:
            os.chmod(path, 0o755)
        return
    if shutil.which("chattr") is None or subprocess.run(["chattr", "+i", str(path)]).returncode != 0:
        yield False  # root without chattr: no way to make a folder read-only
        return
    try:
        yield True
    finally:
        subprocess.run(["chattr", "-i", str(path)], check=True)


@pytest.fixture(scope="module")
def cold(tmp_path_factory):
    """One cold process fills a cache: (folder, its output)."""
    path = tmp_path_factory.mktemp("cold")
    return path, run(phase("cold", path, FORMULAS))["cold"]


@pytest.fixture(scope="module")
def scenarios(cold, tmp_path_factory):
    """Copies of the cold cache, prepared and then used by one fresh process, a phase each."""
    base = tmp_path_factory.mktemp("scenarios")
    warm, damaged, version, switches, read_only = copies(cold[0], base,
                                                         ("warm", "damaged", "version", "switches", "read-only"))
    damage = damage_entries(damaged, DAMAGE_XPROC)
    blocker = base / "a-file"
    blocker.write_text("not a directory")
    new1 = dict(list(NEW.items())[:1])
    phases = [
        phase("warm", warm, {**FORMULAS, **OTHER_SPELLING}),  # first: nothing of these is in this process yet
        phase("inspect", version, ONE, inspect=True),
        phase("damaged", damaged, FORMULAS),
        phase("damaged-reload", damaged, FORMULAS),
        phase("version", version, ONE, version="999.0"),
        phase("cache=False", switches, new1, options={"cache": False}),
        phase("env var", switches, {**ONE, **new1}, env={diskcache.ENV_DISABLE: "1"}),
        phase("uncreatable", blocker / "cache", NEW),
        phase("read-only", read_only, {**ONE, **NEW}),
    ]
    with read_only_folder(read_only / f"v{diskcache.FORMAT}") as made_read_only:
        out = run(*phases)
    return {"out": out, "dirs": {"warm": warm, "damaged": damaged, "version": version, "switches": switches},
            "damage": damage, "read_only": made_read_only}


# ---- across processes -----------------------------------------------------------------------------
def test_cold_process_compiles_and_stores_every_loop(cold):
    path, out = cold
    assert out["info"]["compiles"] == N_LOOPS
    assert out["info"]["disk"]["stores"] == N_LOOPS and out["info"]["disk"]["hits"] == 0
    assert out["info"]["disk"]["entries"] == N_LOOPS
    assert cache_warnings(out) == []
    entries = sound_entries(path)
    assert len(entries) == N_LOOPS and all(entries.values())


def test_second_process_loads_without_compiling(cold, scenarios):
    out = scenarios["out"]["warm"]
    assert out["info"]["compiles"] == 0
    assert out["info"]["disk"]["hits"] == N_LOOPS and out["info"]["disk"]["misses"] == 0
    assert cache_warnings(out) == []
    assert {k: out["results"][k] for k in cold[1]["results"]} == cold[1]["results"]  # same code: bit for bit


def test_other_spelling_shares_the_entry(scenarios):
    # same canonical form: the second spelling is served from memory, from the first's entries
    assert scenarios["out"]["warm"]["info"]["memory"]["hits"] == n_loops(OTHER_SPELLING)


RACE = {k: FORMULAS[k] for k in ["sin(x)**2 + a*exp(-y)"]}  # two loops


def test_four_processes_compiling_at_once(tmp_path):
    cache_dir, barrier = tmp_path / "cache", tmp_path / "go"
    phases = [phase("race", cache_dir, RACE, barrier=str(barrier))]
    procs = [subprocess.Popen(driver_command(DRIVER, phases), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True, env=driver_env()) for _ in range(4)]
    barrier.touch()
    outs = []
    for p in procs:
        stdout, stderr = p.communicate(timeout=300)
        assert p.returncode == 0, stderr
        outs.append(driver_outputs(phases, stdout, check_results)["race"])
    assert all(cache_warnings(out) == [] for out in outs)
    # the per-key lock: each loop was compiled by exactly one process, the others loaded it
    assert sum(o["info"]["compiles"] for o in outs) == n_loops(RACE)
    assert sum(o["info"]["disk"]["hits"] for o in outs) == 3 * n_loops(RACE)
    entries = sound_entries(cache_dir)
    assert len(entries) == n_loops(RACE) and all(entries.values())
    assert not list((cache_dir / f"v{diskcache.FORMAT}").glob("*.tmp"))


def test_damaged_entries_are_replaced_with_a_warning(scenarios):
    out, damage = scenarios["out"]["damaged"], scenarios["damage"]
    msgs = cache_warnings(out)
    assert len(msgs) == len(damage) == len(DAMAGE_XPROC)
    for name, reason in damage.items():
        assert any(name in m and reason in m for m in msgs), (name, reason, msgs)
    assert out["info"]["compiles"] == len(damage)
    assert out["info"]["disk"]["replaced"] == len(damage)
    assert out["info"]["disk"]["hits"] == N_LOOPS - len(damage)
    entries = sound_entries(scenarios["dirs"]["damaged"])
    assert len(entries) == N_LOOPS and all(entries.values())
    reload = scenarios["out"]["damaged-reload"]  # the replacements load
    assert reload["info"]["compiles"] == 0 and cache_warnings(reload) == []


def test_inspect_llvm_of_a_loaded_loop_compiles_its_ir(scenarios):
    out = scenarios["out"]["inspect"]  # the driver checked the IR text
    assert out["info"]["disk"]["hits"] == 1 and out["info"]["compiles"] == 1
    assert out["info"]["disk"]["stores"] == 0


def test_version_change_invalidates(scenarios):
    out = scenarios["out"]["version"]
    assert out["info"]["compiles"] == 1 and out["info"]["disk"]["hits"] == 0
    # the old entries stay; the new one sits beside them
    assert len(sound_entries(scenarios["dirs"]["version"])) == N_LOOPS + 1


def test_cache_false_and_env_var_skip_the_disk(scenarios):
    off = scenarios["out"]["cache=False"]
    assert off["info"]["compiles"] == 1 and off["info"]["disk"]["stores"] == 0
    env = scenarios["out"]["env var"]
    assert env["info"]["compiles"] == 2  # the stored loop of ONE is not loaded
    assert env["info"]["disk"]["hits"] == 0 and env["info"]["disk"]["stores"] == 0
    assert env["info"]["disk"]["enabled"] is False
    assert len(sound_entries(scenarios["dirs"]["switches"])) == N_LOOPS  # nothing was added


def test_uncreatable_directory_falls_back_to_memory_with_one_warning(scenarios):
    out = scenarios["out"]["uncreatable"]
    msgs = cache_warnings(out)
    assert len(msgs) == 1 and "cannot create" in msgs[0]
    assert out["info"]["compiles"] == n_loops(NEW)


def test_read_only_directory_serves_hits_and_warns_once(scenarios):
    if not scenarios["read_only"]:
        pytest.skip("running as root without chattr: no way to make a folder read-only")
    out = scenarios["out"]["read-only"]
    assert out["info"]["compiles"] == n_loops(NEW)  # the stored loop was loaded
    assert out["info"]["disk"]["hits"] == 1
    msgs = cache_warnings(out)
    assert len(msgs) == 1 and "cannot write" in msgs[0]


# ---- in process: entry format, store/load, locks (no Numba) -------------------------------------
KEY = "k" * 10


@pytest.fixture
def cache(tmp_path):
    saved = diskcache.STATS.as_dict()
    diskcache.STATS.clear()
    yield DiskCache(tmp_path / "c")
    for name, value in saved.items():
        setattr(diskcache.STATS, name, value)


def test_store_and_load_round_trip(cache):
    assert cache.load(KEY) is None
    assert cache.store(KEY, b"payload")
    assert cache.load(KEY) == b"payload"
    assert cache.path(KEY).name == __import__("hashlib").sha256(KEY.encode()).hexdigest() + diskcache.SUFFIX
    hexkey = "ab" * 32
    assert cache.path(hexkey).stem == hexkey
    assert cache.info()["entries"] == 1 and cache.info()["bytes"] == len(b"payload") + diskcache._HEADER.size


def test_entry_of_another_key_is_refused(cache):
    cache.store("first", b"one")
    shutil.copy(cache.path("first"), cache.path("second"))
    with pytest.warns(CacheWarning, match="another key"):
        assert cache.load("second") is None


@pytest.mark.parametrize("how", ["truncated", "header cut", "garbage", "empty", "bad magic", "checksum", "format"])
def test_damaged_entry_is_detected(cache, how):
    cache.store(KEY, bytes(range(256)) * 4)
    reason = corrupt(cache.path(KEY), how)
    with pytest.warns(CacheWarning, match=reason):
        assert cache.load(KEY) is None
    assert diskcache.STATS.replaced == 1


def test_cached_builds_once_then_loads(cache):
    calls = []

    def build():
        calls.append(1)
        return [1, 2, 3]

    enc = lambda v: bytes(v)  # noqa: E731
    dec = lambda b: list(b)   # noqa: E731
    assert cache.cached(KEY, build, enc, dec) == [1, 2, 3]
    assert cache.cached(KEY, build, enc, dec) == [1, 2, 3]
    assert len(calls) == 1
    assert (diskcache.STATS.hits, diskcache.STATS.misses, diskcache.STATS.stores) == (1, 1, 1)


def test_cached_rebuilds_what_it_cannot_decode(cache):
    cache.store(KEY, b"\x00")

    def dec(b):
        if b == b"\x00":
            raise ValueError("old layout")
        return b

    with pytest.warns(CacheWarning, match="unusable.*old layout"):
        assert cache.cached(KEY, lambda: b"new", bytes, dec) == b"new"
    assert cache.load(KEY) == b"new"


def test_unwritable_directory_warns_once(cache, monkeypatch):
    cache.store("kept", b"old")

    def refuse(*a, **k):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(diskcache.os, "replace", refuse)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert not cache.store("a", b"1")
        assert not cache.store("b", b"2")
        assert cache.cached("c", lambda: b"3", bytes, bytes) == b"3"
    assert [w.category for w in caught] == [CacheWarning]
    assert "cannot write" in str(caught[0].message)
    assert cache.load("kept") == b"old"  # what is there is still served
    assert not list(cache.dir.glob("*.tmp"))


def test_uncreatable_directory_is_unusable_with_one_warning(tmp_path):
    (tmp_path / "f").write_text("")
    cache = DiskCache(tmp_path / "f" / "sub")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert cache.load(KEY) is None
        assert not cache.store(KEY, b"x")
        assert cache.cached(KEY, lambda: 5, lambda v: b"", int) == 5
    assert len(caught) == 1 and "cannot create" in str(caught[0].message)


def test_lock_excludes_other_holders(cache):
    results = []

    def attempt():
        with cache.lock(KEY, timeout=0.05) as got:
            results.append(got)

    with cache.lock(KEY) as taken:
        assert taken
        t = threading.Thread(target=attempt)
        t.start()
        t.join()
    assert results == [False]  # timed out while held: the body would run unlocked
    with cache.lock(KEY, timeout=0.05) as taken:
        assert taken


def test_clear_removes_entries_temps_and_locks(cache):
    cache.store("a", b"1")
    cache.store("b", b"2")
    with cache.lock("a"):
        pass
    (cache.dir / ".x.tmp").write_bytes(b"")
    (cache.dir / "unrelated.txt").write_text("kept")
    assert cache.clear() == 2
    assert sorted(p.name for p in cache.dir.iterdir()) == ["locks", "unrelated.txt"]
    assert not list((cache.dir / "locks").iterdir())


def test_pack_unpack():
    fields = [b"", b"a", bytes(range(256))]
    assert diskcache.unpack(diskcache.pack(fields)) == fields
    for bad in (b"", diskcache.pack(fields)[:-1], diskcache.pack(fields) + b"x"):
        with pytest.raises(ValueError):
            diskcache.unpack(bad)


@pytest.mark.parametrize("platform, env, expected", [
    ("linux", {"XDG_CACHE_HOME": "/xdg"}, "/xdg/ufuncgen"),
    ("linux", {}, "~/.cache/ufuncgen"),
    ("darwin", {}, "~/Library/Caches/ufuncgen"),
    ("win32", {"LOCALAPPDATA": "C:/Users/u/AppData/Local"}, "C:/Users/u/AppData/Local/ufuncgen/Cache"),
])
def test_default_location(monkeypatch, platform, env, expected):
    for name in ("XDG_CACHE_HOME", "LOCALAPPDATA", diskcache.ENV_DIR):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setattr(diskcache.sys, "platform", platform)
    assert diskcache.cache_dir() == Path(os.path.expanduser(expected))


def test_env_variables(monkeypatch, tmp_path):
    monkeypatch.setenv(diskcache.ENV_DIR, str(tmp_path))
    assert diskcache.cache_dir() == tmp_path
    for value, off in (("1", True), ("yes", True), ("0", False), ("", False), ("false", False)):
        monkeypatch.setenv(diskcache.ENV_DISABLE, value)
        assert diskcache.disabled_by_env() is off


def test_cache_info_and_clear_cache(monkeypatch, tmp_path):
    """The public pair, in process: disk counts come from the directory and this process's STATS."""
    import ufuncgen as ug
    monkeypatch.setenv(diskcache.ENV_DIR, str(tmp_path))
    cache = diskcache.current()
    cache.store("one", b"1")
    cache.store("two", b"22")
    info = ug.cache_info()
    assert set(info) == {"memory", "disk", "compiles", "memory_caches"}
    assert info["disk"]["path"] == str(cache.dir) and info["disk"]["enabled"] is True
    assert info["disk"]["entries"] == 2 and info["disk"]["bytes"] == 3 + 2 * diskcache._HEADER.size
    out = ug.clear_cache(memory=False)
    assert out == {"disk": {"path": str(cache.dir), "removed": 2}}
    assert ug.cache_info()["disk"]["entries"] == 0
    monkeypatch.setenv(diskcache.ENV_DISABLE, "1")
    assert ug.cache_info()["disk"]["enabled"] is False


def test_store_recreates_a_deleted_folder(cache):
    cache.store("a", b"1")
    shutil.rmtree(cache.root)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert cache.store("b", b"2")
    assert cache.load("b") == b"2"


@pytest.mark.skipif(os.name != "posix", reason="POSIX permissions")
def test_world_writable_directory_is_not_used(cache):
    cache.store("a", b"1")
    os.chmod(cache.dir, 0o777)
    fresh = DiskCache(cache.root)  # the check is made once per cache object
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert fresh.load("a") is None
        assert not fresh.store("b", b"2")
        assert fresh.cached("c", lambda: b"3", bytes, bytes) == b"3"
    assert len(caught) == 1 and "writable by every user" in str(caught[0].message)
    assert not fresh.path("b").exists()


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() != 0, reason="only root can give a folder away")
def test_folder_of_another_user_is_not_used(cache):
    cache.store("a", b"1")
    os.chown(cache.dir, 12345, 12345)
    fresh = DiskCache(cache.root)
    with pytest.warns(CacheWarning, match="belongs to another user"):
        assert fresh.load("a") is None
