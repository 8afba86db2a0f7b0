"""``import ufuncgen`` stays cheap: no Numba, no CUDA, no SymPy until a formula is compiled."""
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_import_does_not_import_numba_or_cuda():
    code = ("import sys, ufuncgen; "
            "bad = [m for m in ('numba', 'numba.cuda', 'llvmlite', 'sympy', 'cupy') if m in sys.modules]; "
            "print(bad); assert not bad")
    env = {"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_public_names_resolve():
    import ufuncgen as ug
    for name in ("ufunc", "UFunc", "FormulaError", "SignatureError", "cache_info", "clear_cache", "FUNCTIONS"):
        assert getattr(ug, name) is not None
