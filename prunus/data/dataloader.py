"""`DataLoader`: batches of a dataset in sequential or seeded random order, and `default_collate`.

Loading runs in the calling process. A dataset with `_get_batch(indices)` (TensorDataset, Subsets
of it, MNIST without transforms) is sliced a whole batch at a time with one fancy index; any other
dataset is indexed per item and the items are collated.
"""

from __future__ import annotations

import collections.abc
import numbers

import numpy as np

from prunus import dtypes
from prunus.data.sampler import BatchSampler, RandomSampler, SequentialSampler, sampler_indices
from prunus.errors import ArgumentError, DTypeError, ShapeError
from prunus.tensor import Tensor


def _stack_tensors(batch):
    first = batch[0]
    if any(t.requires_grad for t in batch) or any(t.device is not first.device for t in batch):
        from prunus.ops import stack  # keeps the graph, and reports device mismatches

        return stack(batch)
    shapes = {t.shape for t in batch}
    if len(shapes) > 1:
        raise ShapeError(
            f"default_collate: cannot stack tensors of different shapes {sorted(shapes)}; "
            "pass a collate_fn that pads or keeps them in a list"
        )
    # stacking the raw arrays skips one autograd-op dispatch per batch: it is the hot path
    return Tensor._make(first.device.xp.stack([t.data for t in batch]), first.device, False, None)


def default_collate(batch):
    """Stack a list of samples into a batch, recursively.

    Tensors and NumPy arrays -> one tensor with a new first dimension; Python ints -> int64, floats
    -> float64, bools -> bool tensors; str -> list; dicts -> dict of collated values; tuples and
    lists -> the same kind of sequence of collated fields (namedtuples keep their type).
    """
    if not batch:
        raise ArgumentError("default_collate: empty batch")
    elem = batch[0]
    if isinstance(elem, Tensor):
        return _stack_tensors(batch)
    if isinstance(elem, (np.ndarray, np.generic)) and not isinstance(elem, (np.str_, np.bytes_)):
        if elem.dtype == object:
            raise DTypeError("default_collate: cannot collate NumPy arrays of dtype object")
        arr = np.stack([np.asarray(b) for b in batch])
        dtypes.from_numpy_dtype(arr.dtype)  # a clear DTypeError for unsupported dtypes
        return Tensor._make(arr, _cpu(), False, None)
    if isinstance(elem, bool):
        return Tensor._make(np.array(batch, dtype=np.bool_), _cpu(), False, None)
    if isinstance(elem, numbers.Integral):
        return Tensor._make(np.array(batch, dtype=np.int64), _cpu(), False, None)
    if isinstance(elem, numbers.Real):
        return Tensor._make(np.array(batch, dtype=np.float64), _cpu(), False, None)
    if isinstance(elem, (str, bytes)):
        return list(batch)
    if isinstance(elem, collections.abc.Mapping):
        return {k: default_collate([d[k] for d in batch]) for k in elem}
    if isinstance(elem, collections.abc.Sequence):
        if any(len(b) != len(elem) for b in batch):
            raise ShapeError(
                f"default_collate: samples have different lengths {sorted({len(b) for b in batch})}"
            )
        fields = [default_collate(list(f)) for f in zip(*batch)]
        if isinstance(elem, tuple) and hasattr(elem, "_fields"):
            return type(elem)(*fields)
        return tuple(fields) if isinstance(elem, tuple) else fields
    raise DTypeError(f"default_collate: cannot collate samples of type {type(elem).__name__}")


def _cpu():
    from prunus.backend import get_device

    return get_device("cpu")


def _positive_int(value, name):
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value <= 0:
        raise ArgumentError(f"DataLoader: {name} must be a positive int, got {value!r}")
    return int(value)


class DataLoader:
    """Iterate over `dataset` in batches.

    `DataLoader(dataset, batch_size=1, shuffle=False, sampler=None, batch_sampler=None,
    collate_fn=None, drop_last=False, generator=None)`, as in PyTorch. `shuffle=True` draws a new
    permutation each epoch from `generator` (a `prunus.Generator`, else the default generator):
    reseeding it replays the same order. `batch_size=None` yields single samples, uncollated.
    """

    def __init__(self, dataset, batch_size=1, shuffle=False, sampler=None, batch_sampler=None,
                 num_workers=0, collate_fn=None, drop_last=False, generator=None):
        if num_workers != 0:
            raise ArgumentError(
                f"DataLoader: num_workers={num_workers!r} is not supported; prunus loads in the "
                "calling process (use num_workers=0)"
            )
        if sampler is not None and shuffle:
            raise ArgumentError("DataLoader: sampler and shuffle=True are mutually exclusive; "
                                "the sampler decides the order")
        if batch_sampler is not None:
            if batch_size != 1 or shuffle or sampler is not None or drop_last:
                raise ArgumentError("DataLoader: batch_sampler is mutually exclusive with "
                                    "batch_size, shuffle, sampler and drop_last")
            batch_size = None if not hasattr(batch_sampler, "batch_size") else batch_sampler.batch_size
        elif batch_size is not None:
            batch_size = _positive_int(batch_size, "batch_size")
        if collate_fn is not None and not callable(collate_fn):
            raise ArgumentError(f"DataLoader: collate_fn must be callable, got {type(collate_fn).__name__}")
        if sampler is None:
            sampler = RandomSampler(dataset, generator=generator) if shuffle else SequentialSampler(dataset)
        if batch_sampler is None and batch_size is not None:
            batch_sampler = BatchSampler(sampler, batch_size, drop_last)
        self.dataset = dataset
        self.batch_size = batch_size
        self.drop_last = bool(drop_last)
        self.sampler = sampler
        self.batch_sampler = batch_sampler
        self.generator = generator
        self.collate_fn = collate_fn or default_collate
        # the whole-batch path is only equivalent when batches go through the default collate
        self._fast = collate_fn is None and hasattr(dataset, "_get_batch")

    def _index_batches(self):
        if isinstance(self.batch_sampler, BatchSampler):
            return self.batch_sampler._batches()
        return (np.asarray(b, dtype=np.int64) for b in self.batch_sampler)

    def __iter__(self):
        ds = self.dataset
        if self.batch_sampler is None:  # batch_size=None: plain samples
            for i in sampler_indices(self.sampler).tolist():
                yield ds[i]
            return
        for idx in self._index_batches():
            if self._fast:
                yield ds._get_batch(idx)
            else:
                yield self.collate_fn([ds[i] for i in idx.tolist()])

    def __len__(self) -> int:
        return len(self.batch_sampler if self.batch_sampler is not None else self.sampler)
