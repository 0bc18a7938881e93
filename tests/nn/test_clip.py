"""nn.utils: clip_grad_norm_ / clip_grad_value_ vs torch.nn.utils, and the L1/L2 penalties."""

from __future__ import annotations

import math

import numpy as np
import pytest

import prunus
from prunus.errors import ArgumentError, NonFiniteError
from prunus.nn.utils import clip_grad_norm_, clip_grad_value_, l1_penalty, l2_penalty

SHAPES = [(5, 4), (4,), (3, 2, 2)]


def _pair(scale, dtype="float64", seed=0):
    rng = np.random.default_rng(seed)
    gs = [rng.standard_normal(s) * scale for s in SHAPES]
    ps = [prunus.zeros(s, dtype=dtype, requires_grad=True) for s in SHAPES]
    for p, g in zip(ps, gs):
        p.grad = prunus.tensor(g, dtype=dtype)
    ps.append(prunus.zeros(2, dtype=dtype, requires_grad=True))  # no grad: ignored
    return ps, gs


@pytest.mark.parametrize("norm_type", [2, 1, math.inf, 3.0])
@pytest.mark.parametrize("max_norm,scale", [(1.0, 1.0), (100.0, 1.0), (0.5, 1e-3)])
def test_clip_grad_norm_matches_torch(norm_type, max_norm, scale):
    torch = pytest.importorskip("torch")
    ps, gs = _pair(scale)
    tps = [torch.zeros(s, dtype=torch.float64, requires_grad=True) for s in SHAPES]
    for p, g in zip(tps, gs):
        p.grad = torch.tensor(g)
    total = clip_grad_norm_(ps, max_norm, norm_type=norm_type)
    ttotal = torch.nn.utils.clip_grad_norm_(tps, max_norm, norm_type=norm_type)
    assert isinstance(total, prunus.Tensor) and total.shape == ()
    np.testing.assert_allclose(total.item(), ttotal.item(), rtol=1e-12)
    for p, tp in zip(ps, tps):
        np.testing.assert_allclose(p.grad.numpy(), tp.grad.numpy(), rtol=1e-12, atol=1e-15)
    assert ps[-1].grad is None


def test_clip_grad_norm_float32_and_single_tensor():
    p = prunus.tensor([3.0, 4.0], requires_grad=True)
    p.grad = prunus.tensor([3.0, 4.0])
    total = clip_grad_norm_(p, 1.0)
    assert total.dtype is prunus.float32 and total.item() == 5.0
    np.testing.assert_allclose(p.grad.numpy(), [0.6, 0.8], rtol=1e-5)
    assert clip_grad_norm_([prunus.zeros(1, requires_grad=True)], 1.0).item() == 0.0


@pytest.mark.parametrize("bad", [math.nan, math.inf])
@pytest.mark.parametrize("norm_type", [2.0, 1.0, math.inf])
def test_clip_grad_norm_nonfinite(bad, norm_type):
    ps, _ = _pair(1.0)
    ps[0].grad[0, 0] = bad
    with pytest.raises(NonFiniteError, match=f"total {norm_type:g}-norm of the gradients of 3"):
        clip_grad_norm_(ps, 1.0, norm_type=norm_type, error_if_nonfinite=True)
    assert isinstance(NonFiniteError("x"), RuntimeError)
    with np.errstate(all="ignore"):  # without the flag it clips (to NaN), as torch does
        clip_grad_norm_(ps, 1.0, norm_type=norm_type)
    with pytest.raises(ArgumentError, match="norm_type must be positive"):
        clip_grad_norm_(ps, 1.0, norm_type=0)


def test_clip_grad_value_matches_torch():
    torch = pytest.importorskip("torch")
    ps, gs = _pair(2.0)
    tps = [torch.zeros(s, dtype=torch.float64, requires_grad=True) for s in SHAPES]
    for p, g in zip(tps, gs):
        p.grad = torch.tensor(g)
    clip_grad_value_(ps, 0.7)
    torch.nn.utils.clip_grad_value_(tps, 0.7)
    for p, tp in zip(ps, tps):
        np.testing.assert_array_equal(p.grad.numpy(), tp.grad.numpy())
    with pytest.raises(ArgumentError, match="clip_value must be >= 0"):
        clip_grad_value_(ps, -1)


def test_penalties_and_their_gradients():
    w1 = prunus.tensor([[1.0, -2.0], [0.5, 0.0]], dtype=prunus.float64, requires_grad=True)
    w2 = prunus.tensor([-3.0], dtype=prunus.float64, requires_grad=True)
    l1, l2 = l1_penalty([w1, w2]), l2_penalty([w1, w2])
    assert l1.item() == 6.5 and l2.item() == 14.25
    (l1 + 0.5 * l2).backward()
    np.testing.assert_allclose(w1.grad.numpy(), [[2.0, -3.0], [1.5, 0.0]])
    np.testing.assert_allclose(w2.grad.numpy(), [-4.0])
    with pytest.raises(ArgumentError, match="l2_penalty: got no tensors"):
        l2_penalty([])


def test_l2_penalty_equals_sgd_weight_decay():
    """SGD(weight_decay=wd) takes the same step as adding (wd/2) * l2_penalty to the loss."""
    from prunus import optim

    a = prunus.tensor([1.0, -2.0], dtype=prunus.float64, requires_grad=True)
    b = prunus.tensor([1.0, -2.0], dtype=prunus.float64, requires_grad=True)
    (a * 3).sum().backward()
    optim.SGD([a], lr=0.1, weight_decay=0.2).step()
    ((b * 3).sum() + 0.1 * l2_penalty([b])).backward()
    optim.SGD([b], lr=0.1).step()
    np.testing.assert_allclose(a.detach().numpy(), b.detach().numpy(), rtol=1e-15)
