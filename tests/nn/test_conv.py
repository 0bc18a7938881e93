"""Conv2d and pooling layers vs PyTorch (float64, copied weights, rtol 1e-10): outputs, input and
parameter gradients over many configurations; pooling with overlapping windows and ties; float32
through both conv layouts; initialisation bounds; bad input raising prunus.errors classes."""

from __future__ import annotations

import math

import numpy as np
import pytest

import prunus
from prunus import nn
from prunus.errors import ArgumentError, DTypeError, ShapeError

torch = pytest.importorskip("torch")
TOL = {"rtol": 1e-10, "atol": 1e-12}


def _run(ours, theirs, x, rng, tol=TOL):
    px = prunus.tensor(x, requires_grad=True)
    tx = torch.tensor(x, requires_grad=True)
    py, ty = ours(px), theirs(tx)
    np.testing.assert_allclose(py.detach().numpy(), ty.detach().numpy(), **tol)
    g = rng.standard_normal(tuple(ty.shape)).astype(x.dtype)
    py.backward(prunus.tensor(g))
    ty.backward(torch.tensor(g))
    np.testing.assert_allclose(px.grad.numpy(), tx.grad.numpy(), **tol)
    for (name, p), tp in zip(ours.named_parameters(), theirs.parameters()):
        np.testing.assert_allclose(p.grad.numpy(), tp.grad.numpy(), err_msg=name, **tol)


def _conv_pair(*args, dtype=torch.float64, **kw):
    theirs = torch.nn.Conv2d(*args, **kw).to(dtype)
    ours = nn.Conv2d(*args, **kw, dtype=str(dtype).removeprefix("torch."))
    ours.load_state_dict({k: prunus.tensor(v.detach().numpy()) for k, v in theirs.state_dict().items()})
    return ours, theirs


CONV_CASES = [
    ((3, 4, 3), {}, (2, 3, 7, 6)),
    ((3, 4, 3), {"bias": False}, (2, 3, 7, 6)),
    ((2, 5, (3, 2)), {"stride": 2}, (3, 2, 9, 8)),
    ((2, 5, 3), {"stride": (2, 1), "padding": (1, 2)}, (2, 2, 6, 5)),
    ((2, 3, 3), {"dilation": 2, "padding": 2}, (2, 2, 7, 7)),
    ((4, 6, 3), {"groups": 2, "padding": 1}, (2, 4, 5, 5)),
    ((4, 4, 3), {"groups": 4, "bias": False}, (2, 4, 6, 6)),  # depthwise
    ((6, 4, (2, 3)), {"groups": 2, "stride": (1, 2), "padding": (1, 0), "dilation": (2, 1)}, (2, 6, 7, 8)),
    ((1, 8, 5), {}, (4, 1, 28, 28)),  # batched layout (small K, large L)
    ((8, 6, 5), {"padding": "same"}, (3, 8, 9, 9)),
    ((3, 2, 1), {}, (2, 3, 4, 4)),  # 1x1
    ((3, 2, 3), {}, (3, 5, 5)),  # unbatched (C, H, W)
    ((2, 3, 3), {"padding": "valid"}, (1, 2, 3, 3)),  # kernel as large as the input
]


@pytest.mark.parametrize("args, kw, shape", CONV_CASES)
def test_conv2d_matches_torch(args, kw, shape):
    rng = np.random.default_rng(sum(shape))
    ours, theirs = _conv_pair(*args, **kw)
    _run(ours, theirs, rng.standard_normal(shape), rng)


@pytest.mark.parametrize("shape", [(4, 1, 28, 28), (4, 20, 12, 12)])
def test_conv2d_float32_both_layouts(shape):
    """LeNet-5's two convolutions (batched and folded layouts) in float32."""
    rng = np.random.default_rng(0)
    ours, theirs = _conv_pair(shape[1], 8, 5, dtype=torch.float32)
    _run(ours, theirs, rng.standard_normal(shape).astype(np.float32), rng, {"rtol": 1e-4, "atol": 1e-4})


def test_conv2d_init_bounds():
    conv = nn.Conv2d(4, 6, (3, 2), groups=2, generator=prunus.Generator().manual_seed(0))
    bound = 1 / math.sqrt(2 * 3 * 2)
    for p in (conv.weight, conv.bias):
        v = p.detach().numpy()
        assert np.abs(v).max() <= bound and np.abs(v).max() > 0.5 * bound
    assert conv.weight.shape == (6, 2, 3, 2)


def _pool_ours_theirs(kind, kw):
    return getattr(nn, kind)(**kw), getattr(torch.nn, kind)(**kw)


