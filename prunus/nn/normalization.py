"""Normalization layers: BatchNorm1d/BatchNorm2d (batch statistics in training, running ones in
eval, updated in place under no_grad) and LayerNorm."""

from __future__ import annotations

from prunus import dtypes
from prunus.creation import ones, zeros
from prunus.nn import functional as F
from prunus.nn.module import Module, Parameter, check_input


class _BatchNorm(Module):
    _ndims: tuple = ()
    _what = ""

    def __init__(self, num_features: int, eps: float = 1e-5, momentum=0.1, affine: bool = True,
                 track_running_stats: bool = True, device=None, dtype=None, *, bias: bool = True):
        super().__init__()
        self.num_features, self.eps, self.momentum = int(num_features), eps, momentum
        self.affine, self.track_running_stats = affine, track_running_stats
        dt = dtypes.as_dtype(dtype) if dtype is not None else dtypes.get_default_dtype()
        n = self.num_features
        if affine:
            self.weight = Parameter(ones(n, dtype=dt, device=device))
            if bias:
                self.bias = Parameter(zeros(n, dtype=dt, device=device))
            else:
                self.register_parameter("bias", None)
        else:
            self.register_parameter("weight", None)
            self.register_parameter("bias", None)
        if track_running_stats:
            self.register_buffer("running_mean", zeros(n, dtype=dt, device=device))
            self.register_buffer("running_var", ones(n, dtype=dt, device=device))
            self.register_buffer("num_batches_tracked", zeros((), dtype=dtypes.int64, device=device))
        else:
            self.register_buffer("running_mean", None)
            self.register_buffer("running_var", None)
            self.register_buffer("num_batches_tracked", None)

    def reset_running_stats(self) -> None:
        if self.track_running_stats:
            from prunus.autograd import no_grad

            with no_grad():
                self.running_mean.zero_()
                self.running_var.fill_(1.0)
                self.num_batches_tracked.zero_()

    def forward(self, x):
        check_input(self, x, self._ndims, self._what.format(c=self.num_features), dim=1 if x.ndim > 1 else None,
                    size=self.num_features)
        # batch statistics in training, and in eval when no running ones are kept
        return F.batch_norm(
            x, self.running_mean, self.running_var, self.weight, self.bias,
            training=self.training or self.running_mean is None, momentum=self.momentum,
            eps=self.eps, num_batches_tracked=self.num_batches_tracked,
        )

    def extra_repr(self) -> str:
        return (f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, affine={self.affine}, "
                f"bias={self.bias is not None}, track_running_stats={self.track_running_stats}")


class BatchNorm1d(_BatchNorm):
    """Batch normalization of (N, C) or (N, C, L) inputs over all dimensions but C."""

    _ndims = (2, 3)
    _what = "(N, {c}) or (N, {c}, L)"


class BatchNorm2d(_BatchNorm):
    """Batch normalization of (N, C, H, W) inputs over N, H and W."""

    _ndims = (4,)
    _what = "(N, {c}, H, W)"


class LayerNorm(Module):
    """Normalize over the last dimensions given by normalized_shape, then scale and shift
    elementwise (weight ones, bias zeros)."""

    def __init__(self, normalized_shape, eps: float = 1e-5, elementwise_affine: bool = True, bias: bool = True,
                 device=None, dtype=None):
        super().__init__()
        shape = (normalized_shape,) if isinstance(normalized_shape, int) else tuple(normalized_shape)
        self.normalized_shape, self.eps, self.elementwise_affine = shape, eps, elementwise_affine
        dt = dtypes.as_dtype(dtype) if dtype is not None else dtypes.get_default_dtype()
        if elementwise_affine:
            self.weight = Parameter(ones(shape, dtype=dt, device=device))
            if bias:
                self.bias = Parameter(zeros(shape, dtype=dt, device=device))
            else:
                self.register_parameter("bias", None)
        else:
            self.register_parameter("weight", None)
            self.register_parameter("bias", None)

    def forward(self, x):
        k = len(self.normalized_shape)
        if x.ndim < k or tuple(x.shape[x.ndim - k:]) != self.normalized_shape:
            from prunus.errors import ShapeError, fmt_shape

            raise ShapeError(
                f"{self!r}: expected input of shape (*, {', '.join(map(str, self.normalized_shape))}), "
                f"got {fmt_shape(x.shape)}"
            )
        return F.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)

    def extra_repr(self) -> str:
        return (f"{self.normalized_shape}, eps={self.eps}, elementwise_affine={self.elementwise_affine}, "
                f"bias={self.bias is not None}")
