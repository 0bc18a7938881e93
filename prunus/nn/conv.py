"""The Conv2d layer (NCHW, PyTorch's arguments and initialisation) over prunus.ops.conv."""

from __future__ import annotations

import math

from prunus import dtypes
from prunus.creation import empty
from prunus.errors import ArgumentError
from prunus.nn import functional as F
from prunus.nn import init
from prunus.nn.module import Module, Parameter, check_input
from prunus.ops.conv import _pair
from prunus.tensor import Tensor


class Conv2d(Module):
    """2-D convolution over (N, C_in, H, W) or (C_in, H, W) inputs.

    weight (out_channels, in_channels // groups, kh, kw) and bias (out_channels,) start as
    PyTorch's: kaiming_uniform_(a=sqrt(5)), i.e. U(-1/sqrt(fan_in), 1/sqrt(fan_in)) with
    fan_in = in_channels // groups * kh * kw, and the bias from the same range, drawn from
    `generator` (the default generator when None)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size, stride=1, padding=0, dilation=1,
                 groups: int = 1, bias: bool = True, padding_mode: str = "zeros", device=None, dtype=None,
                 generator=None):
        super().__init__()
        name = "Conv2d"
        for what, v in (("in_channels", in_channels), ("out_channels", out_channels), ("groups", groups)):
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ArgumentError(f"{name}: {what} must be a positive int, got {v!r}")
        if in_channels % groups or out_channels % groups:
            raise ArgumentError(
                f"{name}: groups={groups} must divide in_channels ({in_channels}) and out_channels "
                f"({out_channels})"
            )
        if padding_mode != "zeros":
            raise ArgumentError(f"{name}: padding_mode {padding_mode!r} is not supported; only 'zeros'")
        self.in_channels, self.out_channels, self.groups = in_channels, out_channels, groups
        self.kernel_size = _pair(kernel_size, "kernel_size", name, 1)
        self.stride = _pair(stride, "stride", name, 1)
        self.padding = padding if isinstance(padding, str) else _pair(padding, "padding", name, 0)
        self.dilation = _pair(dilation, "dilation", name, 1)
        self.padding_mode = padding_mode
        dt = dtypes.as_dtype(dtype) if dtype is not None else dtypes.get_default_dtype()
        shape = (out_channels, in_channels // groups) + self.kernel_size
        self.weight = Parameter(empty(*shape, dtype=dt, device=device))
        if bias:
            self.bias = Parameter(empty(out_channels, dtype=dt, device=device))
        else:
            self.register_parameter("bias", None)
        self.reset_parameters(generator)

    def reset_parameters(self, generator=None) -> None:
        init.kaiming_uniform_(self.weight, a=math.sqrt(5), generator=generator)
        if self.bias is not None:
            fan_in = self.weight.shape[1] * self.kernel_size[0] * self.kernel_size[1]
            bound = 1 / math.sqrt(fan_in) if fan_in > 0 else 0
            init.uniform_(self.bias, -bound, bound, generator=generator)

    def forward(self, x):
        if not isinstance(x, Tensor) or x.ndim not in (3, 4) or x.shape[-3] != self.in_channels:
            check_input(self, x, (3, 4), f"(N, {self.in_channels}, H, W)", dim=-3, size=self.in_channels)
        return F.conv2d(x, self.weight, self.bias, self.stride, self.padding, self.dilation, self.groups)

    def extra_repr(self) -> str:
        s = f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}"
        if self.padding not in ((0, 0), "valid"):
            s += f", padding={self.padding}"
        if self.dilation != (1, 1):
            s += f", dilation={self.dilation}"
        if self.groups != 1:
            s += f", groups={self.groups}"
        if self.bias is None:
            s += ", bias=False"
        return s
