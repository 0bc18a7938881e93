"""DataLoader: batching, drop_last, seeded shuffling, samplers, collation, the whole-batch fast path,
and clear errors for bad arguments."""

from __future__ import annotations

from collections import namedtuple

import numpy as np
import pytest

import prunus
from prunus import errors as E
from prunus.data import (
    BatchSampler,
    DataLoader,
    Dataset,
    RandomSampler,
    SequentialSampler,
    Subset,
    SubsetRandomSampler,
    TensorDataset,
    default_collate,
    random_split,
)


def _ds(n=10):
    return TensorDataset(prunus.arange(n * 3, dtype=prunus.float32).reshape(n, 3), prunus.arange(n))


class ListDataset(Dataset):
    """A plain dataset without the fast path: items are whatever the list holds."""

    def __init__(self, items):
        self.items = items

    def __getitem__(self, i):
        return self.items[i]

    def __len__(self):
        return len(self.items)


def _labels(loader):
    return [y.tolist() for _, y in loader]


def _flat(loader):
    return [i for _, y in loader for i in y.tolist()]


def test_batches_and_shapes():
    loader = DataLoader(_ds(10), batch_size=4)
    batches = list(loader)
    assert len(loader) == 3 and len(batches) == 3
    assert [tuple(x.shape) for x, _ in batches] == [(4, 3), (4, 3), (2, 3)]
    assert batches[0][1].dtype is prunus.int64 and batches[0][0].dtype is prunus.float32
    assert _labels(loader) == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]


def test_drop_last():
    loader = DataLoader(_ds(10), batch_size=4, drop_last=True)
    assert len(loader) == 2 and _labels(loader) == [[0, 1, 2, 3], [4, 5, 6, 7]]
    assert len(DataLoader(_ds(8), batch_size=4, drop_last=True)) == 2


@pytest.mark.parametrize("ds", [_ds(50), ListDataset([(float(i), i) for i in range(50)])], ids=["fast", "items"])
def test_shuffle_every_sample_once_and_reproducible(ds):
    g = prunus.Generator().manual_seed(0)
    loader = DataLoader(ds, batch_size=8, shuffle=True, generator=g)
    epoch1 = _flat(loader)
    epoch2 = _flat(loader)
    assert sorted(epoch1) == sorted(epoch2) == list(range(50))
    assert epoch1 != list(range(50)) and epoch1 != epoch2  # shuffled, and each epoch differs
    g.manual_seed(0)
    assert _flat(loader) == epoch1  # same generator state -> same order
    state = g.get_state()
    a = _labels(loader)
    g.set_state(state)
    assert _labels(loader) == a


def test_shuffle_uses_default_generator_without_one():
    loader = DataLoader(_ds(30), batch_size=30, shuffle=True)
    prunus.manual_seed(5)
    a = _labels(loader)
    prunus.manual_seed(5)
    assert _labels(loader) == a


def test_fast_path_equals_per_item_collate():
    ds = _ds(23)
    g1, g2 = prunus.Generator().manual_seed(3), prunus.Generator().manual_seed(3)
    fast = list(DataLoader(ds, batch_size=5, shuffle=True, generator=g1))
    slow = list(DataLoader(ds, batch_size=5, shuffle=True, generator=g2, collate_fn=default_collate))
    assert len(fast) == len(slow) == 5
    for (xf, yf), (xs, ys) in zip(fast, slow):
        np.testing.assert_array_equal(xf.numpy(), xs.numpy())
        np.testing.assert_array_equal(yf.numpy(), ys.numpy())
        assert xf.dtype is xs.dtype and yf.dtype is ys.dtype


def test_fast_path_through_random_split_subsets():
    train, val = random_split(_ds(20), [15, 5], generator=prunus.Generator().manual_seed(0))
    got = _flat(DataLoader(val, batch_size=2))
    assert got == val.indices
    assert _flat(DataLoader(Subset(train, [0, 1]), batch_size=2)) == train.indices[:2]


