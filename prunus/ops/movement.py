"""Shape and layout ops: reshape/view/flatten/squeeze/unsqueeze, transpose/permute,
expand/broadcast_to and its adjoint sum_to, cat/stack/split/chunk, pad, flip, repeat, tril/triu.

These move or copy data without arithmetic; each backward moves the gradient back.
Indexing (getitem, gather, index_select, masked_fill) is in indexing.py.
"""

from __future__ import annotations

import math

from prunus import dtypes
from prunus.autograd import Op
from prunus.errors import ArgumentError, DTypeError, IndexOutOfRangeError, ShapeError, fmt_shape
from prunus.ops._util import broadcast_shapes, norm_dim, norm_dims
from prunus.tensor import Tensor


def _sizes(args, op):
    """Accept f(2, 3) and f((2, 3)) alike, as PyTorch does."""
    if len(args) == 1 and isinstance(args[0], (tuple, list)):
        args = tuple(args[0])
    out = []
    for s in args:
        if isinstance(s, Tensor):
            s = s.item()
        if not isinstance(s, int) or isinstance(s, bool):
            raise DTypeError(f"{op}: sizes must be ints, got {type(s).__name__} {s!r}")
        out.append(s)
    return tuple(out)


# -- reshape family --------------------------------------------------------------------------


class Reshape(Op):
    saves_inputs = False  # backward needs only shapes
    returns_view = True

    def forward(self, a, shape):
        return a.reshape(shape)

    def backward(self, g):
        return Reshape.apply(g, shape=self.inputs[0].shape)


def reshape(x, *shape):
    return _reshape(x, _sizes(shape, "reshape"), "reshape")


def view(x, *shape):
    return _reshape(x, _sizes(shape, "view"), "view")


