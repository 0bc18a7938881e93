"""Activations and normalized exponentials: sigmoid, tanh, relu, leaky_relu, elu, gelu, softplus,
softmax, log_softmax. Each is written to stay finite for any finite input."""

from __future__ import annotations

import math

from prunus import dtypes
from prunus.errors import ArgumentError
from prunus.ops._util import Elementwise, norm_dim
from prunus.ops.elementwise import exp, where


def _floating(x):
    return x if x.dtype.is_floating_point else x.to(dtypes.get_default_dtype())


class Sigmoid(Elementwise):
    def forward(self, a):
        xp = self.xp
        # exp of -|a| never overflows; pick the algebraically equal form for each sign
        e = xp.exp(-xp.abs(a))
        self.out = xp.where(a >= 0, 1 / (1 + e), e / (1 + e)).astype(a.dtype, copy=False)
        return self.out

    def backward(self, g):
        y = self.output()
        return g * y * (1 - y)


class Tanh(Elementwise):
    def forward(self, a):
        self.out = self.xp.tanh(a)
        return self.out

    def forward_into(self, out, a):  # the same result written over a dead input's buffer
        self.out = self.xp.tanh(a, out=out)
        return self.out

    def backward(self, g):
        y = self.output()
        return g * (1 - y * y)


class ReLU(Elementwise):
    def forward(self, a):
        return self.xp.maximum(a, 0)

    def forward_into(self, out, a):
        return self.xp.maximum(a, 0, out=out)

    def backward(self, g):
        return ReLUGrad.apply(g, self.inputs[0])


class ReLUGrad(Elementwise):
    """g where x > 0, else 0: ReLU's backward as one primitive (it runs once per ReLU per step;
    as `g * (x > 0)` it was four ops). Linear in g, so its own gradient is itself."""

    def forward(self, g, x):
        return g * (x > 0)

    def forward_into(self, out, g, x):
        return self.xp.multiply(g, x > 0, out=out)

    def backward(self, gg):
        return ReLUGrad.apply(gg, self.inputs[1]), None


class LeakyReLU(Elementwise):
    def forward(self, a, slope):
        self.slope = slope
        return self.xp.where(a > 0, a, a * a.dtype.type(slope))

    def backward(self, g):
        return where(self.inputs[0] > 0, g, g * self.slope)


class ELU(Elementwise):
    def forward(self, a, alpha):
        self.alpha = alpha
        xp = self.xp
        neg = xp.expm1(xp.minimum(a, 0)) * a.dtype.type(alpha)
        return xp.where(a > 0, a, neg)

    def backward(self, g):
        x = self.inputs[0]
        return where(x > 0, g, g * self.alpha * exp(x.clamp(max=0)))


class GELU(Elementwise):
    """x * Phi(x), Phi the standard normal CDF (approximate='tanh' uses PyTorch's tanh form)."""

    def forward(self, a, approximate):
        self.approximate = approximate
        xp = self.xp
        if approximate == "tanh":
            inner = math.sqrt(2 / math.pi) * (a + 0.044715 * a**3)
            return (0.5 * a * (1 + xp.tanh(inner))).astype(a.dtype, copy=False)
        cdf = 0.5 * (1 + self.device.kernels.erf(a * a.dtype.type(1 / math.sqrt(2))))
        return (a * cdf).astype(a.dtype, copy=False)

    def backward(self, g):
        x = self.inputs[0]
        if self.approximate == "tanh":
            c = math.sqrt(2 / math.pi)
            u = c * (x + 0.044715 * x * x * x)
            t = u.tanh()
            du = c * (1 + 3 * 0.044715 * x * x)
            return g * (0.5 * (1 + t) + 0.5 * x * (1 - t * t) * du)
        cdf = 0.5 * (1 + erf(x * (1 / math.sqrt(2))))
        pdf = exp(x * x * -0.5) * (1 / math.sqrt(2 * math.pi))
        return g * (cdf + x * pdf)


class Erf(Elementwise):
    def forward(self, a):
        return self.device.kernels.erf(a)

    def backward(self, g):
        x = self.inputs[0]
        return g * (2 / math.sqrt(math.pi)) * exp(-(x * x))


def erf(x):
    return Erf.apply(_floating(x))


class Softplus(Elementwise):
    """log(1 + exp(beta x)) / beta, as max(z, 0) + log1p(exp(-|z|)): finite everywhere."""

    def forward(self, a, beta):
        self.beta = beta
        xp = self.xp
        z = a * a.dtype.type(beta)
        out = xp.maximum(z, 0) + xp.log1p(xp.exp(-xp.abs(z)))
        return (out / a.dtype.type(beta)).astype(a.dtype, copy=False)

    def backward(self, g):
        return g * (self.inputs[0] * self.beta).sigmoid()


def sigmoid(x):
    return Sigmoid.apply(_floating(x))


def tanh(x):
    return Tanh.apply(_floating(x))


def relu(x):
    return ReLU.apply(x)


def leaky_relu(x, negative_slope=0.01):
    return LeakyReLU.apply(_floating(x), slope=float(negative_slope))


def elu(x, alpha=1.0):
    return ELU.apply(_floating(x), alpha=float(alpha))


def gelu(x, approximate="none"):
    if approximate not in ("none", "tanh"):
        raise ArgumentError(f"gelu: approximate must be 'none' or 'tanh', got {approximate!r}")
    return GELU.apply(_floating(x), approximate=approximate)


def softplus(x, beta=1.0):
    return Softplus.apply(_floating(x), beta=float(beta))


class Softmax(Elementwise):
    def forward(self, a, dim):
        self.dim = dim
        xp = self.xp
        e = xp.exp(a - a.max(axis=dim, keepdims=True))
        e /= e.sum(axis=dim, keepdims=True)
        self.out = e
        return e

    def backward(self, g):
        y = self.output()
        return y * (g - (g * y).sum(self.dim, keepdim=True))


class LogSoftmax(Elementwise):
    def forward(self, a, dim):
        self.dim = dim
        xp = self.xp
        shifted = a - a.max(axis=dim, keepdims=True)
        shifted -= xp.log(xp.exp(shifted).sum(axis=dim, keepdims=True))
        self.out = shifted
        return shifted

    def backward(self, g):
        return g - self.output().exp() * g.sum(self.dim, keepdim=True)


def _dim_for(x, dim, op):
    if dim is None:  # PyTorch's legacy implicit choice; say it explicitly
        dim = 0 if x.ndim in (0, 1, 3) else 1
    return norm_dim(dim, x.ndim, op, x.shape)


def softmax(x, dim=None):
    x = _floating(x)
    return Softmax.apply(x, dim=_dim_for(x, dim, "softmax"))


def log_softmax(x, dim=None):
    x = _floating(x)
    return LogSoftmax.apply(x, dim=_dim_for(x, dim, "log_softmax"))
