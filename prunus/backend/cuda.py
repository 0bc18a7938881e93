"""CUDA kernels on CuPy, imported only when a tensor first asks for 'cuda'.

Without CuPy or without a GPU, `cupy_module` raises one DeviceUnavailableError telling the user what
to install; nothing else in prunus imports CuPy.
"""

from __future__ import annotations

import numpy as np

from prunus.errors import DeviceUnavailableError

_cupy = None


def cupy_module(index: int):
    global _cupy
    if _cupy is None:
        try:
            import cupy
        except ImportError as e:
            raise DeviceUnavailableError(
                "device 'cuda' needs CuPy and an NVIDIA GPU: pip install 'prunus[cuda]' "
                f"(CuPy import failed: {e})"
            ) from None
        try:
            count = cupy.cuda.runtime.getDeviceCount()
        except Exception as e:  # noqa: BLE001  (CuPy raises its own CUDARuntimeError without a driver)
            raise DeviceUnavailableError(f"device 'cuda': CuPy found no usable GPU ({e})") from None
        if count == 0:
            raise DeviceUnavailableError("device 'cuda': CuPy is installed but sees no GPU")
        _cupy = cupy
    count = _cupy.cuda.runtime.getDeviceCount()
    if index >= count:
        raise DeviceUnavailableError(f"device 'cuda:{index}' does not exist; this machine has {count} GPU(s)")
    if index != 0:
        _cupy.cuda.Device(index).use()
    return _cupy


def to_numpy(a) -> np.ndarray:
    return _cupy.asnumpy(a)


def from_numpy(a: np.ndarray):
    return _cupy.asarray(a)


def scatter_add(dst, index, src) -> None:
    import cupyx

    cupyx.scatter_add(dst, index, src)


def erf(x):
    from cupyx.scipy.special import erf as _erf

    return _erf(x)


def parallel_for(fn, n: int, grain: int = 1, if_owned: bool = False) -> None:
    """The GPU parallelizes inside each kernel: run the whole range at once."""
    fn(0, n)
