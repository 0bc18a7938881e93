"""Layers vs PyTorch with copied weights (float64): forward and gradients of input and
parameters; BatchNorm running statistics and eval mode; Dropout; input validation; Linear init."""

from __future__ import annotations

import math
import zlib

import numpy as np
import pytest

import prunus
from prunus import nn
from prunus.errors import ShapeError

torch = pytest.importorskip("torch")
TOL = {"rtol": 1e-10, "atol": 1e-12}


def _t(a, grad=False):
    return torch.tensor(a, requires_grad=grad)


def _p(a, grad=False):
    return prunus.tensor(a, requires_grad=grad)


def _copy_params(ours, theirs):
    """torch's parameters and buffers into ours (float64), by state-dict key."""
    ours.double()
    theirs.double()
    ours.load_state_dict({k: prunus.tensor(v.detach().numpy()) for k, v in theirs.state_dict().items()})


def _compare(ours, theirs, x, rng, steps=1):
    """Forward and backward `steps` times on the same input; outputs, input gradients,
    parameter gradients and buffers must agree."""
    for _ in range(steps):
        px, tx = _p(x, True), _t(x, True)
        py, ty = ours(px), theirs(tx)
        np.testing.assert_allclose(py.detach().numpy(), ty.detach().numpy(), **TOL)
        v = rng.standard_normal(ty.shape)
        py.backward(_p(v))
        ty.backward(_t(v))
        np.testing.assert_allclose(px.grad.numpy(), tx.grad.numpy(), **TOL)
        tparams = dict(theirs.named_parameters())
        for name, p in ours.named_parameters():
            np.testing.assert_allclose(p.grad.numpy(), tparams[name].grad.numpy(), err_msg=name, **TOL)
        for name, b in theirs.named_buffers():
            np.testing.assert_allclose(ours.state_dict()[name].numpy(), b.numpy(), err_msg=name, **TOL)


LAYERS = [
    ("Linear", lambda m: m.Linear(5, 3), (4, 5)),
    ("Linear no bias, 3-D input", lambda m: m.Linear(5, 3, bias=False), (2, 4, 5)),
    ("Linear 1-D input", lambda m: m.Linear(5, 3), (5,)),
    ("Identity", lambda m: m.Identity(), (3, 2)),
    ("Flatten", lambda m: m.Flatten(), (2, 3, 4)),
    ("Flatten(0, 1)", lambda m: m.Flatten(0, 1), (2, 3, 4)),
    ("ReLU", lambda m: m.ReLU(), (4, 5)),
    ("LeakyReLU", lambda m: m.LeakyReLU(0.2), (4, 5)),
    ("ELU", lambda m: m.ELU(0.7), (4, 5)),
    ("GELU", lambda m: m.GELU(), (4, 5)),
    ("GELU tanh", lambda m: m.GELU("tanh"), (4, 5)),
    ("Sigmoid", lambda m: m.Sigmoid(), (4, 5)),
    ("Tanh", lambda m: m.Tanh(), (4, 5)),
    ("Softmax", lambda m: m.Softmax(dim=1), (4, 5)),
    ("LogSoftmax", lambda m: m.LogSoftmax(dim=-1), (4, 5)),
    ("LayerNorm", lambda m: m.LayerNorm(5), (4, 5)),
    ("LayerNorm 2-D shape", lambda m: m.LayerNorm((3, 5)), (2, 3, 5)),
    ("LayerNorm no affine", lambda m: m.LayerNorm(5, elementwise_affine=False), (4, 5)),
    ("BatchNorm1d", lambda m: m.BatchNorm1d(5), (6, 5)),
    ("BatchNorm1d (N, C, L)", lambda m: m.BatchNorm1d(3, momentum=0.3), (4, 3, 5)),
    ("BatchNorm1d cumulative", lambda m: m.BatchNorm1d(3, momentum=None), (4, 3)),
    ("BatchNorm1d no affine", lambda m: m.BatchNorm1d(3, affine=False), (4, 3)),
    ("BatchNorm2d", lambda m: m.BatchNorm2d(3), (4, 3, 2, 5)),
    ("BatchNorm2d no stats", lambda m: m.BatchNorm2d(3, track_running_stats=False), (2, 3, 2, 2)),
    ("Sequential MLP", lambda m: m.Sequential(m.Linear(5, 4), m.BatchNorm1d(4), m.ReLU(), m.Linear(4, 2)), (6, 5)),
]


@pytest.mark.parametrize("name, make, shape", LAYERS, ids=[x[0] for x in LAYERS])
def test_layer_vs_torch(name, make, shape):
    rng = np.random.default_rng(zlib.crc32(name.encode()))
    ours, theirs = make(nn), make(torch.nn)
    with torch.no_grad():  # non-trivial affine parameters
        for p in theirs.parameters():
            p.add_(torch.tensor(rng.standard_normal(tuple(p.shape)), dtype=p.dtype) * 0.3)
    _copy_params(ours, theirs)
    # several training steps: BatchNorm running statistics accumulate
    for _ in range(3):
        _compare(ours, theirs, rng.standard_normal(shape) * 2 + 0.5, rng)
    ours.eval()
    theirs.eval()
    _compare(ours, theirs, rng.standard_normal(shape), rng)


