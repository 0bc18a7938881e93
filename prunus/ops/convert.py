"""Conversions that keep the graph: dtype casts and moves between devices.

The gradient of a cast is cast back, so a float32 leaf used in float64 math gets a float32 grad.
"""

from __future__ import annotations

from prunus.autograd import Op


class Cast(Op):
    saves_inputs = False  # backward needs only shapes

    def forward(self, a, dtype):
        return a.astype(dtype.np)

    def backward(self, g):
        return Cast.apply(g, dtype=self.inputs[0].dtype)


class ToDevice(Op):
    saves_inputs = False  # backward needs only shapes

    def forward(self, a, device):
        src, self.out_device = self.device, device
        return device.kernels.from_numpy(src.kernels.to_numpy(a))

    def backward(self, g):
        return to_device(g, self.inputs[0].device)


def cast(x, dtype):
    if x.requires_grad and not dtype.is_floating_point:
        # the result is integer: it can't carry a gradient, so cut it from the graph
        from prunus.autograd import no_grad

        with no_grad():
            return Cast.apply(x, dtype=dtype)
    return Cast.apply(x, dtype=dtype)


def to_device(x, device):
    out = ToDevice.apply(x, device=device)
    out.device = device  # between two GPUs the array type alone does not tell the device
    return out

