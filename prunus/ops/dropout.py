"""Dropout as a primitive: the mask is drawn when the op runs, from the generator it names, so a
captured graph draws a fresh mask on every run instead of freezing the one it saw while tracing.
"""

from __future__ import annotations

from prunus.autograd import Op
from prunus.random import numpy_generator
from prunus.tensor import Tensor


class Dropout(Op):
    """x * mask / (1 - p), mask ~ Bernoulli(1 - p) per element (inverted dropout)."""

    saves_inputs = False  # backward needs only the mask it drew

    def forward(self, x, p, generator):
        keep = numpy_generator(generator).random(x.shape) >= p
        scale = keep.astype(x.dtype) * x.dtype.type(1.0 / (1.0 - p))
        self.scale = self.device.kernels.from_numpy(scale)
        return x * self.scale

    def backward(self, g):
        return g * Tensor._make(self.scale, self.device, False, None)
