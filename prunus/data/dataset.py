"""Datasets: the `Dataset` protocol, `TensorDataset`, `Subset`, `ConcatDataset` and `random_split`.

Datasets that can fetch a whole batch with one fancy index implement `_get_batch(indices)` (a NumPy
int array -> an already collated batch); `DataLoader` uses it instead of per-item indexing.
"""

from __future__ import annotations

import bisect
import itertools
import math

import numpy as np

from prunus.errors import ArgumentError, IndexOutOfRangeError, ShapeError, fmt_shape
from prunus.random import numpy_generator
from prunus.tensor import Tensor


class Dataset:
    """A map-style dataset: `__getitem__(i)` for 0 <= i < `len(dataset)`."""

    def __getitem__(self, index):
        raise NotImplementedError(f"{type(self).__name__} must implement __getitem__")

    def __add__(self, other):
        return ConcatDataset([self, other])


def _check_index(index, n, who):
    if not isinstance(index, (int, np.integer)) or isinstance(index, bool):
        raise ArgumentError(f"{who}: index must be an int, got {type(index).__name__}")
    if not -n <= index < n:
        raise IndexOutOfRangeError(f"{who}: index {index} is out of range for {n} samples")
    return int(index) % n if n else int(index)


class TensorDataset(Dataset):
    """Samples are `tuple(t[i] for t in tensors)`; all tensors share their first dimension.

    NumPy arrays are wrapped with `prunus.from_numpy` (no copy).
    """

    def __init__(self, *tensors):
        from prunus.creation import from_numpy

        if not tensors:
            raise ArgumentError("TensorDataset: needs at least one tensor")
        ts = tuple(from_numpy(t) if isinstance(t, np.ndarray) else t for t in tensors)
        for k, t in enumerate(ts):
            if not isinstance(t, Tensor):
                raise ArgumentError(f"TensorDataset: argument {k} is a {type(t).__name__}, not a tensor")
            if t.ndim == 0 or t.shape[0] != ts[0].shape[0]:
                raise ShapeError(
                    "TensorDataset: all tensors must have the same size in dimension 0, got "
                    + ", ".join(fmt_shape(x.shape) for x in ts)
                )
        self.tensors = ts

    def __getitem__(self, index):
        return tuple(t[index] for t in self.tensors)

    def __len__(self) -> int:
        return self.tensors[0].shape[0]

    def _get_batch(self, indices):
        # one fancy index per tensor instead of len(indices) item lookups and a stack
        return tuple(t[indices] for t in self.tensors)


class Subset(Dataset):
    """The samples of `dataset` at `indices`, in that order."""

    def __init__(self, dataset, indices):
        self.dataset = dataset
        self.indices = [int(i) for i in indices]
        n = len(dataset)
        bad = [i for i in self.indices if not -n <= i < n]
        if bad:
            raise IndexOutOfRangeError(f"Subset: indices {bad[:5]} are out of range for {n} samples")
        self._idx = np.asarray(self.indices, dtype=np.int64) % max(n, 1)
        if hasattr(dataset, "_get_batch"):
            self._get_batch = lambda indices: dataset._get_batch(self._idx[indices])

    def __getitem__(self, index):
        return self.dataset[self.indices[_check_index(index, len(self.indices), "Subset")]]

    def __len__(self) -> int:
        return len(self.indices)


class ConcatDataset(Dataset):
    """The samples of several datasets one after another."""

    def __init__(self, datasets):
        self.datasets = list(datasets)
        if not self.datasets:
            raise ArgumentError("ConcatDataset: needs at least one dataset")
        self.cumulative_sizes = np.cumsum([len(d) for d in self.datasets]).tolist()

    def __len__(self) -> int:
        return self.cumulative_sizes[-1]

    def __getitem__(self, index):
        i = _check_index(index, len(self), "ConcatDataset")
        k = bisect.bisect_right(self.cumulative_sizes, i)
        return self.datasets[k][i - (self.cumulative_sizes[k - 1] if k else 0)]


def _split_lengths(lengths, n):
    lengths = list(lengths)
    if lengths and all(isinstance(x, float) for x in lengths) and math.isclose(sum(lengths), 1.0):
        if any(not 0 <= x <= 1 for x in lengths):
            raise ArgumentError(f"random_split: fractions must lie in [0, 1], got {lengths}")
        # floor each share, then hand the remainder out one by one (as PyTorch does)
        out = [math.floor(n * f) for f in lengths]
        for k in range(n - sum(out)):
            out[k % len(out)] += 1
        return out
    if any(not isinstance(x, (int, np.integer)) or isinstance(x, bool) or x < 0 for x in lengths):
        raise ArgumentError(
            f"random_split: lengths must be non-negative ints or fractions summing to 1, got {lengths}"
        )
    if sum(lengths) != n:
        raise ArgumentError(
            f"random_split: lengths {lengths} sum to {sum(lengths)}, but the dataset has {n} samples"
        )
    return [int(x) for x in lengths]


def random_split(dataset, lengths, generator=None) -> list[Subset]:
    """Split into disjoint random `Subset`s of the given lengths (ints, or fractions summing to 1)."""
    n = len(dataset)
    sizes = _split_lengths(lengths, n)
    perm = numpy_generator(generator).permutation(n)
    bounds = np.cumsum([0] + sizes)
    return [Subset(dataset, perm[a:b].tolist()) for a, b in itertools.pairwise(bounds)]
