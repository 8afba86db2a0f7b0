"""The disk cache: compiled code kept across processes, one file per key.

What is stored: for the cpu/parallel targets, the machine code of each finished ufunc inner loop
(``backends/cpustore.py``), keyed by ``cachekey.loop_key`` (generated source, dtypes, options,
CPU, versions).  A hit loads the object code into Numba's JIT in a few milliseconds, with no typing,
lowering or LLVM optimisation, and without Numba's ~40 ms vectorize wrapper rebuild.

Where: ``$UFUNCGEN_CACHE_DIR`` if set, else the user's cache directory (``$XDG_CACHE_HOME/ufuncgen``
or ``~/.cache/ufuncgen`` on Linux, ``~/Library/Caches/ufuncgen`` on macOS,
``%LOCALAPPDATA%\\ufuncgen`` on Windows); entries live in its ``v1/`` folder.

Turning it off: ``cache=False`` per ufunc, or ``UFUNCGEN_DISABLE_CACHE=1`` for the process.  The
in-memory cache is used either way.

Safety:

* An entry is ``header + payload``; the header holds a magic, the entry format, the payload
  length, the sha256 of the key and of the payload.  A truncated, garbage, foreign-format or
  mismatched entry is reported with a ``CacheWarning``, rebuilt and replaced: never a crash or a
  wrong result from an accident.
* Writes go to a temporary file in the same folder, then ``os.replace``: readers see the old entry
  or the new one, never half of one.
* Processes building the same key take a per-key file lock (``fcntl.flock`` / ``msvcrt.locking``),
  so one compiles and the others load its result.  Where locking is impossible the cache still
  stays consistent (writes are atomic); at worst a key is compiled twice.
* A directory that cannot be created or written falls back to memory with one warning per
  directory per process; a read-only directory still serves the entries it has.  On POSIX, a
  folder that every user may write to (mode o+w, e.g. a cache dir set to ``/tmp``) or that belongs
  to another user (neither you nor root) is not used at all.

Threat model: an entry is machine code that is run as-is.  Whoever can write to the cache directory
can run code in every process that uses it, exactly as with a pickle file.  The checksums detect
accidents, not attacks.  Never point ``UFUNCGEN_CACHE_DIR`` at a directory that others can write
(world-writable folders and folders of other users are refused; group members are trusted).

Generic API, for other backends (the CUDA backend stores its compiled kernels the same way)::

    from ufuncgen import cachekey, diskcache
    key = cachekey.digest("cuda-kernel", source_text, signature, compute_capability, cachekey.versions())
    value = diskcache.cached(key, build, encode, decode, use=options_cache)
    #   build() -> value (compiles); encode(value) -> bytes; decode(bytes) -> value
    data = diskcache.load(key)            # bytes, or None (missing, unreadable or corrupt; never raises)
    ok = diskcache.store(key, payload)    # atomic; False where the directory cannot be written
    with diskcache.lock(key): ...         # cross-process lock for one key
    diskcache.pack([b"a", b"bc"]) / diskcache.unpack(data)   # length-prefixed fields for payloads

Keys are any strings (``cachekey.digest`` gives a sha256 hex); the file name is the key itself when
it is 64 hex digits, its sha256 otherwise.
"""
from __future__ import annotations

import hashlib
import os
import re
import stat
import struct
import sys
import threading
import time
import warnings
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

__all__ = ["CacheWarning", "DiskCache", "cache_dir", "disabled_by_env", "current", "cached", "load", "store",
           "lock", "pack", "unpack", "STATS", "ENV_DIR", "ENV_DISABLE"]

T = TypeVar("T")

ENV_DIR = "UFUNCGEN_CACHE_DIR"
ENV_DISABLE = "UFUNCGEN_DISABLE_CACHE"
FORMAT = 1
MAGIC = b"UFUNCGEN"
SUFFIX = ".ufgc"
_HEADER = struct.Struct("<8sHHQ32s32s")  # magic, format, reserved, payload length, sha256(key), sha256(payload)
LOCK_TIMEOUT = 300.0                     # seconds to wait for another process's compile before compiling anyway
_HEX64 = re.compile(r"[0-9a-f]{64}")
_FALSE = ("", "0", "false", "no", "off")