def test_samplers():
    ds = _ds(10)
    assert list(SequentialSampler(ds)) == list(range(10))
    g = prunus.Generator().manual_seed(0)
    r = list(RandomSampler(ds, generator=g))
    assert sorted(r) == list(range(10))
    g.manual_seed(0)
    assert list(RandomSampler(ds, generator=g)) == r
    rep = list(RandomSampler(ds, replacement=True, num_samples=25, generator=g))
    assert len(rep) == 25 and all(0 <= i < 10 for i in rep)
    assert sorted(SubsetRandomSampler([1, 5, 7])) == [1, 5, 7]
    bs = BatchSampler(SequentialSampler(ds), 4, drop_last=False)
    assert list(bs) == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]] and len(bs) == 3
    assert len(BatchSampler(SequentialSampler(ds), 4, drop_last=True)) == 2
    with pytest.raises(E.ArgumentError, match="num_samples=11 exceeds the 10 samples"):
        RandomSampler(ds, num_samples=11)


def test_sampler_and_batch_sampler_arguments():
    ds = _ds(10)
    assert _labels(DataLoader(ds, batch_size=3, sampler=[9, 8, 7, 0])) == [[9, 8, 7], [0]]
    assert _labels(DataLoader(ds, batch_sampler=[[1, 2], [3]])) == [[1, 2], [3]]
    g = prunus.Generator().manual_seed(0)
    loader = DataLoader(ds, batch_sampler=BatchSampler(RandomSampler(ds, generator=g), 3, False))
    assert len(loader) == 4 and sorted(_flat(loader)) == list(range(10))


def test_collate_tuples_dicts_numbers_numpy():
    Point = namedtuple("Point", "x y")
    items = [
        {"img": np.full((2, 2), i, np.uint8), "label": i, "w": 0.5 * i, "name": f"s{i}",
         "pair": (prunus.tensor([i, i]), True), "pt": Point(i, -i)}
        for i in range(3)
    ]
    batch = next(iter(DataLoader(ListDataset(items), batch_size=3)))
    assert batch["img"].shape == (3, 2, 2) and batch["img"].dtype is prunus.uint8
    assert batch["label"].dtype is prunus.int64 and batch["label"].tolist() == [0, 1, 2]
    assert batch["w"].dtype is prunus.float64 and batch["w"].tolist() == [0.0, 0.5, 1.0]
    assert batch["name"] == ["s0", "s1", "s2"]
    assert isinstance(batch["pair"], tuple) and batch["pair"][0].shape == (3, 2)
    assert batch["pair"][1].dtype is prunus.bool_
    assert isinstance(batch["pt"], Point) and batch["pt"].y.tolist() == [0, -1, -2]
    assert default_collate([[1, 2], [3, 4]]) [0].tolist() == [1, 3]


def test_collate_errors():
    with pytest.raises(E.ShapeError, match=r"different shapes \[\(2,\), \(3,\)\]"):
        default_collate([prunus.zeros(2), prunus.zeros(3)])
    with pytest.raises(E.ShapeError, match="different lengths"):
        default_collate([(1, 2), (1,)])
    with pytest.raises(E.DTypeError, match="cannot collate samples of type object"):
        default_collate([object(), object()])


def test_custom_collate_and_no_batching():
    loader = DataLoader(_ds(5), batch_size=2, collate_fn=lambda items: len(items))
    assert list(loader) == [2, 2, 1]
    items = list(DataLoader(_ds(3), batch_size=None))
    assert len(items) == 3 and items[2][1].item() == 2


@pytest.mark.parametrize(
    "kwargs, fragment",
    [
        ({"batch_size": 0}, "batch_size must be a positive int, got 0"),
        ({"batch_size": -3}, "batch_size must be a positive int, got -3"),
        ({"batch_size": 2.5}, "batch_size must be a positive int, got 2.5"),
        ({"sampler": [0, 1], "shuffle": True}, "sampler and shuffle=True are mutually exclusive"),
        ({"batch_sampler": [[0]], "batch_size": 4}, "batch_sampler is mutually exclusive"),
        ({"batch_sampler": [[0]], "drop_last": True}, "batch_sampler is mutually exclusive"),
        ({"num_workers": 2}, "num_workers=2 is not supported"),
        ({"collate_fn": 3}, "collate_fn must be callable"),
    ],
)
def test_bad_arguments(kwargs, fragment):
    with pytest.raises(E.ArgumentError, match=fragment):
        DataLoader(_ds(4), **kwargs)


def test_batch_sampler_bad_size():
    with pytest.raises(E.ArgumentError, match="BatchSampler: batch_size must be a positive int, got 0"):
        BatchSampler(SequentialSampler(_ds(4)), 0)
