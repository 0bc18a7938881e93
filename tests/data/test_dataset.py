"""Dataset, TensorDataset, Subset, ConcatDataset and random_split: contents, splits, bad arguments."""

from __future__ import annotations

import numpy as np
import pytest

import prunus
from prunus import errors as E
from prunus.data import ConcatDataset, Dataset, Subset, TensorDataset, random_split


def _ds(n=10):
    return TensorDataset(prunus.arange(n * 2, dtype=prunus.float32).reshape(n, 2), prunus.arange(n))


def test_tensor_dataset_items():
    ds = _ds()
    assert len(ds) == 10
    x, y = ds[3]
    assert x.tolist() == [6.0, 7.0] and y.item() == 3
    assert ds[-1][1].item() == 9


def test_tensor_dataset_accepts_numpy_and_checks_lengths():
    ds = TensorDataset(np.zeros((4, 3), np.float32), np.arange(4))
    assert isinstance(ds.tensors[0], prunus.Tensor) and ds[2][1].item() == 2
    with pytest.raises(E.ShapeError, match=r"same size in dimension 0.*\(4, 3\), \(5,\)"):
        TensorDataset(prunus.zeros(4, 3), prunus.zeros(5))
    with pytest.raises(E.ArgumentError, match="at least one tensor"):
        TensorDataset()
    with pytest.raises(E.ArgumentError, match="argument 1 is a list"):
        TensorDataset(prunus.zeros(2), [1, 2])


def test_subset_and_concat():
    ds = _ds()
    sub = Subset(ds, [7, 2, 5])
    assert len(sub) == 3 and [sub[i][1].item() for i in range(3)] == [7, 2, 5]
    assert sub[-1][1].item() == 5
    with pytest.raises(E.IndexOutOfRangeError, match="index 3 is out of range for 3 samples"):
        sub[3]
    with pytest.raises(E.IndexOutOfRangeError, match=r"\[10\] are out of range for 10"):
        Subset(ds, [0, 10])
    cat = ConcatDataset([ds, _ds(3)])
    assert len(cat) == 13 and cat[10][1].item() == 0 and cat[9][1].item() == 9 and cat[-1][1].item() == 2
    assert len(ds + _ds(2)) == 12


def test_dataset_base_needs_getitem():
    with pytest.raises(NotImplementedError):
        Dataset()[0]


def test_random_split_disjoint_complete_and_seeded():
    ds = _ds(100)
    a, b, c = random_split(ds, [50, 30, 20], generator=prunus.Generator().manual_seed(1))
    idx = a.indices + b.indices + c.indices
    assert (len(a), len(b), len(c)) == (50, 30, 20)
    assert sorted(idx) == list(range(100))
    a2, _, _ = random_split(ds, [50, 30, 20], generator=prunus.Generator().manual_seed(1))
    assert a2.indices == a.indices
    a3, _, _ = random_split(ds, [50, 30, 20], generator=prunus.Generator().manual_seed(2))
    assert a3.indices != a.indices


def test_random_split_fractions():
    parts = random_split(_ds(10), [0.5, 0.3, 0.2], generator=prunus.Generator().manual_seed(0))
    assert [len(p) for p in parts] == [5, 3, 2]
    parts = random_split(_ds(11), [0.5, 0.5])  # the remainder goes to the first split, as in PyTorch
    assert [len(p) for p in parts] == [6, 5]
    assert sorted(parts[0].indices + parts[1].indices) == list(range(11))


def test_random_split_bad_lengths():
    with pytest.raises(E.ArgumentError, match=r"lengths \[5, 4\] sum to 9, but the dataset has 10 samples"):
        random_split(_ds(10), [5, 4])
    with pytest.raises(E.ArgumentError, match="non-negative ints or fractions"):
        random_split(_ds(10), [12, -2])
    with pytest.raises(E.ArgumentError, match="non-negative ints or fractions"):
        random_split(_ds(10), [0.5, 0.2])
