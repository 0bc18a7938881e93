"""Tensors without gradients: construction, factories, dtypes and promotion, conversions,
indexing and assignment, seeding. No PyTorch needed."""

import pathlib
import re

import numpy as np
import pytest

import prunus
from prunus import dtypes
from prunus.errors import ArgumentError, DTypeError, ShapeError

DOCS = pathlib.Path(__file__).resolve().parents[1] / "docs" / "dtypes.md"


# -- construction ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "data, dtype",
    [
        (1.5, prunus.float32),
        ([1.0, 2.0], prunus.float32),
        (3, prunus.int64),
        ([[1, 2], [3, 4]], prunus.int64),
        (True, prunus.bool),
        (np.zeros(2, np.float64), prunus.float64),
        (np.zeros(2, np.int32), prunus.int32),
        (np.zeros(2, np.uint8), prunus.uint8),
    ],
)
def test_tensor_infers_dtype_like_pytorch(data, dtype):
    assert prunus.tensor(data).dtype is dtype


def test_tensor_copies_and_from_numpy_shares():
    a = np.arange(3.0)
    t, s = prunus.tensor(a), prunus.from_numpy(a)
    a[0] = 10
    assert t[0].item() == 0.0 and s[0].item() == 10.0


def test_metadata():
    x = prunus.zeros(2, 3, 4)
    assert x.shape == (2, 3, 4) and x.size() == (2, 3, 4) and x.size(-1) == 4
    assert x.ndim == 3 and x.dim() == 3 and x.numel() == 24 and len(x) == 2
    assert x.dtype is prunus.float32 and x.device == "cpu" and str(x.device) == "cpu"
    assert x.is_leaf and x.grad_fn is None and not x.requires_grad and x.element_size() == 4


@pytest.mark.parametrize(
    "make, shape, value, dtype",
    [
        (lambda: prunus.zeros(2, 3), (2, 3), 0, prunus.float32),
        (lambda: prunus.ones((2, 3), dtype=prunus.int32), (2, 3), 1, prunus.int32),
        (lambda: prunus.full((2,), 7), (2,), 7, prunus.int64),
        (lambda: prunus.full((2,), 0.5), (2,), 0.5, prunus.float32),
        (lambda: prunus.zeros_like(prunus.ones(3, dtype=prunus.float64)), (3,), 0, prunus.float64),
        (lambda: prunus.ones_like(prunus.zeros(3)), (3,), 1, prunus.float32),
        (lambda: prunus.full_like(prunus.zeros(3), 2.0), (3,), 2, prunus.float32),
    ],
)
def test_filled_factories(make, shape, value, dtype):
    t = make()
    assert t.shape == shape and t.dtype is dtype
    assert (t.numpy() == value).all()


def test_empty_arange_linspace_eye():
    assert prunus.empty(2, 3).shape == (2, 3)
    np.testing.assert_array_equal(prunus.arange(5).numpy(), np.arange(5))
    assert prunus.arange(5).dtype is prunus.int64
    np.testing.assert_allclose(prunus.arange(0, 1, 0.25).numpy(), [0, 0.25, 0.5, 0.75])
    assert prunus.arange(0, 1, 0.25).dtype is prunus.float32
    np.testing.assert_allclose(prunus.linspace(0, 1, 5).numpy(), [0, 0.25, 0.5, 0.75, 1])
    np.testing.assert_array_equal(prunus.eye(2, 3).numpy(), np.eye(2, 3))


def test_random_factories_are_reproducible_and_well_shaped():
    prunus.manual_seed(123)
    a = prunus.randn(1000)
    prunus.manual_seed(123)
    b = prunus.randn(1000)
    np.testing.assert_array_equal(a.numpy(), b.numpy())
    assert abs(a.mean().item()) < 0.15 and abs(a.std().item() - 1) < 0.1
    g1, g2 = prunus.Generator().manual_seed(7), prunus.Generator().manual_seed(7)
    np.testing.assert_array_equal(prunus.rand(5, generator=g1).numpy(), prunus.rand(5, generator=g2).numpy())
    r = prunus.rand(1000, generator=g1)
    assert r.dtype is prunus.float32 and 0 <= r.min().item() and r.max().item() < 1
    i = prunus.randint(0, 10, (1000,), generator=g1)
    assert i.dtype is prunus.int64 and i.min().item() >= 0 and i.max().item() <= 9
    assert sorted(prunus.randperm(6, generator=g1).tolist()) == list(range(6))
    assert prunus.randn(3, dtype=prunus.float64).dtype is prunus.float64
    assert prunus.randn(3, dtype=prunus.bfloat16).dtype is prunus.bfloat16


