"""The in-memory compile cache: one compile per key, shared, thread-safe, bounded."""
import threading

import numpy as np

import ufuncgen as ug
from ufuncgen.memcache import LOOPS, BoundedCache


def test_same_formula_compiles_once_across_objects_and_spellings():
    before = LOOPS.info()["compiles"]
    f = ug.ufunc("arcsin(x) + 0.25")
    g = ug.ufunc("asin(x) + 0.25")  # another spelling of the same canonical formula
    x = np.linspace(-1, 1, 9)
    np.testing.assert_allclose(f(x), g(x))
    f(x)
    assert LOOPS.info()["compiles"] - before == 1
    f(x.astype(np.float32))
    assert LOOPS.info()["compiles"] - before == 2


def test_eight_threads_asking_for_a_new_formula_cause_one_compile():
    before = LOOPS.info()["compiles"]
    f = ug.ufunc("cosh(x) * 3 + 0.125")
    x = np.linspace(0, 1, 100)
    barrier = threading.Barrier(8)
    results, errors = [], []

    def work():
        try:
            barrier.wait()
            results.append(f(x))
        except Exception as err:  # pragma: no cover - reported below
            errors.append(err)

    threads = [threading.Thread(target=work) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert LOOPS.info()["compiles"] - before == 1
    for r in results:
        np.testing.assert_allclose(r, np.cosh(x) * 3 + 0.125)


def test_bounded_cache_evicts_least_recently_used():
    c = BoundedCache(maxsize=3)
    for k in "abcd":
        c.get_or_build(k, lambda k=k: k.upper())
    assert len(c) == 3 and c.get("a") is None and c.get("d") == "D"
    assert c.info()["compiles"] == 4


def test_a_failed_build_is_not_cached_and_can_be_retried():
    c = BoundedCache()
    calls = []

    def bad():
        calls.append(1)
        raise RuntimeError("boom")

    for _ in range(2):
        try:
            c.get_or_build("k", bad)
        except RuntimeError:
            pass
    assert len(calls) == 2 and c.get("k") is None


def test_clear_cache_empties_every_named_memory_cache():
    from ufuncgen.memcache import CACHES
    extra = BoundedCache(name="test-extra")
    try:
        extra.get_or_build("k", lambda: 1)
        assert ug.cache_info()["memory_caches"]["test-extra"]["entries"] == 1
        ug.clear_cache(disk=False)
        assert len(extra) == 0 and len(LOOPS) == 0
    finally:
        CACHES.pop("test-extra", None)
