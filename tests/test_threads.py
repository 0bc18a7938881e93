"""prunus's CPU threads: parallel_for's ranges, errors and nesting; set/get_num_threads; BLAS is
limited to one thread once prunus splits a kernel and gets its count back from set_num_threads."""

import os
import platform
import subprocess
import sys
import threading

import pytest

import prunus
from prunus.backend import threads
from prunus.errors import ArgumentError


@pytest.fixture
def nthreads():
    """Set prunus's thread count for one test; the original count (and BLAS's) come back."""
    before = prunus.get_num_threads()
    yield prunus.set_num_threads
    prunus.set_num_threads(before)


def _ranges(n, grain=1):
    seen, lock = [], threading.Lock()

    def fn(lo, hi):
        with lock:
            seen.append((lo, hi, threading.get_ident()))

    threads.parallel_for(fn, n, grain)
    return sorted(seen)


@pytest.mark.parametrize("k,n", [(2, 2), (2, 7), (3, 10), (4, 5)])
def test_ranges_cover_the_items_once_on_k_threads(nthreads, k, n):
    nthreads(k)
    seen = _ranges(n)
    assert [r[:2] for r in seen] == [(n * i // k, n * (i + 1) // k) for i in range(k)]
    me = threading.get_ident()
    assert seen[0][2] == me and all(r[2] != me for r in seen[1:])  # the caller runs the first


def test_one_thread_small_work_and_nested_calls_run_whole(nthreads):
    nthreads(1)
    assert [r[:2] for r in _ranges(100)] == [(0, 100)]
    nthreads(2)
    assert [r[:2] for r in _ranges(100, grain=60)] == [(0, 100)]  # two ranges would be < grain
    inner = []

    def outer(lo, hi):
        inner.append([r[:2] for r in _ranges(10)])

    threads.parallel_for(outer, 4)
    assert inner == [[(0, 10)], [(0, 10)]]


def test_an_error_in_any_range_is_raised_after_all_ranges_finish(nthreads):
    nthreads(3)
    done = []

    def fn(lo, hi):
        if lo == 3:
            raise ValueError("range 3")
        done.append(lo)

    with pytest.raises(ValueError, match="range 3"):
        threads.parallel_for(fn, 9)
    assert sorted(done) == [0, 6]


@pytest.mark.parametrize("bad", [0, -1, 1.5, True, "2", None])
def test_set_num_threads_rejects(bad):
    with pytest.raises(ArgumentError, match="set_num_threads"):
        prunus.set_num_threads(bad)


def test_default_thread_count_from_the_environment(monkeypatch):
    monkeypatch.setenv("PRUNUS_NUM_THREADS", "3")
    monkeypatch.setenv("OMP_NUM_THREADS", "5")
    assert threads._default_threads() == 3
    monkeypatch.delenv("PRUNUS_NUM_THREADS")
    assert threads._default_threads() == 5
    monkeypatch.setenv("OMP_NUM_THREADS", "junk")
    assert threads._default_threads() >= 1


def test_blas_runs_one_thread_after_a_split_until_set_num_threads(nthreads):
    threadpoolctl = pytest.importorskip("threadpoolctl")

    def blas_threads():
        return [lib["num_threads"] for lib in threadpoolctl.threadpool_info() if lib["user_api"] == "blas"]

    nthreads(2)
    before = blas_threads()
    if not before:
        pytest.skip("no BLAS library that threadpoolctl knows")
    threads.parallel_for(lambda lo, hi: None, 2)
    assert blas_threads() == [1] * len(before)
    nthreads(2)
    assert blas_threads() == before


def test_malloc_keeps_freed_arrays_on_glibc_unless_opted_out():
    """prunus/backend/cpu.py fixes glibc's malloc thresholds (no page faults per step)."""
    if platform.libc_ver()[0] != "glibc":
        pytest.skip("glibc only")
    code = "import importlib; print(importlib.import_module('prunus.backend.cpu').MALLOC_TUNED)"
    for env, want in (({}, "True"), ({"PRUNUS_MALLOC_TUNING": "0"}, "False")):
        out = subprocess.run([sys.executable, "-c", code], env={**os.environ, **env},
                             capture_output=True, text=True, check=True)
        assert out.stdout.strip() == want
