"""Making tensors: `tensor`, `from_numpy`, and the factories zeros/ones/full/empty/arange/
linspace/eye, the random ones rand/randn/randint/randperm, and their *_like forms."""

from __future__ import annotations

import math

import numpy as np

from prunus import dtypes
from prunus.backend import get_device
from prunus.errors import ArgumentError, DTypeError, ShapeError
from prunus.random import numpy_generator
from prunus.tensor import Tensor


def _to_array(data, dtype, dev):
    """Host data -> a backend array of the right dtype on `dev` (always a copy)."""
    if isinstance(data, Tensor):
        arr = data.device.kernels.to_numpy(data.data)
    elif isinstance(data, (np.ndarray, np.generic)):  # NumPy scalars keep their dtype too (PyTorch)
        arr = np.asarray(data)
    else:
        try:
            arr = np.array(data)
        except ValueError as e:
            raise ShapeError(f"tensor: data is not rectangular (ragged nested sequences): {e}") from None
        if arr.dtype == object:
            raise DTypeError(f"tensor: cannot make a tensor from {type(data).__name__} data")
        if dtype is None:  # Python numbers: float -> default float, int -> int64 (as PyTorch)
            if arr.dtype.kind == "f":
                dtype = dtypes.get_default_dtype()
            elif arr.dtype.kind in "iu":
                dtype = dtypes.int64
    d = dtypes.as_dtype(dtype) if dtype is not None else dtypes.from_numpy_dtype(arr.dtype)
    arr = np.array(arr, dtype=d.np, copy=True)
    return dev.kernels.from_numpy(arr)


def tensor(data, dtype=None, device=None, requires_grad=False) -> Tensor:
    """A new tensor holding a copy of `data` (nested lists, numbers, NumPy arrays, tensors).

    Python floats become the default float dtype (float32), ints int64; NumPy arrays and NumPy
    scalars keep their dtype.
    """
    return Tensor(data, dtype=dtype, device=device, requires_grad=requires_grad)


def as_tensor(data, dtype=None, device=None) -> Tensor:
    if isinstance(data, Tensor) and (dtype is None or dtypes.as_dtype(dtype) is data.dtype) and (
        device is None or get_device(device) is data.device
    ):
        return data
    return tensor(data, dtype=dtype, device=device)


def from_numpy(a: np.ndarray) -> Tensor:
    """A CPU tensor sharing memory with the NumPy array `a`."""
    if not isinstance(a, np.ndarray):
        raise DTypeError(f"from_numpy: expected a numpy.ndarray, got {type(a).__name__}")
    dtypes.from_numpy_dtype(a.dtype)
    return Tensor._make(a, get_device("cpu"), False, None)


def _shape(size, op):
    if len(size) == 1 and isinstance(size[0], (tuple, list)):
        size = tuple(size[0])
    for s in size:
        if not isinstance(s, (int, np.integer)) or isinstance(s, bool):
            raise DTypeError(f"{op}: sizes must be ints, got {type(s).__name__} {s!r}")
        if s < 0:
            raise ArgumentError(f"{op}: negative dimension {s} in size {tuple(size)}")
    return tuple(int(s) for s in size)


def _finish(arr, dev, requires_grad):
    t = Tensor._make(arr, dev, False, None)
    return t.requires_grad_(True) if requires_grad else t


def _filled(fill, size, dtype, device, requires_grad, op):
    dev = get_device(device)
    d = dtypes.as_dtype(dtype) if dtype is not None else dtypes.get_default_dtype()
    return _finish(dev.xp.full(_shape(size, op), fill, dtype=d.np), dev, requires_grad)


def zeros(*size, dtype=None, device=None, requires_grad=False) -> Tensor:
    return _filled(0, size, dtype, device, requires_grad, "zeros")


def ones(*size, dtype=None, device=None, requires_grad=False) -> Tensor:
    return _filled(1, size, dtype, device, requires_grad, "ones")


def empty(*size, dtype=None, device=None, requires_grad=False) -> Tensor:
    dev = get_device(device)
    d = dtypes.as_dtype(dtype) if dtype is not None else dtypes.get_default_dtype()
    return _finish(dev.xp.empty(_shape(size, "empty"), dtype=d.np), dev, requires_grad)


def full(size, fill_value, dtype=None, device=None, requires_grad=False) -> Tensor:
    if dtype is None:
        dtype = dtypes.result_type(fill_value)
    return _filled(fill_value, (size,) if isinstance(size, int) else tuple(size), dtype, device, requires_grad, "full")


def _like(x, dtype, device):
    return (x.dtype if dtype is None else dtype), (x.device if device is None else device)


def zeros_like(x, dtype=None, device=None, requires_grad=False) -> Tensor:
    d, dev = _like(x, dtype, device)
    return zeros(x.shape, dtype=d, device=dev, requires_grad=requires_grad)


def ones_like(x, dtype=None, device=None, requires_grad=False) -> Tensor:
    d, dev = _like(x, dtype, device)
    return ones(x.shape, dtype=d, device=dev, requires_grad=requires_grad)


