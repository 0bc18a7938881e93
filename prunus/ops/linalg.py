"""Matrix products: matmul for 1-D, 2-D, batched and broadcasting operands (NumPy's rules,
which are PyTorch's), plus the helpers mm/bmm/dot/outer/linear built on it."""

from __future__ import annotations

from prunus import dtypes
from prunus.autograd import Op
from prunus.errors import DTypeError, ShapeError, fmt_shape
from prunus.ops._util import promote
from prunus.ops.movement import Permute, reshape, sum_to, transpose
from prunus.tensor import Tensor


class MatMul(Op):
    def forward(self, a, b):
        return a @ b

    def backward(self, g):
        a, b = self.inputs
        na, nb = self.needs_input_grad
        if a.data.ndim == 2 and b.data.ndim == 2:  # the common case (Linear layers)
            return (
                MatMul.apply(g, Permute.apply(b, dims=(1, 0))) if na else None,
                MatMul.apply(Permute.apply(a, dims=(1, 0)), g) if nb else None,
            )
        # lift 1-D operands to matrices, as forward did implicitly, then undo it
        a2 = reshape(a, (1, a.shape[0])) if a.ndim == 1 else a
        b2 = reshape(b, (b.shape[0], 1)) if b.ndim == 1 else b
        if a.ndim == 1 and b.ndim == 1:
            g2 = reshape(g, (1, 1))
        elif a.ndim == 1:
            g2 = g.unsqueeze(-2)
        elif b.ndim == 1:
            g2 = g.unsqueeze(-1)
        else:
            g2 = g
        ga = reshape(sum_to(g2 @ b2.mT, a2.shape), a.shape) if na else None
        gb = reshape(sum_to(a2.mT @ g2, b2.shape), b.shape) if nb else None
        return ga, gb


def matmul(a, b):
    if isinstance(a, Tensor) and isinstance(b, Tensor):  # fast path: two float matrices, one dtype
        x, y = a.data, b.data
        if (
            x.ndim == 2 and y.ndim == 2 and x.dtype is y.dtype and x.shape[1] == y.shape[0]
            and x.dtype.kind == "f"
        ):
            return MatMul.apply(a, b)
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
        _check_batch(a.shape, b.shape)
    return MatMul.apply(a, b)


def _check_batch(sa, sb):
    """The batch dimensions (all but the last two; a 1-D operand has none) must broadcast."""
    ba, bb = sa[:-2], sb[:-2]
    n = max(len(ba), len(bb))
    for axis in range(-1, -n - 1, -1):
        x = ba[axis] if -axis <= len(ba) else 1
        y = bb[axis] if -axis <= len(bb) else 1
        if x != y and x != 1 and y != 1:
            raise ShapeError(
                f"matmul: {fmt_shape(sa)} @ {fmt_shape(sb)}: batch dimensions do not broadcast: "
                f"at dimension {axis - 2} sizes {x} and {y} differ and neither is 1"
            )


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
    if x.data.ndim == 2:
        return Permute.apply(x, dims=(1, 0))
    if x.ndim < 2:
        raise ShapeError(f"mT: needs at least 2 dimensions, got shape {fmt_shape(x.shape)}")
    return transpose(x, -2, -1)


class Linear(Op):
    """x @ W.T + b in one primitive (PyTorch's F.linear), for x of shape (N, in).

    A measured hot spot: as separate ops a layer is a transpose, a matmul and an add forward and
    six ops backward. Fused, the bias is added in place into the fresh matmul result, and the
    backward is three products: g @ W, g.T @ x (already in W's layout) and the bias sum.
    """

    def forward(self, x, w, b=None):
        out = x @ w.T
        if b is not None:
            out += b
        return out

    def backward(self, g):
        x, w = self.inputs[0], self.inputs[1]
        needs = self.needs_input_grad
        gx = MatMul.apply(g, w) if needs[0] else None
        gw = MatMul.apply(Permute.apply(g, dims=(1, 0)), x) if needs[1] else None
        if len(self.inputs) == 2:
            return gx, gw
        gb = sum_to(g, self.inputs[2].shape) if needs[2] else None
        return gx, gw, gb


def linear(x, weight, bias=None):
    """y = x @ weight.T + bias, for x of shape (..., in), weight (out, in), bias (out,)."""
    if x.ndim == 0 or weight.ndim != 2 or x.shape[-1] != weight.shape[1]:
        raise ShapeError(
            f"linear: input {fmt_shape(x.shape)} and weight {fmt_shape(weight.shape)}: dimension "
            f"-1 of the input must equal dimension 1 of the (out, in) weight"
        )
    if bias is not None and bias.shape != (weight.shape[0],):
        raise ShapeError(
            f"linear: bias {fmt_shape(bias.shape)} must have shape ({weight.shape[0]},) for weight "
            f"{fmt_shape(weight.shape)}"
        )
    dt = x.data.dtype
    if (
        weight.data.dtype != dt
        or (bias is not None and bias.data.dtype != dt)
        or dt.kind != "f"
    ):
        got = ", ".join(t.dtype.name for t in (x, weight, bias) if t is not None)
        raise DTypeError(f"linear: input, weight and bias must share one floating dtype, got {got}")
    if x.ndim != 2:  # fold leading dimensions into one batch dimension, and back
        lead = x.shape[:-1]
        flat = linear(reshape(x, (-1, x.shape[-1])), weight, bias)
        return reshape(flat, lead + (weight.shape[0],))
    if bias is None:
        return Linear.apply(x, weight)
    return Linear.apply(x, weight, bias)
