"""Convolution and pooling split over batch ranges (prunus/backend/threads.py) give the results of
the unsplit kernels: pooling exactly; convolutions to float32 rounding (BLAS may order a dot
product's terms differently for another matrix width, and the weight gradient adds per-range
partial products). Every range size is forced to one sample so that small inputs split, unevenly
on three threads."""

import numpy as np
import pytest

import prunus
import prunus.nn.functional as F
from prunus.ops import conv

CONVS = [  # (x shape, w shape, kwargs): batched (4K < L) and folded layouts, padding, groups
    ((5, 2, 9, 9), (4, 2, 3, 3), {}),
    ((5, 3, 10, 8), (6, 3, 3, 3), {"stride": 2, "padding": 1}),
    ((4, 4, 7, 7), (6, 2, 3, 3), {"groups": 2, "dilation": 2, "padding": 2}),
    ((7, 20, 12, 12), (50, 20, 5, 5), {}),  # LeNet-5's conv2: folded
]
POOLS = [  # (x shape, kwargs)
    ((5, 3, 8, 8), {"kernel_size": 2}),  # windows tile the input
    ((5, 3, 9, 7), {"kernel_size": 2}),  # a row and a column left out
    ((4, 2, 9, 9), {"kernel_size": 3, "stride": 2, "padding": 1}),  # overlapping, padded
    ((3, 2, 8, 8), {"kernel_size": 2, "stride": 3}),  # gaps between windows
]


@pytest.fixture
def split_every_sample(monkeypatch):
    monkeypatch.setattr(conv, "_grain", lambda g: 1)
    before = prunus.get_num_threads()
    yield
    prunus.set_num_threads(before)


def _run(threads, fn, *arrays):
    prunus.set_num_threads(threads)
    ts = [prunus.tensor(a, requires_grad=True) for a in arrays]
    out = fn(*ts)
    cot = np.random.default_rng(1).standard_normal(out.shape).astype(arrays[0].dtype)
    out.backward(prunus.tensor(cot))
    return [out.detach().numpy()] + [t.grad.numpy() for t in ts]


@pytest.mark.parametrize("threads", [2, 3])
@pytest.mark.parametrize("xs,ws,kw", CONVS)
def test_conv_split_matches_unsplit(split_every_sample, threads, xs, ws, kw):
    rng = np.random.default_rng(0)
    x, w = rng.standard_normal(xs).astype(np.float32), rng.standard_normal(ws).astype(np.float32)
    b = rng.standard_normal(ws[0]).astype(np.float32)

    def fn(x, w, b):
        return F.conv2d(x, w, b, **kw)

    one, many = _run(1, fn, x, w, b), _run(threads, fn, x, w, b)
    for a, b in zip(many, one):  # forward, then the gradients of x, w and b
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-4 * np.abs(b).max())


@pytest.mark.parametrize("threads", [2, 3])
@pytest.mark.parametrize("xs,kw", POOLS)
def test_max_pool_split_matches_unsplit(split_every_sample, threads, xs, kw):
    x = np.random.default_rng(2).standard_normal(xs).astype(np.float32)
    x[0, 0, 0, :2] = 7.0  # a tie: the first maximum gets the gradient on every split
    one, many = _run(1, lambda t: F.max_pool2d(t, **kw), x), _run(threads, lambda t: F.max_pool2d(t, **kw), x)
    for a, b in zip(many, one):
        np.testing.assert_array_equal(a, b)
