"""The in-memory compile cache: bounded, thread-safe, one compile per key.

Eight threads asking for the same new key at once cause one compile: the first builds while the
others wait on that key's lock.  Entries are evicted least-recently-used past ``maxsize``, so
formulas made at run time cannot grow memory without bound (unlike ``functools.cache`` on a
method, which also keeps every instance alive).
"""
from __future__ import annotations

import os
import threading
from collections import OrderedDict
from collections.abc import Callable

__all__ = ["BoundedCache", "LOOPS", "CACHES"]


# Every named cache, so ``ug.clear_cache()`` and ``ug.cache_info()`` reach all of them (the CUDA
# backend's kernels too, once it is loaded).
CACHES: dict = {}


class BoundedCache:
    def __init__(self, maxsize: int = 1024, name: str | None = None):
        self.maxsize = maxsize
        if name is not None:
            CACHES[name] = self
        self._data: OrderedDict = OrderedDict()
        self._lock = threading.Lock()
        self._building: dict = {}
        self.hits = 0
        self.misses = 0
        self.builds = 0

    def get(self, key):
        with self._lock:
            value = self._data.get(key)
            if value is not None:
                self._data.move_to_end(key)
            return value

    def get_or_build(self, key, build: Callable):
        with self._lock:
            value = self._data.get(key)
            if value is not None:
                self._data.move_to_end(key)
                self.hits += 1
                return value
            key_lock = self._building.setdefault(key, threading.Lock())
        with key_lock:
            with self._lock:
                value = self._data.get(key)
                if value is not None:  # built by another thread while we waited
                    self.hits += 1
                    return value
                self.misses += 1
            try:
                value = build()
            except BaseException:
                with self._lock:
                    self._building.pop(key, None)
                raise
            with self._lock:  # publish before dropping the key's lock, so no one builds twice
                self.builds += 1
                self._data[key] = value
                self._building.pop(key, None)
                while len(self._data) > self.maxsize:
                    self._data.popitem(last=False)
            return value

    def clear(self) -> None:
        with self._lock:
            self._data.clear()
            self.hits = self.misses = self.builds = 0

    def __len__(self) -> int:
        return len(self._data)

    def info(self) -> dict:
        with self._lock:
            return {"entries": len(self._data), "maxsize": self.maxsize, "hits": self.hits,
                    "misses": self.misses, "compiles": self.builds}


# Compiled inner loops, keyed by (canonical formula, dtypes, target, options).
LOOPS = BoundedCache(int(os.environ.get("UFUNCGEN_MEMORY_CACHE_SIZE", "1024")), name="loops")
