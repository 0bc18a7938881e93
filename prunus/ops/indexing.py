"""Indexing: x[index] (ints, slices, None, Ellipsis, integer arrays, boolean masks), x[index] = v,
gather, index_select, masked_fill.

Reading gathers; its gradient scatters (adding where an index repeats), and the gradient of that
scatter is the gather again, so second derivatives work. Indices are checked against the shape
first, so a bad index names the dimension and its size instead of surfacing a NumPy IndexError.
"""

from __future__ import annotations

import numpy as np

from prunus import autograd, dtypes
from prunus.autograd import Op, mark_modified
from prunus.errors import CaptureError, DTypeError, IndexOutOfRangeError, ShapeError, fmt_shape
from prunus.ops._util import describe, norm_dim
from prunus.tensor import Tensor

# -- index normalization ---------------------------------------------------------------------


def _index_array(item, dev, op):
    """A Tensor, list or array index as a backend integer or bool array."""
    if isinstance(item, Tensor):
        arr = item.data
    else:
        arr = np.asarray(item)
        if arr.dtype == object:
            raise DTypeError(f"{op}: cannot index with {item!r}")
        if arr.size == 0 and arr.dtype.kind == "f":  # x[[]] means an empty integer index
            arr = arr.astype(np.int64)
        arr = dev.kernels.from_numpy(arr)
    if arr.dtype.kind not in "biu":
        raise DTypeError(
            f"{op}: tensors used as indices must be integer or bool, got {arr.dtype}"
        )
    return arr


def normalize_index(x: Tensor, index, op: str = "getitem"):
    """Validate `index` against x's shape. Returns (index tuple of backend types, advanced?)."""
    if not isinstance(index, tuple):
        index = (index,)
    dev = x.device
    items = []
    consumed = 0
    for item in index:
        if item is None or item is Ellipsis:
            items.append(item)
            continue
        if isinstance(item, (bool, np.bool_)):
            raise DTypeError(f"{op}: a Python bool is not a valid index; use a bool tensor")
        if isinstance(item, (int, np.integer)):
            items.append(int(item))
            consumed += 1
        elif isinstance(item, slice):
            for part in (item.start, item.stop, item.step):
                if part is not None and not isinstance(part, (int, np.integer, Tensor)):
                    raise DTypeError(f"{op}: slice bounds must be ints, got {item}")
            if item.step is not None and int(item.step) == 0:
                raise IndexOutOfRangeError(f"{op}: slice step cannot be zero")
            items.append(item)
            consumed += 1
        elif isinstance(item, (Tensor, list, tuple, np.ndarray)) or hasattr(item, "__array__"):
            if isinstance(item, Tensor) and item.ndim == 0 and item.dtype.category == 1:
                items.append(int(item.item()))
                consumed += 1
                continue
            arr = _index_array(item, dev, op)
            if isinstance(item, Tensor) and autograd._state.tracer is not None:
                # a captured graph reads this index tensor again on every run, not its values now
                if arr is not item.data:
                    raise CaptureError(
                        f"{op}: an index tensor of dtype {item.dtype.name} inside a compiled "
                        "function; use an int64 or bool tensor (it is converted here, and the "
                        "conversion would be frozen)"
                    )
                autograd._state.tracer.value_of(item)
            items.append(arr)
            consumed += arr.ndim if arr.dtype.kind == "b" else 1
        else:
            raise DTypeError(
                f"{op}: only ints, slices, None, Ellipsis, integer/bool tensors are valid indices; "
                f"got {type(item).__name__} {item!r}"
            )
    if sum(1 for i in items if i is Ellipsis) > 1:
        raise IndexOutOfRangeError(f"{op}: an index can only have a single ellipsis ('...')")
    if consumed > x.ndim:
        raise IndexOutOfRangeError(
            f"{op}: too many indices for a tensor of dimension {x.ndim} (shape "
            f"{fmt_shape(x.shape)}): {consumed} dimensions indexed"
        )
    # check bounds, walking the dimensions each index item consumes
    dim = 0
    advanced = False
    arrays = []  # the advanced indices, which must broadcast together
    for item in items:
        if item is None:
            continue
        if item is Ellipsis:
            dim += x.ndim - consumed
            continue
        if isinstance(item, int):
            size = x.shape[dim]
            if not -size <= item < size:
                raise IndexOutOfRangeError(
                    f"{op}: index {item} is out of bounds for dimension {dim} with size {size} "
                    f"(shape {fmt_shape(x.shape)})"
                )
            dim += 1
        elif isinstance(item, slice):
            dim += 1
        elif item.dtype.kind == "b":
            want = x.shape[dim : dim + item.ndim]
            if tuple(item.shape) != want:
                raise IndexOutOfRangeError(
                    f"{op}: the mask of shape {fmt_shape(item.shape)} does not match the indexed "
                    f"tensor's shape {fmt_shape(want)} at dimensions {dim}..{dim + item.ndim - 1} "
                    f"(tensor shape {fmt_shape(x.shape)})"
                )
            advanced = advanced or "mask"
            dim += item.ndim
            arrays.append(item)
        else:
            size = x.shape[dim]
            if item.size and (int(item.max()) >= size or int(item.min()) < -size):
                bad = int(item.max()) if int(item.max()) >= size else int(item.min())
                raise IndexOutOfRangeError(
                    f"{op}: index {bad} is out of bounds for dimension {dim} with size {size} "
                    f"(shape {fmt_shape(x.shape)})"
                )
            advanced = "int"
            dim += 1
            arrays.append(item)
    if len(arrays) > 1:
        _check_broadcast(arrays, x, op)
    return tuple(items), advanced