def full_like(x, fill_value, dtype=None, device=None, requires_grad=False) -> Tensor:
    d, dev = _like(x, dtype, device)
    return full(x.shape, fill_value, dtype=d, device=dev, requires_grad=requires_grad)


def empty_like(x, dtype=None, device=None, requires_grad=False) -> Tensor:
    d, dev = _like(x, dtype, device)
    return empty(x.shape, dtype=d, device=dev, requires_grad=requires_grad)


def arange(start, end=None, step=1, dtype=None, device=None, requires_grad=False) -> Tensor:
    if end is None:
        start, end = 0, start
    if step == 0:
        raise ArgumentError("arange: step must be nonzero")
    if dtype is None:
        dtype = dtypes.result_type(start, end, step)
    d = dtypes.as_dtype(dtype)
    n = max(0, math.ceil((end - start) / step))
    dev = get_device(device)
    arr = (np.arange(n, dtype=np.float64) * step + start).astype(d.np) if d.is_floating_point else np.arange(start, end, step, dtype=d.np)
    return _finish(dev.kernels.from_numpy(arr), dev, requires_grad)


def linspace(start, end, steps, dtype=None, device=None, requires_grad=False) -> Tensor:
    if not isinstance(steps, int) or steps < 0:
        raise ArgumentError(f"linspace: steps must be a non-negative int, got {steps!r}")
    d = dtypes.as_dtype(dtype) if dtype is not None else dtypes.get_default_dtype()
    dev = get_device(device)
    arr = np.linspace(start, end, steps, dtype=np.float64).astype(d.np)
    return _finish(dev.kernels.from_numpy(arr), dev, requires_grad)


def eye(n, m=None, dtype=None, device=None, requires_grad=False) -> Tensor:
    if n < 0 or (m is not None and m < 0):
        raise ArgumentError(f"eye: sizes must be non-negative, got n={n}, m={m}")
    d = dtypes.as_dtype(dtype) if dtype is not None else dtypes.get_default_dtype()
    dev = get_device(device)
    return _finish(dev.xp.eye(n, m, dtype=d.np), dev, requires_grad)


# -- random ----------------------------------------------------------------------------------


def _random(draw, size, dtype, device, requires_grad, op):
    d = dtypes.as_dtype(dtype) if dtype is not None else dtypes.get_default_dtype()
    if not d.is_floating_point:
        raise DTypeError(f"{op}: needs a floating dtype, got {d.name}")
    shape = _shape(size, op)
    native = d.np if d.np in (np.float32, np.float64) else np.float32
    arr = draw(shape, native).astype(d.np, copy=False)
    dev = get_device(device)
    return _finish(dev.kernels.from_numpy(arr), dev, requires_grad)


def rand(*size, generator=None, dtype=None, device=None, requires_grad=False) -> Tensor:
    """Uniform on [0, 1)."""
    g = numpy_generator(generator)
    return _random(lambda s, d: g.random(s, dtype=d), size, dtype, device, requires_grad, "rand")


def randn(*size, generator=None, dtype=None, device=None, requires_grad=False) -> Tensor:
    """Standard normal."""
    g = numpy_generator(generator)
    return _random(lambda s, d: g.standard_normal(s, dtype=d), size, dtype, device, requires_grad, "randn")


def randint(low, high=None, size=None, generator=None, dtype=None, device=None) -> Tensor:
    """Integers uniform on [low, high); randint(high, size) starts at 0, as in PyTorch."""
    if high is None or (size is None and isinstance(high, (tuple, list))):
        if size is None and isinstance(high, (tuple, list)):
            low, high, size = 0, low, high
        else:
            low, high = 0, low
    if size is None:
        raise ArgumentError("randint: size is required, e.g. randint(0, 10, (3,))")
    if high <= low:
        raise ArgumentError(f"randint: empty range [{low}, {high})")
    d = dtypes.as_dtype(dtype) if dtype is not None else dtypes.int64
    dev = get_device(device)
    arr = numpy_generator(generator).integers(low, high, _shape((size,) if isinstance(size, int) else tuple(size), "randint"))
    return _finish(dev.kernels.from_numpy(arr.astype(d.np)), dev, False)


def randperm(n, generator=None, dtype=None, device=None) -> Tensor:
    d = dtypes.as_dtype(dtype) if dtype is not None else dtypes.int64
    dev = get_device(device)
    return _finish(dev.kernels.from_numpy(numpy_generator(generator).permutation(n).astype(d.np)), dev, False)


def rand_like(x, generator=None, dtype=None, device=None, requires_grad=False) -> Tensor:
    d, dev = _like(x, dtype, device)
    return rand(x.shape, generator=generator, dtype=d, device=dev, requires_grad=requires_grad)


def randn_like(x, generator=None, dtype=None, device=None, requires_grad=False) -> Tensor:
    d, dev = _like(x, dtype, device)
    return randn(x.shape, generator=generator, dtype=d, device=dev, requires_grad=requires_grad)
