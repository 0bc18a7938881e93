"""Losses that are primitives for speed and stability: cross_entropy (log_softmax + NLL fused).

Composed of generic ops, cross-entropy is about twenty ops per step and recomputes the softmax
in backward; fused, forward keeps the softmax and backward is one pass, (softmax - onehot) * w.
The remaining losses (MSE, L1, hinge, ...) are compositions and live in prunus.nn.functional.
"""

from __future__ import annotations

from prunus.autograd import Op
from prunus.errors import ArgumentError, DTypeError, IndexOutOfRangeError, ShapeError, fmt_shape
from prunus.ops.activation import softmax
from prunus.ops.indexing import masked_fill
from prunus.ops.movement import broadcast_to, reshape
from prunus.tensor import Tensor

_REDUCTIONS = ("mean", "sum", "none")


def _exp_rows(xp, z):
    """(z - rowmax, exp of that, its row sums): the stable pieces of log_softmax over dim 1."""
    shifted = z - z.max(axis=1, keepdims=True)
    e = xp.exp(shifted)
    return shifted, e, e.sum(axis=1, keepdims=True)


def _reduce(losses, reduction, denom, dtype):
    """Per-row losses to the requested reduction; 'mean' divides by `denom` (NaN when 0)."""
    if reduction == "none":
        return losses.astype(dtype, copy=False)
    total = losses.sum(dtype=dtype)
    if reduction == "sum":
        return total
    return total / dtype.type(denom) if denom else dtype.type("nan")


def _row_weights(xp, valid, g, reduction, count, dtype):
    """The weight of each row's (softmax - onehot) in the gradient, shape (N, 1)."""
    if reduction == "none":
        w = g * valid
    else:
        w = valid * (g / count if reduction == "mean" else g)
    return w.astype(dtype, copy=False).reshape(-1, 1)


class CrossEntropy(Op):
    """-log softmax(z)[target], over rows of z (N, C); rows whose target is ignore_index count 0."""

    def forward(self, z, target, reduction, ignore_index):
        xp = self.xp
        self.reduction, self.ignore_index = reduction, ignore_index
        rows = xp.arange(z.shape[0])
        valid = target != ignore_index
        safe = xp.where(valid, target, 0)
        shifted, e, s = _exp_rows(xp, z)
        losses = (xp.log(s[:, 0]) - shifted[rows, safe]) * valid
        e /= s
        self.p, self.rows, self.safe, self.valid = e, rows, safe, valid
        self.count = int(valid.sum())
        return _reduce(losses, reduction, self.count, z.dtype)

    def backward(self, g):
        z, target = self.inputs
        return (
            CrossEntropyBackward.apply(
                z, target, g, reduction=self.reduction, ignore_index=self.ignore_index, fwd=self
            ),
            None,
        )


class CrossEntropyBackward(Op):
    """d loss/dz = (softmax(z) - onehot(target)) * w, w per row from the loss's gradient g."""

    def forward(self, z, target, g, reduction, ignore_index, fwd):
        # fwd: the CrossEntropy op, whose softmax and row bookkeeping this reuses
        p, rows, safe, valid, count = fwd.p, fwd.rows, fwd.safe, fwd.valid, fwd.count
        self.reduction, self.ignore_index, self.count = reduction, ignore_index, count
        w = _row_weights(self.xp, valid, g, reduction, max(count, 1), z.dtype)
        out = p * w
        out[rows, safe] -= w[:, 0]
        return out

    def backward(self, gg):
        # Second order, with prunus ops: the softmax Jacobian applied to gg * w for z, and the
        # contraction of gg with (softmax - onehot) for g.
        z, target, g = self.inputs
        nz, _, ng = self.needs_input_grad
        valid = target != self.ignore_index
        p = softmax(z, 1)
        onehot = _onehot(target, z)
        if self.reduction == "none":
            w = reshape(masked_fill(g, ~valid, 0.0), (-1, 1))
        else:
            scale = 1.0 / max(self.count, 1) if self.reduction == "mean" else 1.0
            w = reshape(masked_fill(broadcast_to(g * scale, valid.shape), ~valid, 0.0), (-1, 1))
        gz = gw = None
        if nz:
            u = gg * w
            gz = p * (u - (u * p).sum(1, keepdim=True))
        if ng:
            per_row = masked_fill(((p - onehot) * gg).sum(1), ~valid, 0.0)
            if self.reduction == "none":
                gw = per_row
            else:
                scale = 1.0 / max(self.count, 1) if self.reduction == "mean" else 1.0
                gw = per_row.sum() * scale
        return gz, None, gw


def _onehot(target, like):
    xp = like.device.xp
    n, c = like.shape
    hot = xp.zeros((n, c), dtype=like.data.dtype)
    t = target.data
    ok = (t >= 0) & (t < c)
    hot[xp.arange(n)[ok], t[ok]] = 1
    return Tensor._make(hot, like.device, False, None)


