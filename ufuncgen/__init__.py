"""ufuncgen: scalar formulas to fast NumPy ufuncs, compiled with Numba.

Importing the package is cheap: Numba, SymPy and the backends load on first use.
"""
from __future__ import annotations

from .errors import FormulaError, SignatureError

__version__ = "0.1.0"

_LAZY = {
    "ufunc": ("ufunc", "ufunc"),
    "UFunc": ("ufunc", "UFunc"),
    "cache_info": ("cacheapi", "cache_info"),
    "clear_cache": ("cacheapi", "clear_cache"),
    "FUNCTIONS": ("functions", "FUNCTIONS"),
}

__all__ = ["FormulaError", "SignatureError", "__version__", *_LAZY]


def __getattr__(name):
    target = _LAZY.get(name)
    if target is None:
        raise AttributeError(f"module 'ufuncgen' has no attribute {name!r}")
    import importlib
    value = getattr(importlib.import_module(f".{target[0]}", __name__), target[1])
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_LAZY))
