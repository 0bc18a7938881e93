"""prunus.nn.utils, as torch.nn.utils: gradient clipping (clip_grad_norm_, clip_grad_value_), the
L1/L2 penalties of the lecture's regularization, to add to a loss (loss = data_loss + lam *
l2_penalty(weights)), and `parametrize` (parametrize.py, torch.nn.utils.parametrize)."""

from __future__ import annotations

import math

from prunus.autograd import no_grad
from prunus.errors import ArgumentError, NonFiniteError
from prunus.nn.utils import parametrize
from prunus.ops.movement import stack
from prunus.tensor import Tensor

__all__ = ["clip_grad_norm_", "clip_grad_value_", "l1_penalty", "l2_penalty", "parametrize"]


def _params(parameters) -> list:
    if isinstance(parameters, Tensor):
        return [parameters]
    if hasattr(parameters, "parameters"):  # a Module
        return list(parameters.parameters())
    return list(parameters)


def clip_grad_norm_(parameters, max_norm, norm_type=2.0, error_if_nonfinite=False):
    """Scale the gradients in place so that their joint norm is at most `max_norm`.

    The norm is taken over all gradients together, as if concatenated into one vector. Returns
    that total norm (before clipping) as a 0-d tensor. The scaling is always applied, by
    min(1, max_norm / (norm + 1e-6)), as in PyTorch: it needs no device-to-host sync.
    """
    grads = [p.grad for p in _params(parameters) if p.grad is not None]
    norm_type = float(norm_type)
    if not (norm_type > 0):
        raise ArgumentError(f"clip_grad_norm_: norm_type must be positive or inf, got {norm_type}")
    if not grads:
        return Tensor(0.0)
    with no_grad():
        dtype = grads[0].dtype
        if norm_type == math.inf:
            total = stack([g.abs().amax().to(dtype) for g in grads]).amax()
        elif norm_type == 2.0:
            total = stack([(g * g).sum().to(dtype) for g in grads]).sum().sqrt()
        elif norm_type == 1.0:
            total = stack([g.abs().sum().to(dtype) for g in grads]).sum()
        else:
            total = stack([(g.abs() ** norm_type).sum().to(dtype) for g in grads]).sum()
            total = total ** (1.0 / norm_type)
        if error_if_nonfinite and not bool(total.isfinite()):
            raise NonFiniteError(
                f"clip_grad_norm_: the total {norm_type:g}-norm of the gradients of {len(grads)} "
                f"parameters is {total.item()}, so they cannot be clipped; set "
                "error_if_nonfinite=False to clip anyway"
            )
        coef = (float(max_norm) / (total + 1e-6)).clamp(max=1.0)
        for g in grads:
            g.mul_(coef.to(g.dtype))
    return total


def clip_grad_value_(parameters, clip_value) -> None:
    """Clamp every gradient element into [-clip_value, clip_value], in place."""
    v = float(clip_value)
    if not v >= 0:
        raise ArgumentError(f"clip_grad_value_: clip_value must be >= 0, got {clip_value!r}")
    with no_grad():
        for p in _params(parameters):
            if p.grad is not None:
                p.grad.clamp_(-v, v)


def l1_penalty(params) -> Tensor:
    """sum |w| over all given tensors (differentiable; gradient sign(w))."""
    ps = _params(params)
    if not ps:
        raise ArgumentError("l1_penalty: got no tensors")
    total = ps[0].abs().sum()
    for p in ps[1:]:
        total = total + p.abs().sum()
    return total


def l2_penalty(params) -> Tensor:
    """sum w² over all given tensors (differentiable; gradient 2w). SGD's weight_decay=wd equals
    adding (wd / 2) * l2_penalty(params) to the loss."""
    ps = _params(params)
    if not ps:
        raise ArgumentError("l2_penalty: got no tensors")
    total = (ps[0] * ps[0]).sum()
    for p in ps[1:]:
        total = total + (p * p).sum()
    return total
