"""`prunus.nn.functional`: the layers and losses of prunus.nn as functions, in PyTorch's names.

Primitives come from prunus.ops (linear, relu, cross_entropy, ...); everything else here is a
composition of ops, so its gradients (and gradients of gradients) need no code of their own.
Conv2d and pooling come from prunus.ops.conv.
"""

from __future__ import annotations

from prunus.autograd import no_grad
from prunus.errors import ArgumentError, DTypeError, ShapeError, fmt_shape
from prunus.ops import cross_entropy as _cross_entropy
from prunus.ops import (
    elu,
    gelu,
    index_select,
    leaky_relu,
    linear,
    log_softmax,
    masked_fill,
    relu,
    sigmoid,
    softmax,
    softplus,
    tanh,
    where,
)
from prunus.ops._util import constant
from prunus.ops.conv import adaptive_avg_pool2d, avg_pool2d, conv2d, max_pool2d
from prunus.ops.dropout import Dropout
from prunus.tensor import Tensor

__all__ = [
    "adaptive_avg_pool2d",
    "avg_pool2d",
    "batch_norm",
    "binary_cross_entropy_with_logits",
    "conv2d",
    "cross_entropy",
    "dropout",
    "elu",
    "embedding",
    "gelu",
    "l1_loss",
    "layer_norm",
    "leaky_relu",
    "linear",
    "log_softmax",
    "max_pool2d",
    "mse_loss",
    "multi_margin_loss",
    "nll_loss",
    "relu",
    "sigmoid",
    "softmax",
    "softplus",
    "tanh",
]

_REDUCTIONS = ("mean", "sum", "none")


def _reduce(loss, reduction, op):
    if reduction == "mean":
        return loss.mean()
    if reduction == "sum":
        return loss.sum()
    if reduction == "none":
        return loss
    raise ArgumentError(f"{op}: reduction must be one of {_REDUCTIONS}, got {reduction!r}")


def _check_reduction(reduction, op):
    if reduction not in _REDUCTIONS:
        raise ArgumentError(f"{op}: reduction must be one of {_REDUCTIONS}, got {reduction!r}")


# -- regularization and normalization -----------------------------------------------------------


def dropout(input: Tensor, p: float = 0.5, training: bool = True, generator=None) -> Tensor:
    """Zero each element with probability p and scale the rest by 1/(1-p) (inverted dropout, so
    evaluation needs no rescaling); the identity when not training. The mask is drawn from
    `generator` (the default generator when None)."""
    if not 0.0 <= p <= 1.0:
        raise ArgumentError(f"dropout: p must be in [0, 1], got {p}")
    if not training or p == 0.0:
        return input
    if p == 1.0:
        return input * 0.0
    return Dropout.apply(input, p=float(p), generator=generator)


def _bn_shape(x, c):
    return (1, c) + (1,) * (x.ndim - 2)


def batch_norm(input, running_mean, running_var, weight=None, bias=None, training=False,
               momentum=0.1, eps=1e-5, num_batches_tracked=None):
    """Normalize over every dimension but 1 (channels). In training, batch statistics are used
    and the running ones updated in place under no_grad (running_var gets the unbiased batch
    variance, as PyTorch); otherwise the running statistics are used. momentum=None: running
    averages over all batches so far (needs num_batches_tracked)."""
    if input.ndim < 2:
        raise ShapeError(f"batch_norm: expected input of at least 2 dimensions (N, C, ...), got {fmt_shape(input.shape)}")
    c = input.shape[1]
    shape = _bn_shape(input, c)
    dims = (0,) + tuple(range(2, input.ndim))
    if training or running_mean is None:
        n = input.numel() // c
        if n <= 1:
            raise ShapeError(
                f"batch_norm: expected more than 1 value per channel when training, got input "
                f"{fmt_shape(input.shape)}"
            )
        mean = input.mean(dims, keepdim=True)
        centered = input - mean
        var = (centered * centered).mean(dims, keepdim=True)
        out = centered * (var + eps).rsqrt()
        if training and running_mean is not None:
            with no_grad():
                if num_batches_tracked is not None:
                    num_batches_tracked.add_(1)
                m = momentum if momentum is not None else 1.0 / float(num_batches_tracked.item())
                running_mean.mul_(1 - m).add_(mean.reshape(c).detach(), alpha=m)
                running_var.mul_(1 - m).add_(var.reshape(c).detach() * (n / (n - 1)), alpha=m)
    else:
        out = (input - running_mean.reshape(shape)) * (running_var.reshape(shape) + eps).rsqrt()
    if weight is not None:
        out = out * weight.reshape(shape)
    if bias is not None:
        out = out + bias.reshape(shape)
    return out


