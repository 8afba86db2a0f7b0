"""The disk cache of CUDA kernels: stored PTX, loaded without numba-cuda's compiler.

The simulator's kernels are Python functions and are never stored, so without a GPU the cache
logic runs against a stand-in engine with the driver engine's interface (``build``, ``load``,
``cache_key``, ``toolchain``): payload round trip, key parts, ``cache=False``,
``UFUNCGEN_DISABLE_CACHE``, damaged entries.  On a GPU, two fresh processes check the real thing:
the second one loads every kernel from disk (``cuModuleLoadData``) and compiles none.
"""
import os
import subprocess
import sys
import textwrap
import warnings

import numpy as np
import pytest
from cuda_mode import gpu_present

from ufuncgen import diskcache
from ufuncgen.backends import cuda as cudamod
from ufuncgen.backends import cudastore
from ufuncgen.backends.cuda_codegen import LaunchSpec
from ufuncgen.codegen import KernelSource
from ufuncgen.memcache import BoundedCache

F32 = np.dtype(np.float32)
SPEC = LaunchSpec(("a", "a"), (F32, F32), (F32, F32), (F32,), (F32,), 0, 2)
PTX = ".version 8.5\n.target sm_90\n.visible .entry launcher_abc(\n\t.param .u64 p0\n)\n{\n\tret;\n}\n"


class _Kernel:
    def __init__(self, ptx, entry):
        self.ptx, self.entry = ptx, entry
        self.source = None


class _Engine:
    """The driver engine's cache-facing interface, counting compiles and loads."""

    simulator = False

    def __init__(self, cc=(9, 0), toolchain=(("nvvm", (2, 0), (2, 0, 3, 2)), ("cudart", (13, 0)))):
        self.cache_key = ("driver", cc, "0.30")
        self._toolchain = toolchain
        self.builds = self.loads = 0

    def toolchain(self):
        return self._toolchain

    def build(self, src, spec, fastmath, block):
        self.builds += 1
        return _Kernel(PTX, "launcher_abc")

    def load(self, ptx, entry, spec):
        self.loads += 1
        if f".entry {entry}(" not in ptx:
            raise ValueError("no such entry")
        return _Kernel(ptx, entry)


def _source():
    text = "def launcher(n, a0, a1, o0):\n    pass\n"
    return KernelSource(text, "<ufuncgen cuda kernel 0123>", "0123", (F32, F32), (F32,), func_name="launcher")


@pytest.fixture
def fresh(tmp_path, monkeypatch):
    """An empty cache directory and an empty memory cache of kernels."""
    monkeypatch.setenv(diskcache.ENV_DIR, str(tmp_path))
    monkeypatch.delenv(diskcache.ENV_DISABLE, raising=False)
    monkeypatch.setattr(cudamod, "KERNELS", BoundedCache(16))
    return tmp_path


def _get(engine, key=("x*y", 1), cache=True):
    return cudamod.compiled_kernel(engine, key, _source, SPEC, False, 256, cache)


def test_payload_round_trip():
    k = _Kernel(PTX, "launcher_abc")
    k.source = _source()
    back = cudastore.loads(cudastore.dumps(k), _Engine(), SPEC)
    assert (back.ptx, back.entry, back.source.text) == (PTX, "launcher_abc", k.source.text)
    assert back.source.filename == k.source.filename
    with pytest.raises(ValueError, match="payload"):
        cudastore.loads(diskcache.pack([b"something else", b"", b"", b"", b""]), _Engine(), SPEC)
    with pytest.raises(ValueError):
        cudastore.loads(b"garbage", _Engine(), SPEC)


def test_key_covers_memory_key_device_and_toolchain():
    key = cudastore.kernel_key
    base = key(_Engine(), ("x*y", 1))
    assert base == key(_Engine(), ("x*y", 1))
    others = {key(_Engine(), ("x*y", 2)), key(_Engine(cc=(8, 0)), ("x*y", 1)),
              key(_Engine(toolchain=(("nvvm", (2, 0), (2, 0, 3, 3)),)), ("x*y", 1))}
    assert base not in others and len(others) == 3