def cross_entropy(input, target, weight=None, reduction="mean", ignore_index=-100, label_smoothing=0.0):
    """Cross-entropy of logits `input` (N, C) against class indices `target` (N,), as
    torch.nn.functional.cross_entropy: log_softmax and negative log-likelihood in one stable op.
    Rows whose target is `ignore_index` add nothing and are left out of the mean. `weight` (C,)
    weighs each class (the mean divides by the summed weights of the targets); `label_smoothing`
    mixes the one-hot target with the uniform distribution, as PyTorch does."""
    if isinstance(weight, str):  # the old signature cross_entropy(input, target, reduction)
        weight, reduction = None, weight
    if reduction not in _REDUCTIONS:
        raise ArgumentError(f"cross_entropy: reduction must be one of {_REDUCTIONS}, got {reduction!r}")
    if not isinstance(target, Tensor) or target.dtype.category != 1:
        got = f"{target.dtype.name} {fmt_shape(target.shape)}" if isinstance(target, Tensor) else type(target).__name__
        raise DTypeError(f"cross_entropy: target must be an integer tensor of class indices, got {got}")
    if not input.dtype.is_floating_point:
        raise DTypeError(f"cross_entropy: input must be floating-point logits, got {input.dtype.name}")
    if input.ndim != 2 or target.shape != input.shape[:1]:
        raise ShapeError(
            f"cross_entropy: input {fmt_shape(input.shape)} must be (N, C) and target "
            f"{fmt_shape(target.shape)} must be (N,) with the same N (dimension 0)"
        )
    t = target.data
    if t.size and not (0 <= int(t.min()) and int(t.max()) < input.shape[1]):
        bad = t[(t != ignore_index) & ((t < 0) | (t >= input.shape[1]))]
        if bad.size:
            raise IndexOutOfRangeError(
                f"cross_entropy: target {int(bad[0])} is out of range for {input.shape[1]} classes "
                f"(dimension 1 of input {fmt_shape(input.shape)})"
            )
    if weight is None and not label_smoothing:
        return CrossEntropy.apply(input, target, reduction=reduction, ignore_index=ignore_index)
    if not 0.0 <= label_smoothing <= 1.0:
        raise ArgumentError(f"cross_entropy: label_smoothing must be in [0, 1], got {label_smoothing}")
    if weight is not None:
        if not isinstance(weight, Tensor) or weight.shape != (input.shape[1],):
            got = fmt_shape(weight.shape) if isinstance(weight, Tensor) else type(weight).__name__
            raise ShapeError(
                f"cross_entropy: weight must be a tensor of shape ({input.shape[1]},), one per class "
                f"(dimension 1 of input {fmt_shape(input.shape)}), got {got}"
            )
        weight = weight.to(input.device).data.astype(input.data.dtype, copy=False)
    return SoftTargetCrossEntropy.apply(
        input, target, reduction=reduction, ignore_index=ignore_index, weight=weight,
        smoothing=float(label_smoothing),
    )


class SoftTargetCrossEntropy(Op):
    """Cross-entropy with class weights and/or label smoothing: -sum_c q[i, c] log softmax(z)[i, c]
    per row, with the target distribution q[i] = (1 - eps) w[t_i] onehot(t_i) + eps/C w (w = 1
    without weights; 0 for ignored rows). 'mean' divides by sum_i w[t_i] over the rows kept, as
    PyTorch. Kept apart from CrossEntropy so the plain case stays the cheapest."""

    def forward(self, z, target, reduction, ignore_index, weight, smoothing):
        xp = self.xp
        n, c = z.shape
        self.reduction = reduction
        rows = xp.arange(n)
        valid = target != ignore_index
        safe = xp.where(valid, target, 0)
        w = xp.ones(c, dtype=z.dtype) if weight is None else weight
        wt = w[safe] * valid  # each row's target weight, 0 for ignored rows
        q = (valid[:, None] * (smoothing / c)) * w[None, :]
        q[rows, safe] += (1 - smoothing) * wt
        q = q.astype(z.dtype, copy=False)
        shifted, e, s = _exp_rows(xp, z)
        losses = -(q * (shifted - xp.log(s))).sum(axis=1)
        e /= s
        self.p, self.q, self.qsum = e, q, q.sum(axis=1, keepdims=True)
        self.denom = float(wt.sum())
        return _reduce(losses, reduction, self.denom, z.dtype)

    def backward(self, g):
        z = self.inputs[0]
        return (
            SoftTargetCrossEntropyBackward.apply(z, g, reduction=self.reduction, fwd=self),
            None,
        )


class SoftTargetCrossEntropyBackward(Op):
    """d loss/dz = (sum_c q[i, c] * softmax(z)[i] - q[i]) * g_i, g_i from the loss's gradient."""

    def forward(self, z, g, reduction, fwd):
        # fwd: the SoftTargetCrossEntropy op, whose softmax and targets this reuses
        p, q, qsum, denom = fwd.p, fwd.q, fwd.qsum, fwd.denom
        self.reduction, self.q, self.qsum, self.denom = reduction, q, qsum, denom
        out = p * qsum - q
        if reduction == "none":
            out *= g.reshape(-1, 1)
        else:
            out *= g / denom if reduction == "mean" and denom else g
        return out.astype(z.dtype, copy=False)

    def backward(self, gg):
        # Second order, with prunus ops: the softmax Jacobian applied to gg * qsum * scale for z,
        # and the contraction of gg with (qsum * softmax - q) for g.
        z, g = self.inputs
        nz, ng = self.needs_input_grad
        p = softmax(z, 1)
        q = Tensor._make(self.q, z.device, False, None)
        qsum = Tensor._make(self.qsum, z.device, False, None)
        scale = 1.0 / self.denom if self.reduction == "mean" and self.denom else 1.0
        gz = gw = None
        if nz:
            r = reshape(g, (-1, 1)) if self.reduction == "none" else g * scale
            u = gg * qsum * r
            gz = p * (u - (u * p).sum(1, keepdim=True))
        if ng:
            per_row = ((p * qsum - q) * gg).sum(1)
            gw = per_row if self.reduction == "none" else per_row.sum() * scale
        return gz, gw