def _reshape(x, shape, op):
    if shape == x.shape:
        return x
    n = x.numel()
    if shape.count(-1) > 1:
        raise ShapeError(
            f"{op}: only one dimension can be -1, got {fmt_shape(shape)} for a tensor of shape "
            f"{fmt_shape(x.shape)}"
        )
    known = math.prod(s for s in shape if s != -1)
    if any(s < -1 for s in shape) or (
        -1 in shape and (known == 0 or n % known) or -1 not in shape and known != n
    ):
        raise ShapeError(
            f"{op}: cannot reshape a tensor of shape {fmt_shape(x.shape)} ({n} elements) "
            f"into shape {fmt_shape(shape)}"
        )
    if -1 in shape:
        shape = tuple(n // known if s == -1 else s for s in shape)
    return Reshape.apply(x, shape=shape)


def flatten(x, start_dim=0, end_dim=-1):
    s = norm_dim(start_dim, x.ndim, "flatten", x.shape)  # a 0-d tensor takes 0 and -1, as PyTorch
    e = norm_dim(end_dim, x.ndim, "flatten", x.shape)
    if x.ndim == 0:
        return reshape(x, 1)
    if s > e:
        raise ShapeError(f"flatten: start_dim {start_dim} comes after end_dim {end_dim} for shape {fmt_shape(x.shape)}")
    shape = x.shape[:s] + (math.prod(x.shape[s : e + 1]),) + x.shape[e + 1 :]
    return reshape(x, shape)


def squeeze(x, dim=None):
    shape = x.data.shape
    if type(dim) is int and -len(shape) <= dim < len(shape):  # fast path: one valid dim
        if shape[dim] != 1:
            return x
        d = dim % len(shape)
        return Reshape.apply(x, shape=shape[:d] + shape[d + 1 :])
    if dim is None:
        return reshape(x, tuple(s for s in x.shape if s != 1))
    dims = norm_dims(dim, x.ndim, "squeeze", x.shape)
    return reshape(x, tuple(s for i, s in enumerate(x.shape) if not (i in dims and s == 1)))


def unsqueeze(x, dim):
    d = norm_dim(dim, x.ndim + 1, "unsqueeze", x.shape)
    return reshape(x, x.shape[:d] + (1,) + x.shape[d:])


# -- permutations ----------------------------------------------------------------------------


class Permute(Op):
    saves_inputs = False  # backward needs only shapes
    returns_view = True

    def forward(self, a, dims):
        self.dims = dims
        return a.transpose(dims)

    def backward(self, g):
        inverse = [0] * len(self.dims)
        for i, d in enumerate(self.dims):
            inverse[d] = i
        return Permute.apply(g, dims=tuple(inverse))


def permute(x, *dims):
    dims = _sizes(dims, "permute")
    if len(dims) != x.ndim:
        raise ShapeError(f"permute: got {len(dims)} dims {dims} for a tensor of shape {fmt_shape(x.shape)}")
    dims = tuple(norm_dim(d, x.ndim, "permute", x.shape) for d in dims)
    if sorted(dims) != list(range(x.ndim)):
        raise ShapeError(
            f"permute: dims {dims} are not a permutation of 0..{x.ndim - 1} for a tensor of "
            f"shape {fmt_shape(x.shape)}"
        )
    return Permute.apply(x, dims=dims)


def transpose(x, dim0, dim1):
    n = x.ndim
    a, b = norm_dim(dim0, n, "transpose", x.shape), norm_dim(dim1, n, "transpose", x.shape)
    if a == b:
        return x
    dims = list(range(n))
    dims[a], dims[b] = b, a
    return Permute.apply(x, dims=tuple(dims))


def t(x):
    if x.ndim > 2:
        raise ShapeError(f"t: expects a tensor of at most 2 dimensions, got shape {fmt_shape(x.shape)}")
    return x if x.ndim < 2 else Permute.apply(x, dims=(1, 0))


# -- broadcasting ----------------------------------------------------------------------------


def broadcast_array(xp, a, shape):
    """`a` broadcast to `shape`: a filled copy when small, a read-only view when large.

    xp.broadcast_to costs ~5 us of Python whatever the size; filling a small array is several
    times cheaper (and gives a writable result).
    """
    size = 1
    for n in shape:
        size *= n
    if size <= 65536:
        out = xp.empty(shape, dtype=a.dtype)
        out[...] = a
        return out
    return xp.broadcast_to(a, shape)


class BroadcastTo(Op):
    saves_inputs = False  # backward needs only shapes
    returns_view = True

    def forward(self, a, shape):
        return broadcast_array(self.xp, a, shape)

    def backward(self, g):
        return sum_to(g, self.inputs[0].shape)


class SumTo(Op):
    """Sum a broadcast result back to `shape`: the adjoint of broadcast_to."""

    saves_inputs = False  # backward needs only shapes

    def forward(self, a, shape):
        lead = a.ndim - len(shape)
        axes = tuple(range(lead)) + tuple(
            i + lead for i, s in enumerate(shape) if s == 1 and a.shape[i + lead] != 1
        )
        if axes == (0,) and a.ndim == 2 and a.size >= 4096 and a.dtype.char in "fd":
            # a bias gradient: a ones-vector product runs in BLAS, 2-3x faster than sum(axis=0)
            return (self.xp.ones(a.shape[0], dtype=a.dtype) @ a).reshape(shape)
        out = a.sum(axis=axes, keepdims=True) if axes else a
        return out.reshape(shape)

    def backward(self, g):
        return BroadcastTo.apply(g, shape=self.inputs[0].shape)


def sum_to(x, shape):
    if x.shape == shape:
        return x
    return SumTo.apply(x, shape=tuple(shape))


def broadcast_to(x, *shape):
    return _broadcast_to(x, _sizes(shape, "broadcast_to"), "broadcast_to")


def expand(x, *shape):
    return _broadcast_to(x, _sizes(shape, "expand"), "expand")


def _broadcast_to(x, shape, op):
    if shape == x.shape:
        return x
    if len(shape) < x.ndim:
        raise ShapeError(
            f"{op}: cannot expand shape {fmt_shape(x.shape)} to fewer dimensions "
            f"{fmt_shape(shape)}"
        )
    lead = len(shape) - x.ndim
    shape = tuple(x.shape[i - lead] if s == -1 and i >= lead else s for i, s in enumerate(shape))
    for i, s in enumerate(shape):
        if s < 0:
            new = " (-1 keeps an existing dimension; this one is new)" if s == -1 else ""
            raise ShapeError(
                f"{op}: cannot expand shape {fmt_shape(x.shape)} to {fmt_shape(shape)}: size {s} "
                f"at dimension {i - len(shape)}{new}"
            )
    for i, s in enumerate(x.shape):
        if s != 1 and s != shape[i + lead]:
            raise ShapeError(
                f"{op}: cannot expand shape {fmt_shape(x.shape)} to {fmt_shape(shape)}: "
                f"dimension {i - x.ndim} has size {s}, target {shape[i + lead]}"
            )
    return BroadcastTo.apply(x, shape=shape)


def broadcast_tensors(*tensors):
    shape = broadcast_shapes(*(t.shape for t in tensors), op="broadcast_tensors")
    return tuple(broadcast_to(t, shape) for t in tensors)


# -- joining and splitting -------------------------------------------------------------------


class Cat(Op):
    saves_inputs = False  # backward needs only shapes

    def forward(self, *arrays, dim):
        self.dim = dim
        return self.xp.concatenate(arrays, axis=dim)

    def backward(self, g):
        grads, start = [], 0
        for t, need in zip(self.inputs, self.needs_input_grad):
            n = t.shape[self.dim]
            grads.append(narrow(g, self.dim, start, n) if need else None)
            start += n
        return tuple(grads)


def cat(tensors, dim=0):
    tensors = list(tensors)
    if not tensors:
        raise ArgumentError("cat: expected a non-empty sequence of tensors")
    for i, x in enumerate(tensors):
        if not isinstance(x, Tensor):
            raise DTypeError(f"cat: element {i} is a {type(x).__name__}, not a tensor")
    ref = tensors[0]
    if ref.ndim == 0:
        raise ShapeError(
            f"cat: zero-dimensional tensor (at position 0, shape {fmt_shape(ref.shape)}) cannot be "
            "concatenated"
        )
    d = norm_dim(dim, ref.ndim, "cat", ref.shape)
    for i, x in enumerate(tensors[1:], 1):
        if x.ndim != ref.ndim:
            raise ShapeError(
                f"cat: tensors must have the same number of dimensions: tensor 0 has shape "
                f"{fmt_shape(ref.shape)}, tensor {i} has shape {fmt_shape(x.shape)}"
            )
        for axis in range(ref.ndim):
            if axis != d and x.shape[axis] != ref.shape[axis]:
                raise ShapeError(
                    f"cat: sizes must match except in dimension {d}: tensor 0 has shape "
                    f"{fmt_shape(ref.shape)}, tensor {i} has shape {fmt_shape(x.shape)} "
                    f"(they differ in dimension {axis})"
                )
    dt = dtypes.result_type(*tensors)
    tensors = [x.to(dt) for x in tensors]
    return Cat.apply(*tensors, dim=d)


def stack(tensors, dim=0):
    tensors = list(tensors)
    if not tensors:
        raise ArgumentError("stack: expected a non-empty sequence of tensors")
    ref = tensors[0]
    for i, x in enumerate(tensors[1:], 1):
        if isinstance(x, Tensor) and x.shape != ref.shape:
            raise ShapeError(
                f"stack: all tensors must have the same shape: tensor 0 has shape "
                f"{fmt_shape(ref.shape)}, tensor {i} has shape {fmt_shape(x.shape)}"
            )
    d = norm_dim(dim, ref.ndim + 1, "stack", ref.shape)
    return cat([unsqueeze(x, d) for x in tensors], d)


def narrow(x, dim, start, length):
    from prunus.ops.indexing import getitem

    d = norm_dim(dim, x.ndim, "narrow", x.shape)
    size = x.shape[d]
    if start < 0:
        start += size
    if not 0 <= start <= size or length < 0 or start + length > size:
        raise IndexOutOfRangeError(
            f"narrow: start {start} and length {length} do not fit dimension {d} of size {size} "
            f"(shape {fmt_shape(x.shape)})"
        )
    return getitem(x, (slice(None),) * d + (slice(start, start + length),))


def split(x, split_size_or_sections, dim=0):
    d = norm_dim(dim, x.ndim, "split", x.shape)
    n = x.shape[d]
    if isinstance(split_size_or_sections, int):
        step = split_size_or_sections
        if step <= 0:
            raise ArgumentError(f"split: split_size must be positive, got {step}")
        sizes = [min(step, n - s) for s in range(0, n, step)] or [0]
    else:
        sizes = list(split_size_or_sections)
        if sum(sizes) != n or any(s < 0 for s in sizes):
            raise ShapeError(
                f"split: sections {sizes} do not add up to size {n} of dimension {d} "
                f"(shape {fmt_shape(x.shape)})"
            )
    out, start = [], 0
    for s in sizes:
        out.append(narrow(x, d, start, s))
        start += s
    return tuple(out)


def chunk(x, chunks, dim=0):
    if not isinstance(chunks, int) or chunks <= 0:
        raise ArgumentError(f"chunk: chunks must be a positive int, got {chunks!r}")
    d = norm_dim(dim, x.ndim, "chunk", x.shape)
    if x.shape[d] == 0:  # PyTorch gives `chunks` empty pieces here (split would give one)
        return split(x, [0] * chunks, d)
    return split(x, max(1, -(-x.shape[d] // chunks)), d)


# -- pad, flip, repeat, tril/triu --------------------------------------------------------------


class Pad(Op):
    saves_inputs = False  # backward needs only shapes

    def forward(self, a, widths, value):
        self.widths = widths
        return self.xp.pad(a, widths, mode="constant", constant_values=value)

    def backward(self, g):
        from prunus.ops.indexing import getitem

        index = tuple(slice(lo, g.shape[i] - hi) for i, (lo, hi) in enumerate(self.widths))
        return getitem(g, index)


def pad(x, pad, mode="constant", value=0.0):
    """Pad with a constant; `pad` lists (left, right) pairs from the last dimension backwards."""
    if mode != "constant":
        raise ArgumentError(f"pad: mode {mode!r} is not supported; prunus pads with mode='constant'")
    pad = tuple(pad)
    if len(pad) % 2 or len(pad) // 2 > x.ndim:
        raise ShapeError(
            f"pad: padding {pad} must have an even length of at most 2*{x.ndim} for shape "
            f"{fmt_shape(x.shape)}"
        )
    if any(p < 0 for p in pad):
        raise ArgumentError(f"pad: negative padding {pad} is not supported")
    widths = [(0, 0)] * x.ndim
    for i in range(len(pad) // 2):
        widths[x.ndim - 1 - i] = (pad[2 * i], pad[2 * i + 1])
    return Pad.apply(x, widths=tuple(widths), value=value)


class Flip(Op):
    saves_inputs = False  # backward needs only shapes

    def forward(self, a, dims):
        self.dims = dims
        return self.xp.flip(a, axis=dims)

    def backward(self, g):
        return Flip.apply(g, dims=self.dims)


def flip(x, dims):
    dims = norm_dims(dims if isinstance(dims, (tuple, list)) else (dims,), x.ndim, "flip", x.shape)
    return Flip.apply(x, dims=dims)


class Repeat(Op):
    """Tile `a` (PyTorch's Tensor.repeat)."""

    saves_inputs = False  # backward needs only shapes

    def forward(self, a, reps):
        self.reps = reps
        return self.xp.tile(a, reps)

    def backward(self, g):
        shape = self.inputs[0].shape
        lead = len(self.reps) - len(shape)
        full = (1,) * lead + shape
        split_shape = []
        for r, s in zip(self.reps, full):
            split_shape += [r, s]
        summed = reshape(g, tuple(split_shape)).sum(dim=tuple(range(0, 2 * len(full), 2)))
        return reshape(summed, shape)


def repeat(x, *sizes):
    sizes = _sizes(sizes, "repeat")
    if len(sizes) < x.ndim:
        raise ShapeError(
            f"repeat: number of repeat dims ({len(sizes)}, repeats {fmt_shape(sizes)}) can not be "
            f"smaller than the number of tensor dims ({x.ndim}, shape {fmt_shape(x.shape)})"
        )
    if any(s < 0 for s in sizes):
        raise ArgumentError(f"repeat: negative repeat count in {sizes}")
    return Repeat.apply(x, reps=sizes)


class Tril(Op):
    saves_inputs = False  # backward needs only shapes

    def forward(self, a, diagonal):
        self.diagonal = diagonal
        return self.xp.tril(a, diagonal)

    def backward(self, g):
        return Tril.apply(g, diagonal=self.diagonal)


class Triu(Op):
    saves_inputs = False  # backward needs only shapes

    def forward(self, a, diagonal):
        self.diagonal = diagonal
        return self.xp.triu(a, diagonal)

    def backward(self, g):
        return Triu.apply(g, diagonal=self.diagonal)


def _tri(cls, x, diagonal):
    if x.ndim < 2:
        raise ShapeError(f"{cls.__name__.lower()}: needs at least 2 dimensions, got shape {fmt_shape(x.shape)}")
    return cls.apply(x, diagonal=int(diagonal))


def tril(x, diagonal=0):
    return _tri(Tril, x, diagonal)


def triu(x, diagonal=0):
    return _tri(Triu, x, diagonal)


class Contiguous(Op):
    saves_inputs = False  # backward needs only shapes

    def forward(self, a):
        return self.xp.ascontiguousarray(a)

    def backward(self, g):
        return g


def contiguous(x):
    return x if x.data.flags.c_contiguous else Contiguous.apply(x)


class Clone(Op):
    saves_inputs = False  # backward needs only shapes

    def forward(self, a):
        return a.copy()

    def backward(self, g):
        return g


def clone(x):
    return Clone.apply(x)