def layer_norm(input, normalized_shape, weight=None, bias=None, eps=1e-5):
    """Normalize over the last len(normalized_shape) dimensions (biased variance)."""
    normalized_shape = (normalized_shape,) if isinstance(normalized_shape, int) else tuple(normalized_shape)
    k = len(normalized_shape)
    if tuple(input.shape[input.ndim - k:]) != normalized_shape or input.ndim < k:
        raise ShapeError(
            f"layer_norm: input {fmt_shape(input.shape)} must end with normalized_shape "
            f"{fmt_shape(normalized_shape)}"
        )
    dims = tuple(range(input.ndim - k, input.ndim))
    mean = input.mean(dims, keepdim=True)
    centered = input - mean
    out = centered * ((centered * centered).mean(dims, keepdim=True) + eps).rsqrt()
    if weight is not None:
        out = out * weight
    if bias is not None:
        out = out + bias
    return out


def embedding(input, weight, padding_idx=None):
    """Rows of `weight` (num_embeddings, dim) picked by the integer tensor `input`: the result has
    shape input.shape + (dim,). Rows at padding_idx are returned but get no gradient."""
    if not isinstance(input, Tensor) or input.dtype.category != 1:
        got = f"{input.dtype.name} {fmt_shape(input.shape)}" if isinstance(input, Tensor) else type(input).__name__
        raise DTypeError(f"embedding: input must be an integer tensor of indices, got {got}")
    out = index_select(weight, 0, input.reshape(-1)).reshape(tuple(input.shape) + (weight.shape[1],))
    if padding_idx is not None and out.requires_grad:
        pad = (input == padding_idx).unsqueeze(-1)
        out = where(pad, out.detach(), out)
    return out


# -- losses ---------------------------------------------------------------------------------------


def cross_entropy(input, target, weight=None, ignore_index=-100, reduction="mean", label_smoothing=0.0):
    """log_softmax + negative log-likelihood over class dimension 1, with class weights,
    ignore_index and label smoothing: the fused prunus.cross_entropy primitive."""
    return _cross_entropy(input, target, weight=weight, reduction=reduction, ignore_index=ignore_index,
                          label_smoothing=label_smoothing)


def _class_target(input, target, op):
    if not isinstance(target, Tensor) or target.dtype.category != 1:
        got = f"{target.dtype.name} {fmt_shape(target.shape)}" if isinstance(target, Tensor) else type(target).__name__
        raise DTypeError(f"{op}: target must be an integer tensor of class indices, got {got}")
    if input.ndim != 2 or target.shape != input.shape[:1]:
        raise ShapeError(
            f"{op}: input {fmt_shape(input.shape)} must be (N, C) and target {fmt_shape(target.shape)} "
            f"must be (N,) with the same N (dimension 0)"
        )


def _class_weight(weight, input, op):
    if weight is None:
        return None
    if not isinstance(weight, Tensor) or weight.shape != (input.shape[1],):
        got = fmt_shape(weight.shape) if isinstance(weight, Tensor) else type(weight).__name__
        raise ShapeError(f"{op}: weight must have shape ({input.shape[1]},), one per class, got {got}")
    return weight.detach().to(input.dtype)


