"""Shared test settings.

Compiled loops are shared through ufuncgen's in-memory cache (process-wide), so tests that build
the same formula for the same dtypes compile it once per session.  The disk cache is pointed at a
per-session temporary directory so tests never touch the user's cache.
"""
import os
import tempfile

import pytest

_CACHE_DIR = tempfile.mkdtemp(prefix="ufuncgen-test-cache-")
os.environ.setdefault("UFUNCGEN_CACHE_DIR", _CACHE_DIR)

TARGETS = ("cpu", "parallel")


@pytest.fixture(params=TARGETS)
def target(request):
    return request.param