def test_generator_state_round_trip():
    g = prunus.Generator().manual_seed(3)
    prunus.rand(10, generator=g)
    state = g.get_state()
    a = prunus.rand(10, generator=g).numpy()
    g.set_state(state)
    np.testing.assert_array_equal(prunus.rand(10, generator=g).numpy(), a)
    with pytest.raises(ArgumentError):
        g.set_state(state[:5])


# -- dtypes and promotion --------------------------------------------------------------------


def test_promotion_table_in_docs_matches_code():
    rows = [line for line in DOCS.read_text().splitlines() if line.startswith("| **")]
    assert len(rows) == len(dtypes.ALL)
    for row in rows:
        cells = [c.strip() for c in row.strip("|").split("|")]
        a = dtypes.as_dtype(cells[0].strip("*"))
        for b, want in zip(dtypes.ALL, cells[1:]):
            assert prunus.promote_types(a, b).name == want, (a, b)
            assert prunus.promote_types(b, a).name == want, (b, a)


@pytest.mark.parametrize(
    "a, b, want",
    [
        (prunus.ones(2, dtype=prunus.int32), 2.5, prunus.float32),
        (prunus.ones(2, dtype=prunus.float16), 2.5, prunus.float16),
        (prunus.ones(2, dtype=prunus.int32), 7, prunus.int32),
        (prunus.ones(2, dtype=prunus.bool), 7, prunus.int64),
        (prunus.ones(2, dtype=prunus.int32), prunus.tensor(1.5, dtype=prunus.float64), prunus.float64),
        (prunus.ones(2, dtype=prunus.float32), prunus.tensor(1.5, dtype=prunus.float64), prunus.float32),
        (prunus.ones(2, dtype=prunus.int64), prunus.ones(2, dtype=prunus.float32), prunus.float32),
        (prunus.ones(2, dtype=prunus.float16), prunus.ones(2, dtype=prunus.bfloat16), prunus.float32),
    ],
)
def test_binary_ops_promote_like_pytorch(a, b, want):
    assert (a + b).dtype is want
    assert (b * a).dtype is want


