"""``ug.cache_info()`` and ``ug.clear_cache()``: what the compile caches hold."""
from __future__ import annotations

import sys

from . import diskcache
from .memcache import CACHES, LOOPS

__all__ = ["cache_info", "clear_cache"]


def cache_info() -> dict:
    """What the caches hold and how they served this process.

    Returns:
        ``{"memory": {entries, maxsize, hits, misses, compiles}, "disk": {path, enabled, entries,
        bytes, hits, misses, stores, replaced}, "compiles": n, "memory_caches": {name: {...}}}``;
        ``memory`` is the host loop cache, ``memory_caches`` every in-memory cache by name (CUDA
        kernels appear once the cuda backend is loaded).  ``memory["compiles"]`` counts
        loops put into memory (loaded from disk or compiled); the top-level ``compiles`` counts real
        Numba compiles only, so a process served from disk reports 0.  Disk hits and misses are
        this process's; entries and bytes are what the directory holds now.
    """
    build = sys.modules.get(f"{__package__}.build")  # not imported: nothing was compiled (keeps this cheap)
    compiles = build.compile_count() if build is not None else 0
    disk = diskcache.current()
    enabled = not diskcache.disabled_by_env()
    info = disk.info() if enabled and disk.dir.is_dir() else {"path": str(disk.dir), "entries": 0, "bytes": 0}
    info["enabled"] = enabled
    info.update(diskcache.STATS.as_dict())
    return {"memory": LOOPS.info(), "disk": info, "compiles": compiles,
            "memory_caches": {name: cache.info() for name, cache in CACHES.items()}}


def clear_cache(memory: bool = True, disk: bool = True) -> dict:
    """Forget compiled loops held in memory and/or delete the disk cache's entries.

    Existing ufunc objects keep the loops they already have.  Returns how many entries each cache
    dropped: ``{"memory": {"removed": n}, "disk": {"path": ..., "removed": m}}``.
    """
    out = {}
    if memory:
        out["memory"] = {"removed": sum(len(cache) for cache in CACHES.values())}
        for cache in CACHES.values():
            cache.clear()
    if disk:
        cache = diskcache.current()
        out["disk"] = {"path": str(cache.dir), "removed": cache.clear()}
        diskcache.STATS.clear()
    return out
