"""Shared by the cross-process disk-cache tests (``test_diskcache.py``, ``test_gufunc_diskcache.py``).

Each file has its own driver script (phases that each point the cache at a folder, build formulas
and print results and counters as JSON) and its own check of the results against NumPy; here is
what they do alike: run phases in a fresh process, copy and damage cache folders, read what a
process left.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from ufuncgen import diskcache
from ufuncgen.diskcache import DiskCache

ROOT = Path(__file__).resolve().parent.parent


def driver_command(driver: str, phases: list) -> list:
    """The command line that runs ``driver`` over the phases (what a phase expects stays here)."""
    spec = [{k: v for k, v in p.items() if k != "expected"} for p in phases]
    return [sys.executable, "-c", driver, json.dumps(spec)]


def driver_env() -> dict:
    """This environment, with the checkout first on the subprocess's path."""
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def driver_outputs(phases: list, stdout: str, check_results) -> dict:
    """Phase name -> its output; every phase's results are checked with ``check_results``."""
    out = json.loads(stdout.strip().splitlines()[-1])
    for p in phases:
        check_results(out[p["name"]]["results"], p["expected"])
    return out


def run_phases(driver: str, phases: list, check_results) -> dict:
    """Run the phases in one fresh process; phase name -> its output (results already checked)."""
    proc = subprocess.run(driver_command(driver, phases), capture_output=True, text=True, env=driver_env(),
                          timeout=300)
    assert proc.returncode == 0, proc.stderr
    return driver_outputs(phases, proc.stdout, check_results)


def cache_warnings(out: dict) -> list:
    return [msg for cat, msg in out["warnings"] if cat == "CacheWarning"]


def sound_entries(cache_dir) -> dict:
    """Entry file -> True when its header and checksum hold (read by the test process itself)."""
    cache = DiskCache(cache_dir)
    out = {}
    for p in cache.entries():
        payload, problem = cache._check(p.stem, p.read_bytes())
        out[p.name] = problem is None
    return out


def corrupt(path: Path, how: str) -> str:
    """Damage an entry file; returns the words the warning must contain."""
    blob = path.read_bytes()
    header = diskcache._HEADER.size
    damage = {
        "truncated": (blob[: len(blob) // 2], "truncated"),
        "header cut": (blob[:10], "truncated"),
        "garbage": (os.urandom(len(blob)), "bad magic"),
        "empty": (b"", "truncated"),
        "bad magic": (b"NOTMAGIC" + blob[8:], "bad magic"),
        "checksum": (blob[:header + 100] + bytes([blob[header + 100] ^ 0xFF]) + blob[header + 101:], "checksum"),
        "format": (blob[:8] + (99).to_bytes(2, "little") + blob[10:], "cache format 99"),
        "foreign payload": (None, "unusable"),
    }
    data, reason = damage[how]
    if data is None:  # a sound entry whose payload is not a loop (e.g. from another ufuncgen)
        DiskCache(path.parent.parent).store(path.stem, diskcache.pack([b"not", b"a", b"loop"]))
    else:
        path.write_bytes(data)
    return reason


def copies(cache_dir: Path, base: Path, names) -> list:
    """Copies of a cache folder, one per name, under ``base``."""
    out = []
    for name in names:
        shutil.copytree(cache_dir, base / name)
        out.append(base / name)
    return out


def damage_entries(cache_dir: Path, kinds: list) -> dict:
    """Damage the first entries of a cache folder, one kind each; entry name -> words of its warning."""
    entries = sorted((cache_dir / f"v{diskcache.FORMAT}").glob("*" + diskcache.SUFFIX))
    return {p.name: corrupt(p, how) for p, how in zip(entries, kinds, strict=False)}
