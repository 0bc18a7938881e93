"""Reductions: sum, mean, var, std, prod, amax/amin, max/min (with indices along a dim),
logsumexp (a primitive, for stability), argmax/argmin, all/any.

`dim` is an int, a tuple of ints or None (all dims); `keepdim` keeps reduced dims as size 1.

Careful: this module defines sum/max/min/all/any, shadowing the builtins inside it.
"""

from __future__ import annotations

from collections import namedtuple

from prunus import dtypes
from prunus.autograd import Op, is_grad_enabled
from prunus.errors import DTypeError, ShapeError, fmt_shape
from prunus.ops._util import norm_dim, norm_dims
from prunus.ops.movement import broadcast_array, reshape
from prunus.tensor import Tensor

MaxResult = namedtuple("MaxResult", ["values", "indices"])


def _dims(dim, x, op):
    """The reduced dims, sorted; None or an empty list means all of them (PyTorch's sum(dim=[]))."""
    if isinstance(dim, (tuple, list)) and not dim:
        dim = None
    return norm_dims(dim, x.ndim, op, x.shape)


_ALL = [tuple(range(n)) for n in range(33)]  # dims=None as a tuple, by ndim


def _kept_shape(shape, dims):
    return tuple(1 if i in dims else s for i, s in enumerate(shape))


def _expand_back(g, op, scale=1.0):
    """A reduction's gradient broadcast back over the reduced input (undoing keepdim=False)."""
    return Unreduce.apply(g, shape=op.inputs[0].shape, dims=op.dims, keepdim=op.keepdim, scale=scale)


class Unreduce(Op):
    """`g`, the gradient of a reduction over `dims`, spread back over the input's `shape` and
    times `scale`: the backward of sum (scale 1) and mean (1/n) as one op, where reshape and
    broadcast_to were two. Its own gradient is the reduction again."""

    saves_inputs = False  # backward needs only shapes

    def forward(self, g, shape, dims, keepdim, scale):
        self.dims, self.keepdim, self.scale = dims, keepdim, scale
        if not keepdim:
            g = g.reshape(_kept_shape(shape, dims))
        if scale != 1.0:
            g = g * scale  # on the small, reduced array
        return broadcast_array(self.xp, g, shape)

    def backward(self, gg):
        s = Sum.apply(gg, dims=self.dims, keepdim=self.keepdim)
        return s * self.scale if self.scale != 1.0 else s


class Sum(Op):
    saves_inputs = False  # backward needs only shapes

    def forward(self, a, dims, keepdim):
        self.dims, self.keepdim = dims, keepdim
        if a.dtype.kind in "biu":  # PyTorch sums bool and integers as int64
            return a.sum(axis=dims, keepdims=keepdim, dtype="int64")
        return a.sum(axis=dims, keepdims=keepdim)

    def backward(self, g):
        return _expand_back(g, self)


def sum(x, dim=None, keepdim=False, dtype=None):
    if dim is None and dtype is None:  # fast path: everything
        return Sum.apply(x, dims=_ALL[x.data.ndim], keepdim=keepdim)
    if dtype is not None:
        x = x.to(dtype)
    return Sum.apply(x, dims=_dims(dim, x, "sum"), keepdim=keepdim)


def _count(x, dims):
    n = 1
    for d in dims:
        n *= x.shape[d]
    return n


def mean(x, dim=None, keepdim=False, dtype=None):
    if dtype is not None:
        x = x.to(dtype)
    if not x.dtype.is_floating_point:
        raise DTypeError(
            f"mean: could not infer the output dtype: input is {x.dtype.name}; "
            "pass a floating dtype or call .float() first"
        )
    return Mean.apply(x, dims=_dims(dim, x, "mean"), keepdim=keepdim)


class Mean(Op):
    """A primitive rather than sum * (1/n): every loss ends in a mean, and one op is half the
    cost of the composite's three."""

    saves_inputs = False  # backward needs only shapes

    def forward(self, a, dims, keepdim):
        self.dims, self.keepdim = dims, keepdim
        n = 1
        for d in dims:
            n *= a.shape[d]
        self.scale = 1.0 / n if n else float("nan")
        return a.sum(axis=dims, keepdims=keepdim) * self.scale

    def backward(self, g):
        return _expand_back(g, self, self.scale)


def var(x, dim=None, correction=1, keepdim=False, unbiased=None):
    """Variance with Bessel's `correction` (1: unbiased, as PyTorch's default)."""
    if unbiased is not None:
        correction = 1 if unbiased else 0
    if not x.dtype.is_floating_point:
        raise DTypeError(f"var: expected a floating-point tensor, got {x.dtype.name}")
    dims = _dims(dim, x, "var")
    n = _count(x, dims)
    centered = x - mean(x, dims, keepdim=True)
    dof = n - correction
    return sum(centered * centered, dims, keepdim) * (1.0 / dof if dof > 0 else float("nan"))


