"""ufuncgen: scalar formulas to fast NumPy ufuncs, compiled with Numba.

Importing the package is cheap: Numba, SymPy and the backends load on first use of a name.
"""
from __future__ import annotations

import importlib

from .errors import FormulaError, SignatureError

__version__ = "0.1.0"

# public name -> (module, attribute); each module is imported on first access of one of its names.
# No module is named like a public function: importing ufuncgen.<name> would make the import
# system overwrite the package attribute <name> with the module.
_LAZY = {
    "ufunc": ("elementwise", "ufunc"),
    "UFunc": ("elementwise", "UFunc"),
    "gufunc": ("generalized", "gufunc"),
    "GUFunc": ("generalized", "GUFunc"),
    "guvectorize": ("generalized", "guvectorize"),
    "Idx": ("indexing", "Idx"),
    "vectorize": ("decorators", "vectorize"),
    "load": ("config", "load"),
    "cache_info": ("cacheapi", "cache_info"),
    "clear_cache": ("cacheapi", "clear_cache"),
    "FUNCTIONS": ("functions", "FUNCTIONS"),
}
# Math functions on symbols for traced code (ug.sin, ug.where, ug.sum, ...) live in .symbolic.
_SYMBOLIC = "symbolic"

__all__ = ["FormulaError", "SignatureError", "__version__", *_LAZY]


def __getattr__(name):
    target = _LAZY.get(name)
    if target is not None:
        value = getattr(importlib.import_module(f".{target[0]}", __name__), target[1])
    else:
        if name.startswith("__"):
            raise AttributeError(name)
        try:
            symbolic = importlib.import_module(f".{_SYMBOLIC}", __name__)
        except ImportError:
            symbolic = None
        if symbolic is None or name not in getattr(symbolic, "__all__", ()):
            raise AttributeError(f"module 'ufuncgen' has no attribute {name!r}")
        value = getattr(symbolic, name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_LAZY))