def test_second_build_loads_from_disk_without_compiling(fresh, monkeypatch):
    engine = _Engine()
    before = cudamod.compile_count()
    first = _get(engine)
    assert engine.builds == 1 and cudamod.compile_count() == before + 1
    assert len(list(fresh.rglob("*.ufgc"))) == 1
    monkeypatch.setattr(cudamod, "KERNELS", BoundedCache(16))  # a new process, as far as memory goes
    second = _get(engine)
    assert engine.builds == 1 and engine.loads == 1 and cudamod.compile_count() == before + 1
    assert second.ptx == first.ptx and second.source.text == first.source.text


def test_cache_false_and_the_environment_switch_keep_nothing_on_disk(fresh, monkeypatch):
    engine = _Engine()
    _get(engine, cache=False)
    assert not list(fresh.rglob("*.ufgc"))
    monkeypatch.setenv(diskcache.ENV_DISABLE, "1")
    _get(engine, key=("other", 1))
    assert not list(fresh.rglob("*.ufgc")) and engine.builds == 2


def test_simulator_kernels_are_not_stored(fresh):
    engine = _Engine()
    engine.simulator = True
    _get(engine)
    assert engine.builds == 1 and not list(fresh.rglob("*.ufgc"))


def test_a_damaged_entry_is_rebuilt_and_replaced(fresh, monkeypatch):
    engine = _Engine()
    _get(engine)
    (entry,) = fresh.rglob("*.ufgc")
    blob = bytearray(entry.read_bytes())
    blob[-5] ^= 0xFF
    entry.write_bytes(bytes(blob))
    monkeypatch.setattr(cudamod, "KERNELS", BoundedCache(16))
    with pytest.warns(diskcache.CacheWarning, match="corrupted"):
        _get(engine)
    assert engine.builds == 2
    monkeypatch.setattr(cudamod, "KERNELS", BoundedCache(16))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _get(engine)  # the replaced entry is sound
    assert engine.builds == 2 and engine.loads == 1


# ---- on a real GPU: two processes ------------------------------------------------------------
_CHILD = textwrap.dedent("""
    import numpy as np
    import ufuncgen as ug
    from numba import cuda
    from ufuncgen.backends import cuda as cudamod
    x = np.linspace(-2, 2, 3000).reshape(100, 30).astype(np.float32)
    f = ug.ufunc("sin(x)**2 + cos(y)*exp(-x*y)", target="cuda")
    r = f(cuda.to_device(x), cuda.to_device(x)).copy_to_host()
    np.testing.assert_allclose(r, np.sin(x)**2 + np.cos(x)*np.exp(-x*x), rtol=2e-6, atol=2e-6)
    norm = ug.gufunc("sqrt(sum(x[i]**2, i))", target="cuda")
    n = norm(cuda.to_device(x)).copy_to_host()
    np.testing.assert_allclose(n, np.linalg.norm(x.astype(np.float64), axis=-1), rtol=1e-5)
    assert "def launcher" in f.source and "def launcher" in norm.source
    off = ug.ufunc("x*3 - 1", target="cuda", cache=False)
    np.testing.assert_allclose(off(cuda.to_device(x)).copy_to_host(), x*3 - 1, rtol=1e-6, atol=1e-6)
    info = ug.cache_info()["disk"]
    print("COMPILES", cudamod.compile_count(), "HITS", info["hits"], "ENTRIES", info["entries"])
""")


@pytest.mark.gpu
@pytest.mark.skipif(os.environ.get("NUMBA_ENABLE_CUDASIM") == "1" or not gpu_present(),
                    reason="needs a real CUDA GPU")
def test_a_second_process_loads_kernels_without_compiling(tmp_path):
    import ufuncgen
    env = {k: v for k, v in os.environ.items() if k not in (diskcache.ENV_DISABLE, "NUMBA_ENABLE_CUDASIM")}
    env[diskcache.ENV_DIR] = str(tmp_path)
    env["PYTHONPATH"] = os.pathsep.join([os.path.dirname(os.path.dirname(ufuncgen.__file__)),
                                         env.get("PYTHONPATH", "")])

    def child():
        res = subprocess.run([sys.executable, "-c", _CHILD], env=env, capture_output=True, text=True, timeout=600)
        assert res.returncode == 0, res.stderr[-3000:]
        words = res.stdout.split()
        return {words[i]: int(words[i + 1]) for i in range(0, len(words), 2)}

    cold = child()
    assert cold["COMPILES"] == 3 and cold["HITS"] == 0 and cold["ENTRIES"] == 2  # cache=False stores nothing
    warm = child()
    assert warm["COMPILES"] == 1 and warm["HITS"] == 2  # only the cache=False kernel is compiled again