def std(x, dim=None, correction=1, keepdim=False, unbiased=None):
    return var(x, dim, correction, keepdim, unbiased).sqrt()


class Prod(Op):
    def forward(self, a, dims, keepdim):
        self.dims, self.keepdim = dims, keepdim
        self.out = a.prod(axis=dims, keepdims=keepdim)
        return self.out

    def backward(self, g):
        x = self.inputs[0]
        # product of the others: out / x where x != 0; where x has zeros, the exclusive product
        others = ProdOthers.apply(x, dims=self.dims)
        return _expand_back(g, self) * others


class ProdOthers(Op):
    """For each element, the product of the other elements of its reduction group."""

    def forward(self, a, dims):
        xp = self.xp
        self.dims = dims
        rest = tuple(d for d in range(a.ndim) if d not in dims)
        moved = xp.transpose(a, rest + dims)
        flat = moved.reshape(moved.shape[: len(rest)] + (-1,))
        ones = xp.ones(flat.shape[:-1] + (1,), dtype=a.dtype)
        left = xp.cumprod(xp.concatenate([ones, flat[..., :-1]], axis=-1), axis=-1)
        right = xp.flip(xp.cumprod(xp.flip(xp.concatenate([flat[..., 1:], ones], axis=-1), -1), axis=-1), -1)
        res = (left * right).reshape(moved.shape)
        inverse = [0] * a.ndim
        for i, d in enumerate(rest + dims):
            inverse[d] = i
        return xp.transpose(res, inverse)

    def backward(self, g):
        # d others_i / d x_j (i != j) is the product of the group without x_i and x_j, that is
        # others_i of the group with x_j set to 1. Each group of n becomes an (n, n) matrix whose
        # row j is the group with a 1 at j, and one ProdOthers along the rows gives all those
        # products, exactly even with zeros (n^2 memory; only second derivatives of prod get here).
        from prunus.ops.elementwise import where
        from prunus.ops.movement import permute

        x, dims = self.inputs[0], self.dims
        order = tuple(d for d in range(x.ndim) if d not in dims) + dims
        moved = permute(x, order)
        lead = moved.shape[: x.ndim - len(dims)]
        n = 1
        for d in dims:
            n *= x.shape[d]
        eye = Tensor._make(self.xp.eye(n, dtype=bool), self.device, False, None)
        rows = where(eye, 1.0, reshape(moved, lead + (1, n)))
        pairs = ProdOthers.apply(rows, dims=(rows.ndim - 1,))
        gx = sum(where(eye, 0.0, pairs * reshape(permute(g, order), lead + (1, n))), -1)
        inverse = [0] * x.ndim
        for i, d in enumerate(order):
            inverse[d] = i
        return permute(reshape(gx, moved.shape), tuple(inverse))


def prod(x, dim=None, keepdim=False):
    return Prod.apply(x, dims=_dims(dim, x, "prod"), keepdim=keepdim)


class Amax(Op):
    """Max over dims; ties share the gradient equally (as PyTorch's amax)."""

    fn = "max"

    def forward(self, a, dims, keepdim):
        self.dims, self.keepdim = dims, keepdim
        self.out = getattr(a, self.fn)(axis=dims, keepdims=keepdim)
        return self.out

    def backward(self, g):
        x = self.inputs[0]
        hit = x == _expand_back(self.output(), self)
        count = sum(hit, self.dims, keepdim=True)
        return _expand_back(g, self) * hit / count


class Amin(Amax):
    fn = "min"


def _check_nonempty(x, dims, op):
    for d in dims:
        if x.shape[d] == 0:
            raise ShapeError(f"{op}: cannot reduce over dimension {d} of size 0 (shape {fmt_shape(x.shape)})")
    if not dims and x.numel() == 0:
        raise ShapeError(f"{op}: cannot reduce an empty tensor of shape {fmt_shape(x.shape)}")


def amax(x, dim=None, keepdim=False):
    dims = _dims(dim, x, "amax")
    _check_nonempty(x, dims, "amax")
    return Amax.apply(x, dims=dims, keepdim=keepdim)


def amin(x, dim=None, keepdim=False):
    dims = _dims(dim, x, "amin")
    _check_nonempty(x, dims, "amin")
    return Amin.apply(x, dims=dims, keepdim=keepdim)


class ArgMax(Op):
    differentiable = False
    fn = "argmax"

    def forward(self, a, dim, keepdim):
        if dim is None:
            return getattr(a.reshape(-1), self.fn)()
        return getattr(a, self.fn)(axis=dim, keepdims=keepdim)


class ArgMin(ArgMax):
    fn = "argmin"


def argmax(x, dim=None, keepdim=False):
    d = None if dim is None else norm_dim(dim, x.ndim, "argmax", x.shape)
    if x.ndim == 0:  # dim 0 or -1 of a 0-d tensor (as PyTorch): the only element, index 0
        d = None
    _check_nonempty(x, () if d is None else (d,), "argmax")
    return ArgMax.apply(x, dim=d, keepdim=keepdim)


