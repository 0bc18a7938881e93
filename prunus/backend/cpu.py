"""CPU kernels on NumPy: the functions whose NumPy and CuPy versions differ; and the C allocator's
settings for the array sizes of training.

Ops call these through `device.kernels`, never by importing this module.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import math
import os
import platform

import numpy as np

from prunus.backend.threads import parallel_for  # noqa: F401  (a kernel: ops call kernels.parallel_for)

try:  # SciPy's erf is exact and fast; it is optional, so a series stands in without it
    from scipy.special import erf as _scipy_erf
except ImportError:  # pragma: no cover - depends on the environment
    _scipy_erf = None


def _tune_malloc() -> bool:
    """Keep freed megabyte-sized arrays in the heap instead of returning them to the kernel.

    A training step frees and reallocates the same activation-sized arrays every step. glibc's
    malloc serves them with fresh mmaps or trims them off the heap, so every step page-faults
    them in again: measured on LeNet-5 (float32, batch 128, two threads) 1,283 minor page faults
    and 28.6 ms per step; with the thresholds fixed below, 1 fault and 24-26 ms. (PyTorch's CPU
    tuning guide gets the same from preloading jemalloc or tcmalloc.) The values are glibc's own
    ceilings for its dynamic thresholds, fixed from the start. PRUNUS_MALLOC_TUNING=0 opts out.
    """
    if os.environ.get("PRUNUS_MALLOC_TUNING", "1") == "0" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        m_trim_threshold, m_mmap_threshold = -1, -3  # from glibc's malloc.h
        return bool(libc.mallopt(m_mmap_threshold, 32 << 20) and libc.mallopt(m_trim_threshold, 128 << 20))
    except (OSError, AttributeError):  # pragma: no cover - an unusual libc
        return False


MALLOC_TUNED = _tune_malloc()


def to_numpy(a) -> np.ndarray:
    return a


def from_numpy(a: np.ndarray) -> np.ndarray:
    return a


def scatter_add(dst: np.ndarray, index, src) -> None:
    """dst[index] += src, adding repeated indices (NumPy's unbuffered add.at)."""
    np.add.at(dst, index, src)


def erf(x: np.ndarray) -> np.ndarray:
    if _scipy_erf is not None:
        return _scipy_erf(x).astype(x.dtype, copy=False)
    return _erf_series(x)


def _erf_series(x: np.ndarray) -> np.ndarray:
    """erf to float64 accuracy without SciPy.

    |x| < 3: the all-positive series erf(x) = 2/sqrt(pi) exp(-x^2) sum_n 2^n x^(2n+1) / (2n+1)!!,
    which has no cancellation. |x| >= 3: 1 - erfc(x), erfc by its continued fraction, evaluated
    bottom-up with a fixed depth (enough for 1e-16 at |x| = 3, better beyond).
    """
    xd = np.asarray(x, dtype=np.float64)
    ax = np.abs(xd)
    small = np.minimum(ax, 3.0)
    term = small.copy()
    total = small.copy()
    x2 = small * small
    for n in range(1, 90):
        term = term * (2.0 * x2) / (2 * n + 1)
        total += term
    series = 2.0 / math.sqrt(math.pi) * np.exp(-x2) * total
    big = np.maximum(ax, 3.0)
    frac = np.zeros_like(big)
    for k in range(60, 0, -1):
        frac = (k / 2.0) / (big + frac)
    erfc = np.exp(-big * big) / math.sqrt(math.pi) / (big + frac)
    out = np.where(ax < 3.0, series, 1.0 - erfc)
    return (np.sign(xd) * out).astype(x.dtype, copy=False)
