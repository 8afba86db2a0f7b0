"""Where the cuda tests run: on a real GPU, in Numba's CUDA simulator, or again in a subprocess.

Shared by ``test_cuda.py``, ``test_cuda_gufunc.py`` and ``test_cuda_cache.py``.  Importing it does
nothing; ``choose_mode()`` may switch numba-cuda to its simulator, so a test file calls it before
``numba.cuda`` is first imported.
"""
import ctypes
import os
import subprocess
import sys

import pytest


def gpu_present() -> bool:
    """Ask the driver directly, so that importing numba.cuda does not fix the mode yet."""
    if os.environ.get("CUDA_VISIBLE_DEVICES", None) == "":
        return False
    for name in ("libcuda.so.1", "libcuda.so", "nvcuda.dll"):
        try:
            lib = ctypes.CDLL(name)
        except OSError:
            continue
        count = ctypes.c_int(0)
        return lib.cuInit(0) == 0 and lib.cuDeviceGetCount(ctypes.byref(count)) == 0 and count.value > 0
    return False


def choose_mode() -> str:
    """``"gpu"``, ``"sim"`` or ``"subprocess"``; with no GPU, switch numba-cuda to its simulator.

    ``NUMBA_ENABLE_CUDASIM=1`` is set before ``numba.cuda`` is first imported, so CI runs the same
    generated kernels; it stays set for the rest of the process (it only concerns ``numba.cuda``).
    ``"subprocess"``: ``numba.cuda`` is already in driver mode here and there is no GPU, so the test
    file runs itself again in a subprocess with the simulator on (``rerun_in_simulator``).
    """
    if os.environ.get("NUMBA_ENABLE_CUDASIM") == "1":
        return "sim"
    if gpu_present():
        return "gpu"
    if "numba.cuda" not in sys.modules:
        os.environ["NUMBA_ENABLE_CUDASIM"] = "1"
        if "numba.core.config" in sys.modules:  # numba-cuda reads numba's config module
            sys.modules["numba.core.config"].reload_config()
        return "sim"
    return "subprocess"


def require_mode(mode: str, runner: str) -> None:
    """Skip a test that cannot run in this process; ``runner`` is the test that runs it elsewhere."""
    if mode == "subprocess":
        pytest.skip("numba.cuda is in driver mode in this process and there is no GPU: see " + runner)


def mode_check(mode: str, runner: str):
    """An autouse fixture for a test file (assign it to a module name): every test but ``runner``
    skips where it cannot run in this process."""
    @pytest.fixture(autouse=True)
    def _mode(request):
        if request.node.name != runner:
            require_mode(mode, runner)
    return _mode


def rerun_in_simulator(test_file: str) -> None:
    """Run a test file in a fresh process with the simulator on; fail with its output if it fails."""
    env = dict(os.environ, NUMBA_ENABLE_CUDASIM="1")
    res = subprocess.run([sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", test_file],
                         env=env, capture_output=True, text=True, timeout=1200)
    assert res.returncode == 0, res.stdout[-4000:]