def argmin(x, dim=None, keepdim=False):
    d = None if dim is None else norm_dim(dim, x.ndim, "argmin", x.shape)
    if x.ndim == 0:
        d = None
    _check_nonempty(x, () if d is None else (d,), "argmin")
    return ArgMin.apply(x, dim=d, keepdim=keepdim)


def _max_min(x, dim, keepdim, other, name, reduce_all, arg, pairwise):
    from prunus.ops.indexing import gather

    if other is not None or (dim is not None and not isinstance(dim, int)):
        if other is None and hasattr(dim, "shape"):
            other = dim
        return pairwise(x, other)
    if dim is None:
        return reduce_all(x)
    d = norm_dim(dim, x.ndim, name, x.shape)
    if x.ndim == 0:  # dim 0 or -1 of a 0-d tensor (as PyTorch): the value and index 0
        values, idx = _max_min(reshape(x, (1,)), 0, True, None, name, reduce_all, arg, pairwise)
        return MaxResult(reshape(values, ()), reshape(idx, ()))
    idx = arg(x, d, keepdim=True)
    values = gather(x, d, idx)
    if not keepdim:
        values, idx = reshape(values, values.shape[:d] + values.shape[d + 1 :]), reshape(
            idx, idx.shape[:d] + idx.shape[d + 1 :]
        )
    return MaxResult(values, idx)


def max(x, dim=None, keepdim=False, other=None):
    """max(x) -> the largest value; max(x, dim) -> (values, indices); max(x, other) -> maximum."""
    from prunus.ops.elementwise import maximum

    return _max_min(x, dim, keepdim, other, "max", amax, argmax, maximum)


def min(x, dim=None, keepdim=False, other=None):
    from prunus.ops.elementwise import minimum

    return _max_min(x, dim, keepdim, other, "min", amin, argmin, minimum)


class LogSumExp(Op):
    """log(sum(exp(x))) computed as m + log(sum(exp(x - m))), m the max: no overflow."""

    def forward(self, a, dims, keepdim):
        self.dims, self.keepdim = dims, keepdim
        xp = self.xp
        if a.size == 0:  # an empty sum: log(0) = -inf, as PyTorch (max would have no identity)
            self.m = m = xp.zeros(_kept_shape(a.shape, dims), dtype=a.dtype)
            out = xp.full(m.shape, float("-inf"), dtype=a.dtype)
        else:
            m = a.max(axis=dims, keepdims=True)
            self.m = m = xp.where(xp.isfinite(m), m, 0)
            s = xp.exp(a - m).sum(axis=dims, keepdims=True)
            out = xp.log(s) + m
        self.out = out if keepdim else out.reshape(tuple(n for i, n in enumerate(out.shape) if i not in dims))
        return self.out

    def backward(self, g):
        # softmax(x) = exp(x - m) / sum(exp(x - m)), not exp(x - out): for large x, out = m +
        # log(s) is rounded to the spacing of m (1e-3 at 1e4 in float32), and exp(x - out) would
        # carry that error. m is a constant here: softmax does not depend on the shift.
        x = self.inputs[0]
        if not is_grad_enabled():  # a plain backward: the same formula as one fused pass
            return LogSumExpGrad.apply(x, g, m=self.m, dims=self.dims, keepdim=self.keepdim)
        e = (x - Tensor._make(self.m, self.device, False, None)).exp()
        return _expand_back(g, self) * (e / sum(e, self.dims, keepdim=True))


class LogSumExpGrad(Op):
    """softmax(x) * g, LogSumExp's backward in one pass; only used outside create_graph (it has
    no gradient of its own: the composite in LogSumExp.backward is used when one is needed)."""

    differentiable = False

    def forward(self, x, g, m, dims, keepdim):
        e = self.xp.exp(x - m)
        e /= e.sum(axis=dims, keepdims=True)
        if not keepdim:
            g = g.reshape(_kept_shape(x.shape, dims))
        e *= g
        return e


def logsumexp(x, dim=None, keepdim=False):
    if not x.dtype.is_floating_point:
        x = x.to(dtypes.get_default_dtype())
    return LogSumExp.apply(x, dims=_dims(dim, x, "logsumexp"), keepdim=keepdim)


class All(Op):
    differentiable = False
    fn = "all"

    def forward(self, a, dims, keepdim):
        return getattr(a, self.fn)(axis=dims, keepdims=keepdim)


class Any(All):
    fn = "any"


def all(x, dim=None, keepdim=False):
    return All.apply(x, dims=_dims(dim, x, "all"), keepdim=keepdim)


def any(x, dim=None, keepdim=False):
    return Any.apply(x, dims=_dims(dim, x, "any"), keepdim=keepdim)