def _check_broadcast(arrays, x, op):
    """Integer arrays and masks must broadcast together; a mask counts as the (n,) positions it
    selects (a 0-d mask as (1,) or (0,)), as NumPy and PyTorch count them."""
    shapes = [(int(a.sum()),) if a.dtype.kind == "b" else tuple(a.shape) for a in arrays]
    try:
        np.broadcast_shapes(*shapes)
    except ValueError:
        raise IndexOutOfRangeError(
            f"{op}: shape mismatch: the index arrays of shapes "
            f"{', '.join(fmt_shape(s) for s in shapes)} (masks counted as the positions they "
            f"select) do not broadcast together (tensor shape {fmt_shape(x.shape)})"
        ) from None


# -- getitem / setitem -----------------------------------------------------------------------


class Index(Op):
    saves_inputs = False  # backward needs only shapes
    returns_view = True

    def forward(self, a, index, scatter):
        self.index, self.scatter = index, scatter
        return a[index]

    def backward(self, g):
        return IndexBackward.apply(g, index=self.index, shape=self.inputs[0].shape, scatter=self.scatter)


class IndexBackward(Op):
    """zeros(shape) with g added at `index` (repeated integer indices add up)."""

    saves_inputs = False  # backward needs only shapes

    def forward(self, g, index, shape, scatter):
        self.index, self.scatter = index, scatter
        out = self.xp.zeros(shape, dtype=g.dtype)
        if scatter:
            self.device.kernels.scatter_add(out, index, g)
        else:
            out[index] = g
        return out

    def backward(self, gg):
        return Index.apply(gg, index=self.index, scatter=self.scatter)


def getitem(x, index):
    idx, advanced = normalize_index(x, index)
    return Index.apply(x, index=idx, scatter=advanced == "int")


class SetItem(Op):
    """a[index] = v, in place (only on tensors outside the graph: see Tensor.__setitem__)."""

    differentiable = False

    @staticmethod
    def mutated_inputs(n_inputs, attrs):
        return (0,)

    def forward(self, a, v, index):
        a[index] = v
        return a


def setitem_(x, index, value):
    idx, _ = normalize_index(x, index, "setitem")
    if isinstance(value, Tensor):
        v = value.to(x.dtype) if value.dtype is not x.dtype else value
        if v.device is not x.device:
            v = v.to(x.device)
    else:
        v = Tensor._make(x.device.xp.asarray(value, dtype=x.dtype.np), x.device, False, None)
    try:
        SetItem.apply(x, v, index=idx)
        mark_modified(x)
    except ShapeError:
        target = x.data[idx].shape
        raise ShapeError(
            f"setitem: a value of shape {fmt_shape(v.shape)} cannot be assigned to a selection of "
            f"shape {fmt_shape(target)} (tensor shape {fmt_shape(x.shape)})"
        ) from None
    return x


# -- gather / index_select / masked_fill -----------------------------------------------------


def _along(index, dim, ndim, xp):
    """Open-grid index tuple selecting index[...] along `dim` and the identity elsewhere."""
    grids = []
    for d in range(ndim):
        if d == dim:
            grids.append(index)
        else:
            shape = [1] * ndim
            shape[d] = index.shape[d]
            grids.append(xp.arange(index.shape[d]).reshape(shape))
    return tuple(grids)


class Gather(Op):
    def forward(self, a, index, dim):
        self.dim = dim
        if a.ndim == 2 and dim == 1 and index.shape[0] == a.shape[0]:
            # picking one entry per row (a loss's target logit): plain fancy indexing is 2x
            # faster than take_along_axis
            return a[self.xp.arange(a.shape[0])[:, None], index]
        if index.shape != a.shape:  # PyTorch allows a smaller index in the other dims
            a = a[tuple(slice(0, n) if d != dim else slice(None) for d, n in enumerate(index.shape))]
        return self.xp.take_along_axis(a, index, axis=dim)

    def backward(self, g):
        x, index = self.inputs
        return GatherBackward.apply(g, index, dim=self.dim, shape=x.shape), None


