"""Intra-op parallelism on the CPU: prunus's thread count, and running a kernel over index ranges.

NumPy's ufuncs, copies and strided views run on one thread; only its BLAS is threaded. Convolution
and pooling kernels are mostly copies and elementwise passes, so the CPU backend splits their batch
into one range per thread and runs the ranges on a pool of workers (NumPy releases the GIL inside
those loops and inside BLAS calls).

prunus's workers and OpenBLAS's cannot share the cores: after each call OpenBLAS's workers spin
for about 0.1 s waiting for the next one, and a spinning worker takes a core from prunus's. So
the first time prunus splits a kernel it limits BLAS to one thread per call, and keeps it so until
`set_num_threads` is called (which gives BLAS back its own count). Measured on LeNet-5 training
(float32, batch 128, two cores): 37 ms per step unsplit with two BLAS threads, 43 ms split while
OpenBLAS spins, 28 ms split with one BLAS thread. A model without convolutions never splits, so
its matrix products keep BLAS's threads (an MLP step: 1.7 ms with two BLAS threads, 2.1 with one).
A split costs about 0.1 ms to wake the workers here, so only kernels of a millisecond or more
split.

BLAS threads are set through threadpoolctl (a core dependency; without it nothing is split).
"""

from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor

from prunus.errors import ArgumentError

_lock = threading.Lock()
_local = threading.local()  # .inside: this thread is running one range of a parallel_for
_num_threads: int | None = None
_pool: ThreadPoolExecutor | None = None
_pool_size = 0
_blas = None  # threadpoolctl's controllers for the loaded BLAS libraries, or False without it
_saved: list | None = None  # BLAS thread counts before prunus limited them, while it does


def _default_threads() -> int:
    for var in ("PRUNUS_NUM_THREADS", "OMP_NUM_THREADS"):
        v = os.environ.get(var, "")
        if v.strip().isdigit() and int(v) > 0:
            return int(v)
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def get_num_threads() -> int:
    """Threads prunus's own CPU kernels use (PRUNUS_NUM_THREADS, OMP_NUM_THREADS, else the CPUs
    this process may run on)."""
    global _num_threads
    if _num_threads is None:
        _num_threads = _default_threads()
    return _num_threads


def set_num_threads(n: int) -> None:
    """Set the threads of prunus's CPU kernels (PyTorch's name); 1 turns the splitting off.

    BLAS gets back the thread count it had before prunus first split a kernel."""
    global _num_threads
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ArgumentError(f"set_num_threads: expected a positive int, got {n!r}")
    _num_threads = n
    _restore_blas()


def _workers(k: int) -> ThreadPoolExecutor:
    global _pool, _pool_size
    with _lock:
        if _pool is None or _pool_size < k:
            if _pool is not None:
                _pool.shutdown(wait=False)
            _pool = ThreadPoolExecutor(k, thread_name_prefix="prunus-cpu")
            _pool_size = k
        return _pool


def _blas_limiter():
    global _blas
    if _blas is None:
        try:
            from threadpoolctl import ThreadpoolController
        except ImportError:  # pragma: no cover - threadpoolctl is a core dependency
            _blas = False
        else:
            _blas = ThreadpoolController().select(user_api="blas").lib_controllers
    return _blas


def _limit_blas(blas) -> None:
    """BLAS runs one thread per call from now on (until set_num_threads)."""
    global _saved
    with _lock:
        if _saved is None:
            _saved = [lib.num_threads for lib in blas]
            for lib in blas:
                lib.set_num_threads(1)


def _restore_blas() -> None:
    global _saved
    with _lock:
        if _saved is not None and _blas:
            for lib, n in zip(_blas, _saved):
                lib.set_num_threads(n)
        _saved = None


def _run(fn, lo, hi):
    _local.inside = True
    try:
        fn(lo, hi)
    finally:
        _local.inside = False


def parallel_for(fn, n: int, grain: int = 1, if_owned: bool = False) -> None:
    """Call fn(lo, hi) over contiguous ranges covering [0, n), in parallel when it pays.

    Ranges have at least `grain` items; the calling thread runs the first one. Calls from inside a
    range run whole (no nesting). `if_owned`: split only if prunus already holds the threads (a
    kernel not worth taking them from BLAS: the optimizer update of an MLP measured no faster
    split while OpenBLAS's workers spin after the backward pass). Ranges are fixed by n and the thread count, so results don't
    depend on timing. An exception in any range is raised here after all ranges finish.
    """
    k = min(get_num_threads(), n // max(grain, 1))
    if k <= 1 or getattr(_local, "inside", False) or (if_owned and _saved is None):
        fn(0, n)
        return
    blas = _blas_limiter()
    if blas is False:
        fn(0, n)
        return
    bounds = [n * i // k for i in range(k + 1)]
    if _saved is None:
        _limit_blas(blas)
    futures = [_workers(k - 1).submit(_run, fn, bounds[i], bounds[i + 1]) for i in range(1, k)]
    try:
        _run(fn, bounds[0], bounds[1])
    finally:
        for f in futures:  # wait for every range before the buffers go back to the caller
            f.exception()
    for f in futures:
        f.result()