def nll_loss(input, target, weight=None, ignore_index=-100, reduction="mean"):
    """-weight[t] * input[i, t] for log-probabilities input (N, C); 'mean' divides by the summed
    weights of the rows kept (rows whose target is ignore_index count 0)."""
    _check_reduction(reduction, "nll_loss")
    _class_target(input, target, "nll_loss")
    w = _class_weight(weight, input, "nll_loss")
    # validated on the values now; computed below with ops, so a captured graph follows the target
    t = target.data
    safe_np = t[t != ignore_index]
    if ((safe_np < 0) | (safe_np >= input.shape[1])).any():
        bad = int(safe_np[(safe_np < 0) | (safe_np >= input.shape[1])][0])
        from prunus.errors import IndexOutOfRangeError

        raise IndexOutOfRangeError(f"nll_loss: target {bad} is out of range for {input.shape[1]} classes")
    valid = target != ignore_index
    safe = where(valid, target, 0)
    rows_w = valid.to(input.dtype) if w is None else index_select(w, 0, safe) * valid
    picked = input.gather(1, safe.reshape(-1, 1)).reshape(-1)
    losses = -picked * rows_w
    if reduction == "none":
        return losses
    total = losses.sum()
    return total if reduction == "sum" else total / rows_w.sum()


def _pair(input, target, op):
    if not isinstance(target, Tensor):
        raise DTypeError(f"{op}: target must be a Tensor, got {type(target).__name__}")
    if input.shape != target.shape:
        # PyTorch warns and broadcasts; (N, 1) against (N,) silently becomes (N, N), so refuse.
        raise ShapeError(
            f"{op}: input {fmt_shape(input.shape)} and target {fmt_shape(target.shape)} must have the same shape"
        )
    if target.dtype is not input.dtype:
        target = target.to(input.dtype)
    return target


def mse_loss(input, target, reduction="mean"):
    target = _pair(input, target, "mse_loss")
    d = input - target
    return _reduce(d * d, reduction, "mse_loss")


def l1_loss(input, target, reduction="mean"):
    target = _pair(input, target, "l1_loss")
    return _reduce((input - target).abs(), reduction, "l1_loss")


def binary_cross_entropy_with_logits(input, target, weight=None, reduction="mean", pos_weight=None):
    """Sigmoid + binary cross-entropy in the stable form (1 - t) x + (1 + (pw - 1) t) softplus(-x)."""
    _check_reduction(reduction, "binary_cross_entropy_with_logits")
    target = _pair(input, target, "binary_cross_entropy_with_logits")
    sp = softplus(-input)
    if pos_weight is not None:
        loss = (1 - target) * input + ((pos_weight - 1) * target + 1) * sp
    else:
        loss = (1 - target) * input + sp
    if weight is not None:
        loss = loss * weight
    return _reduce(loss, reduction, "binary_cross_entropy_with_logits")


def multi_margin_loss(input, target, p=1, margin=1.0, weight=None, reduction="mean"):
    """The multiclass SVM hinge loss: per row, sum over j != y of w[y] * max(0, margin - x[y] +
    x[j])**p, divided by the number of classes (PyTorch's definition); p is 1 or 2."""
    if p not in (1, 2):
        raise ArgumentError(f"multi_margin_loss: p must be 1 or 2, got {p!r}")
    _check_reduction(reduction, "multi_margin_loss")
    unbatched = input.ndim == 1
    if unbatched:
        input, target = input.unsqueeze(0), target.reshape(1)
    _class_target(input, target, "multi_margin_loss")
    w = _class_weight(weight, input, "multi_margin_loss")
    c = input.shape[1]
    xp = input.device.xp
    t = target.data  # validated on the values now; computed below with ops (capture follows it)
    if t.size and (int(t.min()) < 0 or int(t.max()) >= c):
        from prunus.errors import IndexOutOfRangeError

        raise IndexOutOfRangeError(f"multi_margin_loss: a target is out of range for {c} classes")
    col = target.reshape(-1, 1)
    own = col == constant(xp.arange(c).reshape(1, -1), col)
    picked = input.gather(1, col)
    h = relu(masked_fill(input - picked + margin, own, 0.0))
    if p == 2:
        h = h * h
    losses = h.sum(1) * (1.0 / c)
    if w is not None:
        losses = losses * index_select(w, 0, target.reshape(-1))
    if unbatched:
        losses = losses.reshape(())
    return _reduce(losses, reduction, "multi_margin_loss")