class CacheWarning(UserWarning):
    """A disk-cache problem that was worked around (the result is still right)."""


# ---- where -----------------------------------------------------------------------------------
def _default_root() -> Path:
    """The platform's user cache directory, without a dependency (platformdirs' conventions)."""
    home = Path.home()
    if sys.platform == "win32":
        base = os.environ.get("LOCALAPPDATA") or str(home / "AppData" / "Local")
        return Path(base) / "ufuncgen" / "Cache"
    if sys.platform == "darwin":
        return home / "Library" / "Caches" / "ufuncgen"
    return Path(os.environ.get("XDG_CACHE_HOME") or home / ".cache") / "ufuncgen"


def cache_dir() -> Path:
    """``$UFUNCGEN_CACHE_DIR`` if set, else the user's cache directory."""
    env = os.environ.get(ENV_DIR)
    return Path(os.path.abspath(os.path.expanduser(env))) if env else _default_root()


def disabled_by_env() -> bool:
    return os.environ.get(ENV_DISABLE, "").strip().lower() not in _FALSE


# ---- statistics ------------------------------------------------------------------------------
class _Stats:
    """Counts for ``cached()`` in this process: loads from disk, builds, stores, replaced entries."""

    FIELDS = ("hits", "misses", "stores", "replaced")

    def __init__(self):
        self._lock = threading.Lock()
        self.clear()

    def add(self, name: str, n: int = 1) -> None:
        with self._lock:
            setattr(self, name, getattr(self, name) + n)

    def clear(self) -> None:
        for name in self.FIELDS:
            setattr(self, name, 0)

    def as_dict(self) -> dict:
        return {name: getattr(self, name) for name in self.FIELDS}


STATS = _Stats()


# ---- payload helpers -------------------------------------------------------------------------
def pack(fields) -> bytes:
    """Length-prefixed concatenation of byte strings (a payload layout without pickle)."""
    out = [struct.pack("<I", len(fields))]
    for f in fields:
        out.append(struct.pack("<Q", len(f)))
        out.append(bytes(f))
    return b"".join(out)


def unpack(data: bytes) -> list:
    """The fields ``pack`` joined; ValueError if the layout does not add up."""
    try:
        (n,), pos, fields = struct.unpack_from("<I", data), 4, []
        for _ in range(n):
            (size,) = struct.unpack_from("<Q", data, pos)
            pos += 8
            if pos + size > len(data):
                raise ValueError("field runs past the end")
            fields.append(data[pos:pos + size])
            pos += size
    except struct.error as err:
        raise ValueError(f"bad payload layout: {err}") from err
    if pos != len(data):
        raise ValueError("trailing bytes after the last field")
    return fields


# ---- locking ---------------------------------------------------------------------------------
if os.name == "nt":  # pragma: no cover - exercised on Windows only
    import msvcrt

    def _try_lock(fd: int) -> bool:
        try:
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
            return True
        except OSError:
            return False

    def _unlock(fd: int) -> None:
        os.lseek(fd, 0, os.SEEK_SET)
        msvcrt.locking(fd, msvcrt.LK_UNLCK, 1)
else:
    import fcntl

    def _try_lock(fd: int) -> bool:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # per open file: excludes threads too
            return True
        except BlockingIOError:
            return False

    def _unlock(fd: int) -> None:
        fcntl.flock(fd, fcntl.LOCK_UN)


def _untrusted(st) -> str:
    """Why a cache folder with this ``stat`` may hold code planted by another user ('' if none)."""
    if os.name != "posix":
        return ""
    if st.st_mode & stat.S_IWOTH:
        return "is writable by every user"
    if st.st_uid not in (os.geteuid(), 0):
        return f"belongs to another user (uid {st.st_uid})"
    return ""


