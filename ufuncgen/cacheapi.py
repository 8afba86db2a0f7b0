"""``ug.cache_info()`` and ``ug.clear_cache()``: what the compile caches hold."""
from __future__ import annotations

from .memcache import LOOPS

__all__ = ["cache_info", "clear_cache"]


def cache_info() -> dict:
    """Entries, hits, misses and compiles of the in-memory cache in this process."""
    return {"memory": LOOPS.info()}


def clear_cache() -> None:
    """Forget every compiled loop held in memory (existing ufunc objects keep theirs)."""
    LOOPS.clear()