POOL_CASES = [
    ("MaxPool2d", {"kernel_size": 2}),
    ("MaxPool2d", {"kernel_size": 3, "stride": 1}),  # overlapping
    ("MaxPool2d", {"kernel_size": 3, "stride": 2, "padding": 1}),
    ("MaxPool2d", {"kernel_size": (3, 2), "stride": (2, 1), "ceil_mode": True}),
    ("MaxPool2d", {"kernel_size": 2, "stride": 1, "dilation": 2}),
    ("MaxPool2d", {"kernel_size": 3, "stride": 2, "padding": 1, "dilation": (2, 1), "ceil_mode": True}),
    ("AvgPool2d", {"kernel_size": 2}),
    ("AvgPool2d", {"kernel_size": 3, "stride": 1, "padding": 1}),
    ("AvgPool2d", {"kernel_size": 3, "stride": 2, "padding": 1, "count_include_pad": False}),
    ("AvgPool2d", {"kernel_size": 3, "stride": 2, "padding": 1, "ceil_mode": True}),
    ("AvgPool2d", {"kernel_size": 3, "stride": 2, "padding": 1, "ceil_mode": True, "count_include_pad": False}),
    ("AvgPool2d", {"kernel_size": 2, "divisor_override": 3}),
    ("AdaptiveAvgPool2d", {"output_size": 1}),
    ("AdaptiveAvgPool2d", {"output_size": 3}),
    ("AdaptiveAvgPool2d", {"output_size": (4, 2)}),
    ("AdaptiveAvgPool2d", {"output_size": (None, 5)}),
]


@pytest.mark.parametrize("ties", [False, True])
@pytest.mark.parametrize("shape", [(2, 3, 7, 7), (2, 2, 8, 6)])
@pytest.mark.parametrize("kind, kw", POOL_CASES)
def test_pooling_matches_torch(kind, kw, shape, ties):
    rng = np.random.default_rng(len(kw) + shape[3])
    x = rng.standard_normal(shape)
    if ties:  # many equal values in a window: the gradient goes to the first maximum
        x = np.round(x)
    ours, theirs = _pool_ours_theirs(kind, kw)
    _run(ours, theirs, x, rng)


def test_max_pool_propagates_nan():
    x = np.arange(16.0).reshape(1, 1, 4, 4)
    x[0, 0, 1, 0] = np.nan
    out = nn.MaxPool2d(2)(prunus.tensor(x)).numpy()
    ref = torch.nn.MaxPool2d(2)(torch.tensor(x)).numpy()
    np.testing.assert_array_equal(out, ref)


def test_lenet5_features_step_matches_torch():
    """conv -> maxpool -> conv -> maxpool (Caffe LeNet-5) end to end, float64."""
    rng = np.random.default_rng(5)
    c1, t1 = _conv_pair(1, 20, 5)
    c2, t2 = _conv_pair(20, 50, 5)
    ours = nn.Sequential(c1, nn.MaxPool2d(2), c2, nn.MaxPool2d(2))
    theirs = torch.nn.Sequential(t1, torch.nn.MaxPool2d(2), t2, torch.nn.MaxPool2d(2))
    _run(ours, theirs, rng.standard_normal((3, 1, 28, 28)), rng)


# -- bad input ------------------------------------------------------------------------------------


def test_wrong_channel_count_names_layer_and_shapes():
    conv = nn.Conv2d(3, 4, 3)
    with pytest.raises(ShapeError, match=r"Conv2d\(3, 4.*\(N, 3, H, W\).*\(2, 5, 8, 8\)"):
        conv(prunus.randn(2, 5, 8, 8))
    with pytest.raises(ShapeError, match=r"Conv2d.*\(8, 8\)"):
        conv(prunus.randn(8, 8))
    with pytest.raises(ShapeError, match=r"conv2d: input \(2, 5, 8, 8\) has 5 channels.*weight \(4, 3, 3, 3\)"):
        nn.functional.conv2d(prunus.randn(2, 5, 8, 8), conv.weight)


def test_kernel_larger_than_padded_input():
    with pytest.raises(ShapeError, match=r"kernel size 5 .*padded input size 4"):
        nn.Conv2d(1, 2, 5, padding=1)(prunus.randn(1, 1, 2, 8))
    with pytest.raises(ShapeError, match="larger than the padded input"):
        nn.MaxPool2d(3)(prunus.randn(1, 1, 2, 2))
    with pytest.raises(ShapeError, match="larger than the padded input"):
        nn.Conv2d(1, 1, 3, dilation=3)(prunus.randn(1, 1, 6, 6))


def test_groups_must_divide_channels():
    with pytest.raises(ArgumentError, match="groups=2 must divide in_channels \\(3\\)"):
        nn.Conv2d(3, 4, 3, groups=2)
    with pytest.raises(ArgumentError, match="out_channels \\(3\\)"):
        nn.Conv2d(4, 3, 3, groups=2)
    with pytest.raises(ShapeError, match="not divisible by groups=2"):
        nn.functional.conv2d(prunus.randn(1, 4, 5, 5), prunus.randn(3, 2, 3, 3), groups=2)


def test_bad_arguments():
    with pytest.raises(ArgumentError, match="stride"):
        nn.Conv2d(1, 1, 3, stride=0)
    with pytest.raises(ArgumentError, match="padding"):
        nn.functional.max_pool2d(prunus.randn(1, 1, 6, 6), 2, padding=2)
    with pytest.raises(ShapeError, match="bias must have shape \\(2,\\)"):
        nn.functional.conv2d(prunus.randn(1, 1, 4, 4), prunus.randn(2, 1, 3, 3), prunus.randn(3))
    with pytest.raises(DTypeError, match="share one floating dtype"):
        nn.functional.conv2d(prunus.randn(1, 1, 4, 4), prunus.randn(2, 1, 3, 3, dtype=prunus.float64))
    with pytest.raises(DTypeError, match="floating-point"):
        nn.functional.avg_pool2d(prunus.ones(1, 1, 4, 4, dtype=prunus.int64), 2)