def test_embedding_vs_torch():
    rng = np.random.default_rng(0)
    for pad in (None, 1):
        ours, theirs = nn.Embedding(6, 3, padding_idx=pad), torch.nn.Embedding(6, 3, padding_idx=pad)
        _copy_params(ours, theirs)
        idx = np.array([[0, 1, 5], [1, 1, 2]])
        py, ty = ours(prunus.tensor(idx)), theirs(torch.tensor(idx))
        np.testing.assert_allclose(py.detach().numpy(), ty.detach().numpy(), **TOL)
        v = rng.standard_normal(ty.shape)
        py.backward(_p(v))
        ty.backward(_t(v))
        np.testing.assert_allclose(ours.weight.grad.numpy(), theirs.weight.grad.numpy(), **TOL)
    assert np.all(nn.Embedding(4, 2, padding_idx=2).weight.data[2] == 0)


def test_batchnorm_running_stats_are_updated_in_place():
    bn = nn.BatchNorm1d(3)
    rm, rv = bn.running_mean, bn.running_var
    buf = rm.data
    bn(prunus.randn(8, 3))
    assert bn.running_mean is rm and bn.running_var is rv and rm.data is buf
    assert int(bn.num_batches_tracked) == 1
    assert not rm.requires_grad
    with pytest.raises(ShapeError, match="more than 1 value per channel"):
        bn(prunus.randn(1, 3))
    bn.eval()
    bn(prunus.randn(1, 3))  # eval mode takes a single sample


def test_dropout():
    x = prunus.ones(200, 50, dtype=prunus.float64, requires_grad=True)
    d = nn.Dropout(0.3, generator=prunus.Generator().manual_seed(1))
    y = d(x)
    vals = np.unique(y.detach().numpy())
    np.testing.assert_allclose(vals, [0.0, 1 / 0.7])
    assert abs((y.detach().numpy() == 0).mean() - 0.3) < 0.02
    y.sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), y.detach().numpy())  # gradient through the same mask
    y2 = nn.Dropout(0.3, generator=prunus.Generator().manual_seed(1))(x)
    np.testing.assert_array_equal(y.detach().numpy(), y2.detach().numpy())  # reproducible
    d.eval()
    assert d(x) is x
    prunus.manual_seed(5)
    a = nn.Dropout(0.5)(x).detach().numpy()
    prunus.manual_seed(5)
    np.testing.assert_array_equal(a, nn.Dropout(0.5)(x).detach().numpy())  # default generator
    np.testing.assert_array_equal(nn.Dropout(1.0)(x).detach().numpy(), 0)
    assert nn.Dropout(0.0)(x) is x


def test_wrong_input_shape_names_layer_and_shapes():
    cases = [
        (nn.Linear(784, 300), prunus.randn(2, 785), "Linear(in_features=784, out_features=300, bias=True)", "(2, 785)"),
        (nn.Linear(3, 2), prunus.randn(()), "Linear(in_features=3", "()"),
        (nn.BatchNorm1d(4), prunus.randn(2, 3), "BatchNorm1d(4", "(2, 3)"),
        (nn.BatchNorm2d(4), prunus.randn(2, 4, 3), "BatchNorm2d(4", "(2, 4, 3)"),
        (nn.LayerNorm(5), prunus.randn(2, 4), "LayerNorm((5,)", "(2, 4)"),
    ]
    for layer, x, name, shape in cases:
        with pytest.raises(ShapeError) as e:
            layer(x)
        assert name in str(e.value) and shape in str(e.value), str(e.value)
    with pytest.raises(ShapeError, match=r"expected input of shape \(\*, 784\), got \(2, 785\)"):
        nn.Linear(784, 300)(prunus.randn(2, 785))


def test_linear_init_like_pytorch():
    g = prunus.Generator().manual_seed(3)
    m = nn.Linear(400, 300, generator=g)
    bound = 1 / math.sqrt(400)
    w, b = m.weight.data, m.bias.data
    assert w.shape == (300, 400) and w.flags.c_contiguous and w.dtype == np.float32
    assert np.abs(w).max() <= bound and np.abs(w).max() > 0.99 * bound
    assert np.abs(b).max() <= bound
    np.testing.assert_allclose(w.std(), bound / math.sqrt(3), rtol=0.02)  # U(-b, b)
    m2 = nn.Linear(400, 300, generator=prunus.Generator().manual_seed(3))
    np.testing.assert_array_equal(w, m2.weight.data)
    t = torch.nn.Linear(400, 300)
    assert abs(t.weight.detach().numpy().std() - w.std()) < 0.02 * w.std()
