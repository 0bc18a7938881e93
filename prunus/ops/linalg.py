"""Matrix products: matmul for 1-D, 2-D, batched and broadcasting operands (NumPy's rules,
which are PyTorch's), plus the helpers mm/bmm/dot/outer/linear built on it."""

from __future__ import annotations

from prunus import dtypes
from prunus.autograd import Op
from prunus.errors import DTypeError, ShapeError, fmt_shape
from prunus.ops._util import broadcast_shapes, promote
from prunus.ops.movement import reshape, sum_to, transpose


class MatMul(Op):
    def forward(self, a, b):
        return a @ b

    def backward(self, g):
        a, b = self.inputs
        na, nb = self.needs_input_grad
        if a.ndim == 2 and b.ndim == 2:  # the common case (Linear layers), without reshapes
            return (g @ b.mT if na else None, a.mT @ g if nb else None)
        # lift 1-D operands to matrices, as forward did implicitly, then undo it
        a2 = reshape(a, (1, a.shape[0])) if a.ndim == 1 else a
        b2 = reshape(b, (b.shape[0], 1)) if b.ndim == 1 else b
        g2 = g
        if a.ndim == 1:
            g2 = g2.unsqueeze(-2)
        if b.ndim == 1:
            g2 = g2.unsqueeze(-1)
        ga = reshape(sum_to(g2 @ b2.mT, a2.shape), a.shape) if na else None
        gb = reshape(sum_to(a2.mT @ g2, b2.shape), b.shape) if nb else None
        return ga, gb


def matmul(a, b):
    a, b = promote(a, b, "matmul")
    if a.dtype is dtypes.bool_:
        raise DTypeError(f"matmul: not defined for bool tensors {fmt_shape(a.shape)} @ {fmt_shape(b.shape)}")
    if a.ndim == 0 or b.ndim == 0:
        raise ShapeError(
            f"matmul: both operands need at least 1 dimension, got {fmt_shape(a.shape)} @ "
            f"{fmt_shape(b.shape)}"
        )
    k_a = a.shape[-1]
    k_b = b.shape[0] if b.ndim == 1 else b.shape[-2]
    if k_a != k_b:
        raise ShapeError(
            f"matmul: {fmt_shape(a.shape)} @ {fmt_shape(b.shape)}: dimension -1 of the first "
            f"({k_a}) must equal dimension {0 if b.ndim == 1 else -2} of the second ({k_b})"
        )
    if a.ndim > 2 or b.ndim > 2:
        broadcast_shapes(a.shape[:-2], b.shape[:-2] if b.ndim > 1 else (), op="matmul (batch dimensions)")
    return MatMul.apply(a, b)


def mm(a, b):
    if a.ndim != 2 or b.ndim != 2:
        raise ShapeError(f"mm: expects 2-D operands, got {fmt_shape(a.shape)} and {fmt_shape(b.shape)}")
    return matmul(a, b)


def bmm(a, b):
    if a.ndim != 3 or b.ndim != 3 or a.shape[0] != b.shape[0]:
        raise ShapeError(
            f"bmm: expects 3-D operands with the same batch size, got {fmt_shape(a.shape)} and "
            f"{fmt_shape(b.shape)}"
        )
    return matmul(a, b)


def dot(a, b):
    if a.ndim != 1 or b.ndim != 1:
        raise ShapeError(f"dot: expects 1-D operands, got {fmt_shape(a.shape)} and {fmt_shape(b.shape)}")
    return matmul(a, b)


def outer(a, b):
    return reshape(a, (-1, 1)) * reshape(b, (1, -1))


def mT(x):
    """The transpose of the last two dimensions."""
    if x.ndim < 2:
        raise ShapeError(f"mT: needs at least 2 dimensions, got shape {fmt_shape(x.shape)}")
    return transpose(x, -2, -1)