# ---- the cache -------------------------------------------------------------------------------
class DiskCache:
    """Entries of one cache directory (see the module docstring for the layout and guarantees)."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self.dir = self.root / f"v{FORMAT}"
        self._usable: bool | None = None   # None: not checked yet
        self._writable = True
        self._warned = False
        self._lock = threading.Lock()

    # -- state
    def _warn_once(self, message: str) -> None:
        with self._lock:
            if self._warned:
                return
            self._warned = True
        warnings.warn(f"ufuncgen disk cache: {message}; compiled code is kept in memory only for this process "
                      f"(set {ENV_DIR} to a writable directory, or {ENV_DISABLE}=1 to silence this)",
                      CacheWarning, stacklevel=4)

    def usable(self) -> bool:
        """Whether the directory exists (or could be created) and is safe to load from (checked once)."""
        if self._usable is None:
            try:
                self.dir.mkdir(parents=True, exist_ok=True)
                st = self.dir.stat()
            except OSError as err:
                self._usable = self._writable = False
                self._warn_once(f"cannot create {self.dir} ({err.strerror or err})")
                return False
            problem = _untrusted(st)
            if problem:  # someone else could plant machine code there
                self._usable = self._writable = False
                self._warn_once(f"{self.dir} {problem}, so its entries cannot be trusted")
                return False
            self._usable = True
        return self._usable

    def path(self, key: str) -> Path:
        name = key if _HEX64.fullmatch(key) else hashlib.sha256(key.encode()).hexdigest()
        return self.dir / (name + SUFFIX)

    # -- reading
    def _check(self, key: str, blob: bytes) -> tuple:
        """(payload, None) for a sound entry of ``key``, else (None, what is wrong)."""
        if len(blob) < _HEADER.size:
            return None, "truncated"
        magic, fmt, _reserved, size, khash, phash = _HEADER.unpack_from(blob)
        if magic != MAGIC:
            return None, "not a ufuncgen cache entry (bad magic)"
        if fmt != FORMAT:
            return None, f"written in cache format {fmt}, this ufuncgen reads {FORMAT}"
        if khash != hashlib.sha256(key.encode()).digest():
            return None, "stored for another key"
        payload = blob[_HEADER.size:]
        if len(payload) < size:
            return None, f"truncated ({len(payload)} of {size} bytes)"
        if len(payload) > size:
            return None, f"longer than its header says ({len(payload)} for {size} bytes)"
        if hashlib.sha256(payload).digest() != phash:
            return None, "corrupted (checksum mismatch)"
        return payload, None

    def load(self, key: str, quiet: bool = False) -> bytes | None:
        """The payload stored for ``key``; None if missing, unreadable or unsound (warned unless quiet)."""
        if not self.usable():
            return None
        path = self.path(key)
        try:
            with open(path, "rb") as fh:
                blob = fh.read()
        except OSError:
            return None
        payload, problem = self._check(key, blob)
        if problem is not None and not quiet:
            self.report_bad(path, problem)
        return payload

    def report_bad(self, path: Path, problem: str) -> None:
        STATS.add("replaced")
        warnings.warn(f"ufuncgen disk cache: entry {path} is {problem}; recompiling and replacing it",
                      CacheWarning, stacklevel=4)

    # -- writing
    def store(self, key: str, payload: bytes) -> bool:
        """Write the entry atomically; False (after one warning) where the directory is not writable."""
        if not (self.usable() and self._writable):
            return False
        payload = bytes(payload)
        header = _HEADER.pack(MAGIC, FORMAT, 0, len(payload), hashlib.sha256(key.encode()).digest(),
                              hashlib.sha256(payload).digest())
        path = self.path(key)
        tmp = path.with_name(f".{path.stem}.{os.getpid()}.{threading.get_ident()}.{os.urandom(4).hex()}.tmp")
        try:
            try:
                fh = open(tmp, "xb")
            except FileNotFoundError:  # the folder was deleted under us (e.g. by a clear): make it again
                self.dir.mkdir(parents=True, exist_ok=True)
                fh = open(tmp, "xb")
            with fh:
                fh.write(header)
                fh.write(payload)
            os.replace(tmp, path)
        except OSError as err:
            try:
                tmp.unlink()
            except OSError:
                pass
            self._writable = False
            self._warn_once(f"cannot write to {self.dir} ({err.strerror or err})")
            return False
        STATS.add("stores")
        return True

    @contextmanager
    def lock(self, key: str, timeout: float = LOCK_TIMEOUT):
        """Hold the cross-process lock of ``key``; yields whether it was taken.

        Lock files stay in ``locks/`` (deleting a lock file while another process waits on it would
        let a third take a second lock on a new file).  Without a writable directory, or after
        ``timeout`` seconds, the body runs unlocked: correctness never depends on the lock.
        """
        fd = None
        if self.usable() and self._writable:
            try:
                locks = self.dir / "locks"
                locks.mkdir(exist_ok=True)
                fd = os.open(locks / (self.path(key).stem + ".lock"), os.O_RDWR | os.O_CREAT, 0o666)
            except OSError:
                fd = None
        if fd is None:
            yield False
            return
        taken = False
        try:
            deadline = time.monotonic() + timeout
            delay = 0.001
            while not (taken := _try_lock(fd)) and time.monotonic() < deadline:
                time.sleep(delay)
                delay = min(delay * 2, 0.05)
            yield taken
        finally:
            if taken:
                _unlock(fd)
            os.close(fd)

    # -- build through the cache
    def _decode(self, key: str, decode: Callable, quiet: bool):
        payload = self.load(key, quiet=quiet)
        if payload is None:
            return _MISSING
        try:
            return decode(payload)
        except Exception as err:  # a sound file we cannot use (e.g. foreign payload): rebuild it
            if not quiet:
                self.report_bad(self.path(key), f"unusable ({type(err).__name__}: {err})")
            return _MISSING

    def cached(self, key: str, build: Callable[[], T], encode: Callable[[T], bytes],
               decode: Callable[[bytes], T]) -> T:
        """Load ``key``, or build it once across processes and store it."""
        if not self.usable():
            return build()
        value = self._decode(key, decode, quiet=False)
        if value is not _MISSING:
            STATS.add("hits")
            return value
        with self.lock(key):
            value = self._decode(key, decode, quiet=True)  # another process may have built it meanwhile
            if value is not _MISSING:
                STATS.add("hits")
                return value
            STATS.add("misses")
            value = build()
            try:
                payload = encode(value)
            except Exception as err:  # never lose a compiled result to the cache
                warnings.warn(f"ufuncgen disk cache: cannot serialise {key[:16]}...: {err}", CacheWarning,
                              stacklevel=3)
                return value
            self.store(key, payload)
        return value

    # -- inspection
    def entries(self) -> list:
        try:
            return [p for p in self.dir.iterdir() if p.name.endswith(SUFFIX)]
        except OSError:
            return []

    def info(self) -> dict:
        sizes = []
        for p in self.entries():
            try:
                sizes.append(p.stat().st_size)
            except OSError:
                pass
        return {"path": str(self.dir), "entries": len(sizes), "bytes": sum(sizes)}

    def clear(self) -> int:
        """Delete this cache's entries, temporary files and lock files; the number of entries removed."""
        removed = 0
        try:
            files = list(self.dir.iterdir())
        except OSError:
            return 0
        for p in files + [*(self.dir / "locks").glob("*.lock")]:
            if p.name.endswith((SUFFIX, ".tmp", ".lock")):
                try:
                    p.unlink()
                    removed += p.name.endswith(SUFFIX)
                except OSError:
                    pass
        return removed


