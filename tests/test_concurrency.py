"""Eight threads compiling and calling formulas: results are right and each key compiles once.

``ufuncgen.memcache.LOOPS`` is process-wide and single-flight: the first thread to ask for a key
builds it while the others wait on that key.  Every test uses formulas no other test compiles (a
fresh constant in the text), so the compile counter it reads is its own.  Processes sharing a
cache directory are the disk cache's tests.
"""
from __future__ import annotations

import itertools
import threading

import numpy as np
import pytest

import ufuncgen as ug
from ufuncgen.errors import FormulaError
from ufuncgen.formula import make_formula
from ufuncgen.memcache import LOOPS

THREADS = 8
_fresh = itertools.count(1)


def fresh() -> str:
    """A constant no other test uses, so the formula's cache key is new."""
    return f"{next(_fresh) * 1e-3 + 0.123456789:.9f}"


def compiles() -> int:
    return LOOPS.info()["compiles"]


def run_threads(work, n=THREADS):
    """Run work(i) in n threads started together; re-raise the first failure."""
    barrier = threading.Barrier(n)
    results, errors = [None] * n, []

    def body(i):
        try:
            barrier.wait()
            results[i] = work(i)
        except BaseException as err:  # noqa: BLE001 - reported below
            errors.append(err)

    threads = [threading.Thread(target=body, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert not any(t.is_alive() for t in threads), "a thread hung"
    if errors:
        raise errors[0]
    return results


def data(i, n=1000, dtype=np.float64):
    rng = np.random.default_rng(i)
    return rng.uniform(-2, 2, n).astype(dtype), rng.uniform(0.5, 2, n).astype(dtype)


def test_same_formula_eight_new_objects_one_compile(target):
    c = fresh()
    text = f"sin(x)*{c} + y**2"
    before = compiles()

    def work(i):
        x, y = data(i)
        f = ug.ufunc(text, target=target)
        np.testing.assert_allclose(f(x, y), np.sin(x) * float(c) + y ** 2, rtol=1e-12)
        return f

    run_threads(work)
    assert compiles() - before == 1


def test_one_object_first_called_by_eight_threads(target):
    c = fresh()
    f = ug.ufunc(f"exp(-x*x)*{c} - y", target=target)
    before = compiles()

    def work(i):
        dtype = (np.float32, np.float64)[i % 2]
        x, y = data(i, dtype=dtype)
        got = f(x, y)
        assert got.dtype == dtype
        want = (np.exp(-x * x) * dtype(float(c)) - y).astype(dtype)
        np.testing.assert_allclose(got, want, rtol=1e-5 if dtype == np.float32 else 1e-12)

    run_threads(work)
    assert compiles() - before == 2  # one per input dtype
    assert sorted(f.types) == ["dd->d", "ff->f"]


def test_different_formulas_in_eight_threads():
    consts = [fresh() for _ in range(THREADS)]
    before = compiles()

    def work(i):
        x, y = data(i)
        f = ug.ufunc(f"x*{consts[i]} + cos(y)")
        np.testing.assert_allclose(f(x, y), x * float(consts[i]) + np.cos(y), rtol=1e-12)

    run_threads(work)
    assert compiles() - before == THREADS


def test_mixed_formulas_and_dtypes_compile_each_key_once(target):
    consts = [fresh() for _ in range(4)]
    texts = [f"x*{c} + y" for c in consts[:2]] + [f"hypot(x, y) - {c}" for c in consts[2:]]
    refs = [lambda x, y, c=float(consts[0]): x * c + y, lambda x, y, c=float(consts[1]): x * c + y,
            lambda x, y, c=float(consts[2]): np.hypot(x, y) - c, lambda x, y, c=float(consts[3]): np.hypot(x, y) - c]
    ufuncs = [ug.ufunc(t, target=target) for t in texts]
    before = compiles()

    def work(i):
        order = list(range(4))[i % 4:] + list(range(4))[:i % 4]  # each thread its own order
        for k in order:
            for dtype in ((np.float64, np.float32) if i % 2 else (np.float32, np.float64)):
                x, y = data(i, dtype=dtype)
                got = ufuncs[k](x, y)
                assert got.dtype == dtype
                np.testing.assert_allclose(got, refs[k](x, y).astype(dtype), rtol=1e-5 if dtype == np.float32 else 1e-12)

    run_threads(work)
    assert compiles() - before == 8  # 4 formulas x 2 dtypes


def test_parallel_target_called_from_eight_threads_at_once():
    """The parallel target's thread pool is shared: calls from many threads still get their own results."""
    c = fresh()
    f = ug.ufunc(f"x*x*{c} + y", target="parallel")
    f(*data(0, n=10))

    def work(i):
        x, y = data(i, n=200_000)
        for _ in range(3):
            np.testing.assert_allclose(f(x, y), x * x * float(c) + y, rtol=1e-12)
            out = np.empty_like(x)
            f(x, y, out=out)
            np.testing.assert_allclose(out, x * x * float(c) + y, rtol=1e-12)

    run_threads(work)


def test_parsing_in_eight_threads_matches_parsing_in_one():
    texts = ["sin(x)**2 + a*exp(-y)", "where(x > 0, x, -x) + Max(x, y, 1)", "x // 3 + x % 2 - 1e3*y",
             "Piecewise((x, x > 0), (y, True))", "log(x, 2) + atan2(y, x)", "(x+1)**100000", "gamma(10**9)*x",
             "exp(exp(1000))*x + floor(exp(700))", "x/3 + x/5 + x/7 - y*2/3", "sqrt(8*x)*sqrt(2*y)"]
    want = [make_formula(t).canonical() for t in texts]

    def work(i):
        return [make_formula(t).canonical() for t in texts[i % 3:] + texts[:i % 3]]

    for i, got in enumerate(run_threads(work)):
        assert got == want[i % 3:] + want[:i % 3]


def test_a_failing_build_does_not_block_or_poison_other_threads():
    """atan2 refuses complex input: the threads that ask for that loop all get TypeError, the
    others compile, and a later call asks again (a failure is not cached as a result)."""
    c = fresh()
    f = ug.ufunc(f"atan2(x, y) + {c}")
    before = compiles()

    def work(i):
        if i % 2:
            with pytest.raises(TypeError):
                f(np.ones(3, np.complex128), np.ones(3, np.complex128))
            return None
        x, y = data(i)
        np.testing.assert_allclose(f(x, y), np.arctan2(x, y) + float(c), rtol=1e-12)
        return None

    run_threads(work)
    assert compiles() - before == 1
    with pytest.raises(TypeError):
        f(np.ones(3, np.complex128), np.ones(3, np.complex128))


def test_hostile_input_in_some_threads_while_others_compile():
    c = fresh()
    hostile = ["9**9**9**9", "(" * 49_999 + "x" + ")" * 49_999, "__import__('os')", "(2*x)**(10**9)"]
    before = compiles()

    def work(i):
        if i % 2:
            with pytest.raises(FormulaError):
                ug.ufunc(hostile[i // 2 % len(hostile)])
            return
        x, y = data(i)
        f = ug.ufunc(f"x - y*{c}")
        np.testing.assert_allclose(f(x, y), x - y * float(c), rtol=1e-12)

    run_threads(work)
    assert compiles() - before == 1