def test_integer_true_division_gives_float_and_floor_division_keeps_int():
    a, b = prunus.tensor([7, -7]), prunus.tensor([2, 2])
    assert (a / b).dtype is prunus.float32
    np.testing.assert_array_equal((a / b).numpy(), [3.5, -3.5])
    np.testing.assert_array_equal((a // b).numpy(), [3, -4])
    np.testing.assert_array_equal((a % b).numpy(), [1, 1])
    assert (a // b).dtype is prunus.int64


def test_comparisons_return_bool_without_grad():
    x = prunus.tensor([1.0, 2.0, 3.0], requires_grad=True)
    m = x > 1.5
    assert m.dtype is prunus.bool and not m.requires_grad
    np.testing.assert_array_equal(m.numpy(), [False, True, True])
    np.testing.assert_array_equal(((x >= 2) & (x < 3)).numpy(), [False, True, False])
    np.testing.assert_array_equal((~m).numpy(), [True, False, False])


def test_unknown_dtype_names():
    with pytest.raises(DTypeError, match="complex"):
        prunus.zeros(2, dtype="complex64")
    assert dtypes.as_dtype("torch.float64") is prunus.float64
    assert dtypes.as_dtype(float) is prunus.float32 and dtypes.as_dtype(np.int8) is prunus.int8


# -- conversions -----------------------------------------------------------------------------


def test_conversions():
    x = prunus.tensor([1.5, -2.5])
    assert x.double().dtype is prunus.float64 and x.half().dtype is prunus.float16
    assert x.long().tolist() == [1, -2] and x.int().dtype is prunus.int32
    assert x.bool().tolist() == [True, True]
    assert x.bfloat16().float().tolist() == [1.5, -2.5]
    assert x.to(prunus.float64).dtype is prunus.float64
    assert x.to("cpu") is x and x.to(prunus.float32) is x
    assert x.to(prunus.ones(1, dtype=prunus.int8)).dtype is prunus.int8
    assert x.to(prunus.float32, copy=True) is not x
    assert prunus.tensor(3.5).item() == 3.5 and isinstance(prunus.tensor(3).item(), int)
    assert float(prunus.tensor([2.0])) == 2.0 and int(prunus.tensor(4)) == 4
    assert np.asarray(x).dtype == np.float32
    c = x.clone()
    c[0] = 9
    assert x[0].item() == 1.5


def test_requires_grad_and_detach():
    x = prunus.ones(2).requires_grad_()
    assert x.requires_grad and x.is_leaf
    y = (x * 2).detach()
    assert not y.requires_grad and y.is_leaf


def test_repr():
    assert repr(prunus.tensor([1.0, 2.5])) == "tensor([1.0, 2.5])"
    assert repr(prunus.tensor([1, 2])) == "tensor([1, 2])"
    assert "dtype=prunus.float64" in repr(prunus.tensor(1.0, dtype=prunus.float64))
    x = prunus.tensor([1.0], requires_grad=True)
    assert "requires_grad=True" in repr(x) and "grad_fn=<MulBackward>" in repr(x * 2)


# -- indexing and assignment -----------------------------------------------------------------


@pytest.mark.parametrize(
    "index",
    [
        1,
        -1,
        slice(1, None),
        (slice(None), 0),
        (Ellipsis, 1),
        (None, 1),
        (slice(None, None, 2), slice(1, 3)),
        ([0, 2, 2],),
        (np.array([1, 0]), slice(None)),
        (slice(None), [3, 1]),
        (0, Ellipsis, None),
    ],
)
def test_getitem_matches_numpy(index):
    a = np.arange(12.0).reshape(3, 4)
    np.testing.assert_array_equal(prunus.tensor(a)[index].numpy(), a[index])


def test_getitem_with_tensor_indices_and_masks():
    a = np.arange(12.0).reshape(3, 4)
    x = prunus.tensor(a)
    np.testing.assert_array_equal(x[prunus.tensor([2, 0])].numpy(), a[[2, 0]])
    np.testing.assert_array_equal(x[x > 5].numpy(), a[a > 5])
    np.testing.assert_array_equal(x[prunus.tensor([True, False, True])].numpy(), a[[True, False, True]])
    assert x[prunus.tensor(1)].shape == (4,)


def test_setitem_on_tensors_without_grad():
    x = prunus.zeros(3, 4)
    x[0] = 1.0
    x[:, 1] = prunus.tensor([5.0, 6.0, 7.0])
    x[x > 6] = -1.0
    x[prunus.tensor([2]), 3] = 9
    want = np.zeros((3, 4), np.float32)
    want[0] = 1
    want[:, 1] = [5, 6, 7]
    want[want > 6] = -1
    want[2, 3] = 9
    np.testing.assert_array_equal(x.numpy(), want)


def test_iteration_and_truth():
    x = prunus.tensor([[1, 2], [3, 4]])
    assert [row.tolist() for row in x] == [[1, 2], [3, 4]]
    assert bool(prunus.tensor([1]))
    with pytest.raises(DTypeError, match="ambiguous"):
        bool(x)


def test_shape_helpers():
    x = prunus.arange(24).reshape(2, 3, 4)
    assert x.view(-1, 4).shape == (6, 4) and x.flatten(1).shape == (2, 12)
    assert x.unsqueeze(0).squeeze().shape == (2, 3, 4) and x.permute(2, 0, 1).shape == (4, 2, 3)
    assert x.transpose(0, 2).shape == (4, 3, 2) and x.T.shape == (4, 3, 2) and x.mT.shape == (2, 4, 3)
    assert [p.shape for p in x.split(2, dim=2)] == [(2, 3, 2), (2, 3, 2)]
    assert [p.shape for p in x.chunk(3, dim=1)] == [(2, 1, 4)] * 3
    assert prunus.cat([x, x], 1).shape == (2, 6, 4) and prunus.stack([x, x], -1).shape == (2, 3, 4, 2)
    with pytest.raises(ShapeError):
        x.view(5, -1)


def test_in_place_methods():
    x = prunus.ones(3)
    x.add_(1).mul_(3).sub_(prunus.tensor([1.0, 2.0, 3.0])).div_(2)
    np.testing.assert_array_equal(x.numpy(), [2.5, 2.0, 1.5])
    x.clamp_(max=2.0)
    np.testing.assert_array_equal(x.numpy(), [2.0, 2.0, 1.5])
    x.masked_fill_(x < 2, 0.0)
    np.testing.assert_array_equal(x.numpy(), [2.0, 2.0, 0.0])
    x.copy_(prunus.tensor([7, 8, 9]))
    np.testing.assert_array_equal(x.numpy(), [7.0, 8.0, 9.0])
    x.fill_(3)
    assert x.tolist() == [3.0, 3.0, 3.0]
    x.zero_()
    assert x.tolist() == [0.0, 0.0, 0.0]
    x += 2
    assert x.tolist() == [2.0, 2.0, 2.0]


def test_erf_fallback_matches_math_erf():
    import math

    from prunus.backend import cpu

    xs = np.concatenate([np.linspace(-6, 6, 241), [0.0, 1e-8, -1e-8, 2.9999, 3.0, 3.0001, 30.0]])
    got = cpu.kernels._erf_series(xs)
    want = np.array([math.erf(v) for v in xs])
    np.testing.assert_allclose(got, want, rtol=2e-15, atol=2e-16)
    got32 = cpu.kernels._erf_series(xs.astype(np.float32))
    assert got32.dtype == np.float32


def test_module_docstrings_everywhere():
    root = pathlib.Path(prunus.__file__).parent
    for path in root.rglob("*.py"):
        text = path.read_text()
        assert re.match(r'^(#.*\n)*"""', text), f"{path} does not open with a docstring"
