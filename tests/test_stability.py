"""Numerical stability of the normalized exponentials and their friends.

softmax, log_softmax, logsumexp, sigmoid and softplus must stay finite, forward and backward, for
any finite input up to +-1e4 in float32 and float64. pytest turns NumPy's RuntimeWarnings
(overflow, invalid value) into errors, so an op that overflows internally fails here even when
its final result happens to be finite.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

import prunus

DTYPES = [prunus.float32, prunus.float64]

# Each row is one softmax/logsumexp group (the last dimension).
ROWS = [
    [1e4, -1e4, 0.0, 1.0],  # huge positive and negative together
    [-1e4, 1e4, -1e4, 1e4],  # two maxima, far apart from the rest
    [1e4, 1e4, 1e4, 1e4],  # all equal and huge
    [-1e4, -1e4, -1e4, -1e4],  # all equal and hugely negative
    [-1e4, -9999.0, -1e4, -9990.0],  # all hugely negative, not equal
    [9999.0, 1e4, 9990.0, -1e4],
    [0.5, -3.0, 2.0, 7.0],  # ordinary
]

FUNCS = {
    "softmax": lambda x: prunus.softmax(x, dim=-1),
    "log_softmax": lambda x: prunus.log_softmax(x, dim=-1),
    "logsumexp": lambda x: prunus.logsumexp(x, dim=-1),
    "logsumexp_keepdim": lambda x: prunus.logsumexp(x, dim=1, keepdim=True),
    "logsumexp_all": lambda x: prunus.logsumexp(x),
    "softmax_dim0": lambda x: prunus.softmax(x, dim=0),
    "log_softmax_dim0": lambda x: prunus.log_softmax(x, dim=0),
    "sigmoid": prunus.sigmoid,
    "softplus": prunus.softplus,
    "softplus_beta": lambda x: prunus.softplus(x, beta=2.0),
}


def _logits(dtype, requires_grad=False):
    return prunus.tensor(ROWS, dtype=dtype, requires_grad=requires_grad)


def _finite(t):
    return bool(np.isfinite(t.detach().numpy().astype(np.float64)).all())


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: d.name)
@pytest.mark.parametrize("name", list(FUNCS))
def test_forward_and_backward_finite_on_huge_logits(name, dtype):
    x = _logits(dtype, requires_grad=True)
    y = FUNCS[name](x)
    assert y.dtype is dtype
    assert _finite(y), f"{name} forward: {y}"
    # a non-uniform cotangent, so that backward does real work (sum() would cancel for softmax)
    rng = np.random.default_rng(0)
    w = prunus.tensor(rng.standard_normal(y.shape), dtype=dtype)
    (y * w).sum().backward()
    assert x.grad is not None and x.grad.shape == x.shape and x.grad.dtype is dtype
    assert _finite(x.grad), f"{name} backward: {x.grad}"


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: d.name)
def test_softmax_values(dtype):
    x = _logits(dtype)
    y = prunus.softmax(x, dim=-1).numpy().astype(np.float64)
    tol = 1e-6 if dtype is prunus.float32 else 1e-12
    np.testing.assert_allclose(y.sum(axis=-1), 1.0, atol=tol)
    assert (y >= 0).all()
    # reference in float64 with the max subtracted
    a = np.asarray(ROWS, dtype=np.float64)
    e = np.exp(a - a.max(axis=-1, keepdims=True))
    np.testing.assert_allclose(y, e / e.sum(axis=-1, keepdims=True), atol=tol)
    np.testing.assert_allclose(y[2], 0.25, atol=tol)  # all equal: uniform
    np.testing.assert_allclose(y[3], 0.25, atol=tol)
    np.testing.assert_allclose(y[1], [0.0, 0.5, 0.0, 0.5], atol=tol)


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: d.name)
def test_log_softmax_values(dtype):
    x = _logits(dtype)
    y = prunus.log_softmax(x, dim=-1).numpy().astype(np.float64)
    a = np.asarray(ROWS, dtype=np.float64)
    m = a.max(axis=-1, keepdims=True)
    ref = a - m - np.log(np.exp(a - m).sum(axis=-1, keepdims=True))
    np.testing.assert_allclose(y, ref, rtol=1e-6, atol=1e-3 if dtype is prunus.float32 else 1e-9)
    np.testing.assert_allclose(np.exp(y).sum(axis=-1), 1.0, atol=1e-6)
    np.testing.assert_allclose(y[2], -math.log(4), atol=1e-6)


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: d.name)
def test_logsumexp_values(dtype):
    got = prunus.logsumexp(prunus.tensor([1000.0, 1000.0], dtype=dtype), dim=0).item()
    assert abs(got - (1000 + math.log(2))) < 1e-4
    got = prunus.logsumexp(prunus.tensor([-1000.0, -1000.0], dtype=dtype), dim=0).item()
    assert abs(got - (-1000 + math.log(2))) < 1e-4
    rows = prunus.logsumexp(_logits(dtype), dim=-1).numpy().astype(np.float64)
    a = np.asarray(ROWS, dtype=np.float64)
    m = a.max(axis=-1)
    ref = m + np.log(np.exp(a - m[:, None]).sum(axis=-1))
    np.testing.assert_allclose(rows, ref, rtol=1e-6)
    assert abs(rows[2] - (1e4 + math.log(4))) < 1e-2  # float32 spacing at 1e4 is ~1e-3


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: d.name)
def test_logsumexp_gradient_is_softmax(dtype):
    x = _logits(dtype, requires_grad=True)
    prunus.logsumexp(x, dim=-1).sum().backward()
    np.testing.assert_allclose(
        x.grad.numpy(), prunus.softmax(x.detach(), dim=-1).numpy(), atol=1e-6
    )


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: d.name)
def test_sigmoid_and_softplus_saturate(dtype):
    x = prunus.tensor([-1e4, -100.0, 0.0, 100.0, 1e4], dtype=dtype, requires_grad=True)
    s = prunus.sigmoid(x)
    np.testing.assert_allclose(s.detach().numpy(), [0.0, 0.0, 0.5, 1.0, 1.0], atol=1e-30)
    s.sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), [0.0, 0.0, 0.25, 0.0, 0.0], atol=1e-30)
    x.grad = None
    sp = prunus.softplus(x)
    np.testing.assert_allclose(sp.detach().numpy(), [0.0, 0.0, math.log(2), 100.0, 1e4], atol=1e-6)
    sp.sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), [0.0, 0.0, 0.5, 1.0, 1.0], atol=1e-30)
