"""Helpers the op families share: turning arguments into tensors, promoting dtypes, checking
dims and broadcast shapes with errors that name the op, the shapes and the axis."""

from __future__ import annotations

import numbers

from prunus import autograd, dtypes
from prunus.autograd import Op
from prunus.errors import DTypeError, IndexOutOfRangeError, ShapeError, fmt_shape
from prunus.tensor import Tensor


def constant(value, like: Tensor, dtype=None) -> Tensor:
    """A Python number (or array-like) as a tensor without grad on `like`'s device."""
    dev = like.device
    d = like.dtype if dtype is None else dtype
    t = Tensor._make(dev.xp.asarray(value, dtype=d.np), dev, False, None)
    if autograd._state.tracer is not None:  # a captured graph may fold it (prunus/graph/)
        autograd._state.tracer.note_constant(t)
    return t


def as_tensor_like(x, like: Tensor) -> Tensor:
    if isinstance(x, Tensor):
        return x
    return constant(x, like, dtypes.result_type(like, x) if _is_number(x) else None)


def _is_number(x) -> bool:
    return isinstance(x, (bool, int, float)) or hasattr(x, "dtype") and getattr(x, "ndim", 1) == 0


def promote(a, b, op: str):
    """Both operands as tensors of PyTorch's promoted dtype (see prunus.dtypes)."""
    # Fast paths on exact types (`type(x) is Tensor` is cheaper than isinstance); subclasses such
    # as nn.Parameter, NumPy scalars and mixed dtypes take the general path below.
    if type(a) is Tensor:
        if type(b) is Tensor:
            da, db = a.data.dtype, b.data.dtype
            if da is not db and da != db:
                d = dtypes.result_type(a, b)
                return a.to(d), b.to(d)
            return a, b
        if _keeps_dtype(a.dtype, b):
            return a, constant(b, a, a.dtype)
    elif type(b) is Tensor and _keeps_dtype(b.dtype, a):
        return constant(a, b, b.dtype), b
    return _promote(a, b, op)


def _promote(a, b, op: str):
    """promote's general case, with isinstance: Tensor subclasses (nn.Parameter) are tensors."""
    if isinstance(a, Tensor):
        if isinstance(b, Tensor):
            if a.data.dtype != b.data.dtype:
                d = dtypes.result_type(a, b)
                return a.to(d), b.to(d)
            return a, b
        d = dtypes.result_type(a, b)
        return (a if d is a.dtype else a.to(d)), constant(b, a, d)
    if isinstance(b, Tensor):
        d = dtypes.result_type(b, a)
        return constant(a, b, d), (b if d is b.dtype else b.to(d))
    raise DTypeError(f"{op}: expected at least one tensor, got {type(a).__name__} and {type(b).__name__}")


def _keeps_dtype(d, scalar) -> bool:
    """Fast path of result_type(tensor, scalar): a float tensor keeps its dtype for any number."""
    t = type(scalar)
    if d.is_floating_point:
        return t is float or t is int or t is bool
    if d.category == 1:
        return t is int or t is bool
    return t is bool


def norm_dim(dim: int, ndim: int, op: str, shape=None) -> int:
    """A dimension index in range(ndim); negative counts from the end.

    `shape`, the tensor's shape, goes into the error message; when ndim is len(shape) + 1 (the
    new dimension of unsqueeze or stack) the message says so.
    """
    if type(dim) is int and -ndim <= dim < ndim:  # the common case, first
        return dim + ndim if dim < 0 else dim
    if not isinstance(dim, int) or isinstance(dim, bool):
        if isinstance(dim, numbers.Integral) and not isinstance(dim, bool):
            dim = int(dim)  # NumPy integers
        else:
            raise DTypeError(f"{op}: dim must be an int, got {type(dim).__name__} {dim!r}")
    n = max(ndim, 1)
    if not -n <= dim < n:
        if shape is None:
            what = f"a tensor of {ndim} dimensions"
        else:
            what = f"a tensor of {len(shape)} dimensions, shape {fmt_shape(shape)}"
            if len(shape) != ndim:
                what = f"a new dimension of {what}"
        raise IndexOutOfRangeError(
            f"{op}: dimension {dim} out of range for {what} (expected {-n}..{n - 1})"
        )
    return dim + n if dim < 0 else dim


def norm_dims(dim, ndim: int, op: str, shape=None) -> tuple:
    """None -> all dims; an int or a sequence -> sorted tuple of distinct dims."""
    if dim is None:
        return tuple(range(ndim))
    if isinstance(dim, (tuple, list)):
        dims = tuple(sorted(norm_dim(d, ndim, op, shape) for d in dim))
        if len(set(dims)) != len(dims):
            where = "" if shape is None else f" for shape {fmt_shape(shape)}"
            raise ShapeError(f"{op}: dimension repeated in dim={tuple(dim)}{where}")
        return dims if ndim else ()  # a 0-d tensor's dim (0,) or [-1]: nothing to index
    d = norm_dim(dim, ndim, op, shape)  # a 0-d tensor accepts dim 0 and -1, as in PyTorch
    return (d,) if ndim else ()


def broadcast_shapes(*shapes, op: str = "broadcast") -> tuple:
    """The broadcast of `shapes`, or a ShapeError naming the first axis that does not fit."""
    ndim = max(len(s) for s in shapes)
    out = []
    for axis in range(-ndim, 0):
        size = 1
        for s in shapes:
            if -axis > len(s):
                continue
            n = s[axis]
            if n != 1:
                if size not in (1, n):
                    listed = " and ".join(fmt_shape(x) for x in shapes)
                    raise ShapeError(
                        f"{op}: shapes {listed} do not broadcast: at dimension {axis} sizes "
                        f"{size} and {n} differ and neither is 1"
                    )
                size = n
        out.append(size)
    return tuple(out)


class Elementwise(Op):
    """Base of the broadcasting elementwise ops: a failing forward is explained by shapes."""

    def explain(self, shapes):
        broadcast_shapes(*shapes, op=self.name)


def describe(x) -> str:
    """A tensor as its dtype and shape ("float32 (2, 3)"); anything else as its type name."""
    if isinstance(x, Tensor):
        return f"{x.dtype.name} {fmt_shape(x.shape)}"
    return type(x).__name__


def require_float(t: Tensor, op: str) -> None:
    if not t.dtype.is_floating_point:
        raise DTypeError(f"{op}: expected a floating-point tensor, got {t.dtype.name} {fmt_shape(t.shape)}")
