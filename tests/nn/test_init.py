"""nn.init: PyTorch's fans and gains, the bounds and spreads of each initializer, generators."""

from __future__ import annotations

import math

import numpy as np
import pytest

import prunus
from prunus.errors import ArgumentError, ShapeError
from prunus.nn import init


def test_gains_and_fans_match_pytorch():
    torch = pytest.importorskip("torch")
    for nl, param in [("linear", None), ("sigmoid", None), ("tanh", None), ("relu", None),
                      ("leaky_relu", None), ("leaky_relu", 0.2), ("leaky_relu", math.sqrt(5)),
                      ("selu", None), ("conv2d", None)]:
        assert init.calculate_gain(nl, param) == pytest.approx(torch.nn.init.calculate_gain(nl, param))
    for shape in [(3, 4), (20, 5, 3, 3), (7, 2, 5)]:
        assert init._calculate_fan_in_and_fan_out(prunus.empty(*shape)) == \
            torch.nn.init._calculate_fan_in_and_fan_out(torch.empty(*shape))
    with pytest.raises(ShapeError, match="at least 2 dimensions"):
        init.xavier_uniform_(prunus.empty(5))
    with pytest.raises(ArgumentError):
        init.calculate_gain("swish")
    with pytest.raises(ArgumentError):
        init.kaiming_uniform_(prunus.empty(3, 3), mode="fan")


@pytest.mark.parametrize("name, kwargs, std", [
    ("kaiming_uniform_", {}, math.sqrt(2) / math.sqrt(200)),
    ("kaiming_uniform_", {"a": math.sqrt(5)}, 1 / math.sqrt(3) / math.sqrt(200)),
    ("kaiming_normal_", {"nonlinearity": "relu"}, math.sqrt(2) / math.sqrt(200)),
    ("kaiming_normal_", {"mode": "fan_out", "nonlinearity": "relu"}, math.sqrt(2) / math.sqrt(300)),
    ("xavier_uniform_", {"gain": 2.0}, 2.0 * math.sqrt(2 / 500)),
    ("xavier_normal_", {}, math.sqrt(2 / 500)),
    ("normal_", {"mean": 0.0, "std": 0.3}, 0.3),
    ("uniform_", {"a": -0.5, "b": 0.5}, 1 / math.sqrt(12)),
])
def test_spread_bounds_and_generator(name, kwargs, std):
    fn = getattr(init, name)
    w = prunus.empty(300, 200, dtype=prunus.float64)
    out = fn(w, **kwargs, generator=prunus.Generator().manual_seed(7))
    assert out is w
    a = w.numpy()
    np.testing.assert_allclose(a.std(), std, rtol=0.02)
    assert abs(a.mean()) < 0.02 * std * 10
    if "uniform" in name:
        assert np.abs(a).max() <= math.sqrt(3) * std + 1e-12
    again = fn(prunus.empty(300, 200, dtype=prunus.float64), **kwargs, generator=prunus.Generator().manual_seed(7))
    np.testing.assert_array_equal(a, again.numpy())
    prunus.manual_seed(1)
    b = fn(prunus.empty(300, 200, dtype=prunus.float64), **kwargs).numpy()
    prunus.manual_seed(1)
    np.testing.assert_array_equal(b, fn(prunus.empty(300, 200, dtype=prunus.float64), **kwargs).numpy())


def test_constants_and_parameters():
    from prunus import nn

    p = nn.Parameter(prunus.empty(2, 3))
    assert init.zeros_(p) is p and np.all(p.data == 0) and p.requires_grad
    init.ones_(p)
    assert np.all(p.data == 1)
    init.constant_(p, 0.25)
    assert np.all(p.data == 0.25)
    init.normal_(p, generator=prunus.Generator().manual_seed(0))
    assert p.dtype is prunus.float32 and p.grad is None and p.is_leaf
