"""Devices: where a tensor's array lives and which array module (`xp`) computes on it.

This package is the only place that knows NumPy and CuPy exist. A `Device` carries its array
module (`device.xp`, NumPy or CuPy) and `device.kernels`, the module of functions where the two
differ (scatter-add, erf, host transfer). `cpu` is always there; `cuda` imports CuPy lazily, on
first use, and raises one `DeviceUnavailableError` when CuPy or a GPU is missing.
"""

from __future__ import annotations

import re

from prunus.errors import DeviceError, DeviceUnavailableError


class Device:
    """A device: `type` ('cpu' or 'cuda'), `index`, its array module `xp` and its `kernels`."""

    __slots__ = ("array_type", "index", "kernels", "type", "xp")

    def __init__(self, type: str, index: int | None, xp, kernels):
        self.type = type
        self.index = index
        self.xp = xp
        self.kernels = kernels
        self.array_type = xp.ndarray

    def __copy__(self):  # a device is a singleton per (type, index): copies are itself
        return self

    def __deepcopy__(self, memo):
        return self

    def __str__(self) -> str:
        return self.type if self.index is None else f"{self.type}:{self.index}"

    def __repr__(self) -> str:
        if self.index is None:
            return f"device(type='{self.type}')"
        return f"device(type='{self.type}', index={self.index})"

    def __eq__(self, other) -> bool:
        if isinstance(other, str):
            try:
                other = get_device(other)
            except DeviceError:
                return False
        return isinstance(other, Device) and (self.type, self.index) == (other.type, other.index)

    def __hash__(self) -> int:
        return hash((self.type, self.index))


_devices: dict[str, Device] = {}
_SPEC = re.compile(r"^(cpu|cuda)(?::(\d+))?$")


def _cpu() -> Device:
    import numpy

    from prunus.backend import cpu

    return Device("cpu", None, numpy, cpu)


def _cuda(index: int) -> Device:
    from prunus.backend import cuda

    return Device("cuda", index, cuda.cupy_module(index), cuda)


def get_device(spec=None) -> Device:
    """The Device for `spec`: None or 'cpu', 'cuda', 'cuda:N', or a Device."""
    if spec is None:
        return cpu
    if isinstance(spec, Device):
        return spec
    name = str(spec)
    dev = _devices.get(name)
    if dev is not None:
        return dev
    m = _SPEC.match(name)
    if m is None:
        raise DeviceError(f"unknown device {spec!r}; expected 'cpu', 'cuda' or 'cuda:N'")
    if m.group(1) == "cpu":
        return cpu
    index = int(m.group(2) or 0)
    dev = _devices.get(f"cuda:{index}")
    if dev is None:
        dev = _cuda(index)
        _devices[f"cuda:{index}"] = dev
    _devices[name] = dev
    return dev


def cuda_is_available() -> bool:
    """True when CuPy imports and sees at least one GPU. Never raises."""
    try:
        get_device("cuda")
    except DeviceUnavailableError:
        return False
    return True


cpu = _cpu()
_devices["cpu"] = cpu