_MISSING = object()
_CACHES: dict = {}
_CACHES_LOCK = threading.Lock()


def current() -> DiskCache:
    """The cache of the directory configured now (one object per directory per process)."""
    root = cache_dir()
    with _CACHES_LOCK:
        cache = _CACHES.get(root)
        if cache is None:
            cache = _CACHES[root] = DiskCache(root)
        return cache


def cached(key: str, build: Callable[[], T], encode: Callable[[T], bytes], decode: Callable[[bytes], T],
           use: bool = True) -> T:
    """``build()`` through the disk cache, unless ``use`` is false or ``UFUNCGEN_DISABLE_CACHE`` is set."""
    if not use or disabled_by_env():
        return build()
    return current().cached(key, build, encode, decode)


def load(key: str) -> bytes | None:
    """The payload stored for ``key`` (None: missing, corrupt (warned), or the cache is off)."""
    return None if disabled_by_env() else current().load(key)


def store(key: str, payload: bytes) -> bool:
    """Store ``payload`` for ``key`` atomically; False where not stored."""
    return False if disabled_by_env() else current().store(key, payload)


def lock(key: str, timeout: float = LOCK_TIMEOUT):
    """Context manager: the cross-process lock of ``key`` (yields whether it was taken)."""
    return current().lock(key, timeout)
