"""Samplers: which indices a `DataLoader` visits and in what order, and how they form batches.

Each sampler can also hand out one epoch's indices as a NumPy array (`_epoch()`), so batching an
epoch is one array split rather than a Python loop per index. Iterating a sampler and the
`_epoch()` fast path draw the same random numbers, so both give the same order.
"""

from __future__ import annotations

import numpy as np

from prunus.errors import ArgumentError
from prunus.random import numpy_generator


class Sampler:
    """Yields dataset indices. Subclasses implement `_epoch()` or `__iter__`."""

    def _epoch(self) -> np.ndarray:
        return np.fromiter(iter(self), dtype=np.int64)

    def __iter__(self):
        return iter(self._epoch().tolist())


class SequentialSampler(Sampler):
    """0, 1, ..., len(data_source) - 1."""

    def __init__(self, data_source):
        self.data_source = data_source

    def _epoch(self):
        return np.arange(len(self.data_source), dtype=np.int64)

    def __len__(self) -> int:
        return len(self.data_source)


class RandomSampler(Sampler):
    """A random permutation each epoch (or `num_samples` draws with replacement).

    Draws from `generator` (a `prunus.Generator`; the default generator when None), so reseeding
    it reproduces the order, and successive epochs differ.
    """

    def __init__(self, data_source, replacement=False, num_samples=None, generator=None):
        if num_samples is not None and (not isinstance(num_samples, int) or num_samples <= 0):
            raise ArgumentError(f"RandomSampler: num_samples must be a positive int, got {num_samples!r}")
        if num_samples is not None and not replacement and num_samples > len(data_source):
            raise ArgumentError(
                f"RandomSampler: num_samples={num_samples} exceeds the {len(data_source)} samples; "
                "pass replacement=True to draw more"
            )
        self.data_source = data_source
        self.replacement = bool(replacement)
        self._num_samples = num_samples
        self.generator = generator

    @property
    def num_samples(self) -> int:
        return len(self.data_source) if self._num_samples is None else self._num_samples

    def _epoch(self):
        g, n = numpy_generator(self.generator), len(self.data_source)
        if self.replacement:
            return g.integers(0, n, self.num_samples, dtype=np.int64)
        return g.permutation(n)[: self.num_samples].astype(np.int64, copy=False)

    def __len__(self) -> int:
        return self.num_samples


class SubsetRandomSampler(Sampler):
    """The given indices in a random order each epoch."""

    def __init__(self, indices, generator=None):
        self.indices = np.asarray(list(indices), dtype=np.int64)
        self.generator = generator

    def _epoch(self):
        return self.indices[numpy_generator(self.generator).permutation(len(self.indices))]

    def __len__(self) -> int:
        return len(self.indices)


class BatchSampler(Sampler):
    """Groups the indices of `sampler` into lists of `batch_size` (the last one shorter unless
    `drop_last`)."""

    def __init__(self, sampler, batch_size: int, drop_last: bool = False):
        if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size <= 0:
            raise ArgumentError(f"BatchSampler: batch_size must be a positive int, got {batch_size!r}")
        self.sampler = sampler
        self.batch_size = batch_size
        self.drop_last = bool(drop_last)

    def _batches(self):
        """One epoch as a list of NumPy index arrays."""
        idx = sampler_indices(self.sampler)
        stop = len(idx) - len(idx) % self.batch_size if self.drop_last else len(idx)
        return [idx[i : i + self.batch_size] for i in range(0, stop, self.batch_size)]

    def __iter__(self):
        return (b.tolist() for b in self._batches())

    def __len__(self) -> int:
        n = len(self.sampler)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)


def sampler_indices(sampler) -> np.ndarray:
    """One epoch of any sampler (ours, or any iterable of ints) as a NumPy int64 array."""
    if isinstance(sampler, Sampler):
        return np.asarray(sampler._epoch(), dtype=np.int64)
    return np.fromiter((int(i) for i in sampler), dtype=np.int64)