class GatherBackward(Op):
    def forward(self, g, index, dim, shape):
        self.dim = dim
        out = self.xp.zeros(shape, dtype=g.dtype)
        if g.ndim == 2 and dim == 1 and index.shape == (shape[0], 1):  # a loss's target logit
            out[self.xp.arange(shape[0])[:, None], index] = g
        elif index.shape[dim] == 1:  # one pick per line: no index repeats, assignment is enough
            self.xp.put_along_axis(out[_prefix(index.shape, dim)], index, g, axis=dim)
        else:
            self.device.kernels.scatter_add(out, _along(index, dim, g.ndim, self.xp), g)
        return out

    def backward(self, gg):
        return Gather.apply(gg, self.inputs[1], dim=self.dim), None


def _prefix(index_shape, dim):
    return tuple(slice(0, n) if d != dim else slice(None) for d, n in enumerate(index_shape))


def gather(x, dim, index):
    """out[i][j] = x[index[i][j]][j] for dim 0 (and so on), as torch.gather."""
    d = norm_dim(dim, x.ndim, "gather", x.shape)
    if not isinstance(index, Tensor) or index.dtype.category != 1:
        raise DTypeError(
            f"gather: index must be an integer tensor, got {describe(index)} (input shape "
            f"{fmt_shape(x.shape)})"
        )
    if index.ndim != x.ndim:
        raise ShapeError(
            f"gather: index {fmt_shape(index.shape)} must have as many dimensions as the input "
            f"{fmt_shape(x.shape)}"
        )
    for axis in range(x.ndim):
        if axis != d and index.shape[axis] > x.shape[axis]:
            raise ShapeError(
                f"gather: index {fmt_shape(index.shape)} is larger than the input "
                f"{fmt_shape(x.shape)} at dimension {axis} (only dimension {d} may differ)"
            )
    _check_range(index, x.shape[d], d, x.shape, "gather")
    return Gather.apply(x, index, dim=d)


def _check_range(index, size, dim, shape, op):
    if index.numel():
        hi, lo = int(index.data.max()), int(index.data.min())
        if hi >= size or lo < -size:
            bad = hi if hi >= size else lo
            raise IndexOutOfRangeError(
                f"{op}: index {bad} is out of bounds for dimension {dim} with size {size} "
                f"(input shape {fmt_shape(shape)})"
            )


class IndexSelect(Op):
    def forward(self, a, index, dim):
        self.dim = dim
        return self.xp.take(a, index, axis=dim)

    def backward(self, g):
        x, index = self.inputs
        return IndexSelectBackward.apply(g, index, dim=self.dim, shape=x.shape), None


class IndexSelectBackward(Op):
    def forward(self, g, index, dim, shape):
        self.dim = dim
        out = self.xp.zeros(shape, dtype=g.dtype)
        self.device.kernels.scatter_add(out, (slice(None),) * dim + (index,), g)
        return out

    def backward(self, gg):
        return IndexSelect.apply(gg, self.inputs[1], dim=self.dim), None


def index_select(x, dim, index):
    d = norm_dim(dim, x.ndim, "index_select", x.shape)
    if not isinstance(index, Tensor) or index.dtype.category != 1:
        got = f"{index.dtype.name} {fmt_shape(index.shape)}" if isinstance(index, Tensor) else type(index).__name__
        raise DTypeError(f"index_select: index must be a 1-D integer tensor, got {got}")
    if index.ndim > 1:
        raise ShapeError(
            f"index_select: index must be 1-D, got shape {fmt_shape(index.shape)} (input shape "
            f"{fmt_shape(x.shape)}, dimension {d})"
        )
    _check_range(index, x.shape[d], d, x.shape, "index_select")
    return IndexSelect.apply(x, index.reshape(-1), dim=d)


class MaskedFill(Op):
    def forward(self, a, mask, value):
        self.value = value
        return self.xp.where(mask, self.xp.asarray(value, dtype=a.dtype), a)

    def backward(self, g):
        return MaskedFill.apply(g, self.inputs[1], value=0), None


def masked_fill(x, mask, value):
    if not isinstance(mask, Tensor) or mask.dtype is not dtypes.bool_:
        raise DTypeError(f"masked_fill: mask must be a bool tensor, got {describe(mask)}")
    from prunus.ops._util import broadcast_shapes

    if broadcast_shapes(x.shape, mask.shape, op="masked_fill") != x.shape:
        raise ShapeError(
            f"masked_fill: mask {fmt_shape(mask.shape)} must broadcast to the input "
            f"{fmt_shape(x.shape)} without growing it"
        )
    if isinstance(value, Tensor):
        value = value.item()
    return MaskedFill.apply(x, mask, value=value)
