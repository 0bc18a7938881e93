"""The differentiable primitives, one family per module, and the functions over them.

`bind_methods` attaches the functions to `Tensor` as methods and operators, so `x.exp()`,
`prunus.exp(x)` and the graph capture all reach the same op class.
"""

from prunus.ops import (
    activation,
    convert,
    elementwise,
    indexing,
    inplace,
    linalg,
    loss,
    movement,
    reduce,
)
from prunus.ops.activation import (
    elu,
    erf,
    gelu,
    leaky_relu,
    log_softmax,
    relu,
    sigmoid,
    softmax,
    softplus,
    tanh,
)
from prunus.ops.convert import cast, to_device
from prunus.ops.elementwise import (
    abs_,
    add,
    clamp,
    cos,
    div,
    eq,
    exp,
    expm1,
    floor,
    floor_divide,
    ge,
    gt,
    isfinite,
    le,
    log,
    log1p,
    logical_and,
    logical_not,
    logical_or,
    logical_xor,
    lt,
    maximum,
    minimum,
    mul,
    ne,
    neg,
    pow,
    remainder,
    rsqrt,
    sign,
    sin,
    sqrt,
    sub,
    where,
)
from prunus.ops.indexing import gather, getitem, index_select, masked_fill, setitem_
from prunus.ops.inplace import add_, clamp_, copy_, div_, fill_, masked_fill_, mul_, sub_, zero_
from prunus.ops.linalg import bmm, dot, linear, matmul, mm, mT, outer
from prunus.ops.loss import cross_entropy
from prunus.ops.movement import (
    broadcast_tensors,
    broadcast_to,
    cat,
    chunk,
    clone,
    contiguous,
    expand,
    flatten,
    flip,
    narrow,
    pad,
    permute,
    repeat,
    reshape,
    split,
    squeeze,
    stack,
    sum_to,
    t,
    transpose,
    tril,
    triu,
    unsqueeze,
    view,
)
from prunus.ops.reduce import (
    all,
    amax,
    amin,
    any,
    argmax,
    argmin,
    logsumexp,
    max,
    mean,
    min,
    prod,
    std,
    sum,
    var,
)

_METHODS = dict(  # noqa: C408  (keywords read as the method table they are)
    add=add, sub=sub, mul=mul, div=div, pow=pow, neg=neg, exp=exp, log=log, log1p=log1p,
    expm1=expm1, sqrt=sqrt, rsqrt=rsqrt, abs=abs_, sign=sign, clamp=clamp, clip=clamp,
    maximum=maximum, minimum=minimum, sin=sin, cos=cos, tanh=tanh, sigmoid=sigmoid, relu=relu,
    erf=erf, floor=floor, softmax=softmax, log_softmax=log_softmax, sum=sum, mean=mean, var=var,
    std=std, max=max, min=min, amax=amax, amin=amin, logsumexp=logsumexp, prod=prod,
    argmax=argmax, argmin=argmin, all=all, any=any, reshape=reshape, view=view, flatten=flatten,
    squeeze=squeeze, unsqueeze=unsqueeze, transpose=transpose, permute=permute, t=t,
    expand=expand, broadcast_to=broadcast_to, split=split, chunk=chunk, flip=flip, repeat=repeat,
    gather=gather, index_select=index_select, masked_fill=masked_fill, tril=tril, triu=triu,
    matmul=matmul, contiguous=contiguous, clone=clone, narrow=narrow, eq=eq, ne=ne, lt=lt, le=le,
    gt=gt, ge=ge, isfinite=isfinite, logical_not=logical_not, add_=add_, sub_=sub_, mul_=mul_,
    div_=div_, copy_=copy_, zero_=zero_, fill_=fill_, clamp_=clamp_, masked_fill_=masked_fill_,
    __add__=add, __sub__=sub, __mul__=mul, __truediv__=div, __pow__=pow, __matmul__=matmul,
    __floordiv__=floor_divide, __mod__=remainder, __neg__=neg, __abs__=abs_,
    __eq__=eq, __ne__=ne, __lt__=lt, __le__=le, __gt__=gt, __ge__=ge,
    __and__=logical_and, __or__=logical_or, __xor__=logical_xor, __invert__=logical_not,
    __getitem__=getitem, __iadd__=add_, __isub__=sub_, __imul__=mul_, __itruediv__=div_,
)


def _reflected(fn):
    def method(self, other):
        return fn(other, self)

    method.__name__ = f"__r{fn.__name__}__"
    return method


def _T(x):
    """All dimensions reversed (the matrix transpose for 2-D)."""
    if x.data.ndim == 2:
        return movement.Permute.apply(x, dims=(1, 0))
    return permute(x, tuple(range(x.ndim))[::-1]) if x.ndim > 1 else x


def bind_methods(cls):
    for name, fn in _METHODS.items():
        setattr(cls, name, fn)
    reflected = {"radd": add, "rsub": sub, "rmul": mul, "rtruediv": div, "rpow": pow,
                 "rmatmul": matmul, "rfloordiv": floor_divide, "rmod": remainder}
    for name, fn in reflected.items():
        setattr(cls, f"__{name}__", _reflected(fn))
    cls.__pos__ = lambda self: self
    cls.T = property(_T)
    cls.mT = property(mT)
    cls.view_as = lambda self, other: reshape(self, other.shape)
    cls.reshape_as = lambda self, other: reshape(self, other.shape)
    cls.expand_as = lambda self, other: broadcast_to(self, other.shape)
    cls.where = lambda self, condition, other: where(condition, self, other)
    cls.sum_to_size = lambda self, *shape: sum_to(self, shape[0] if len(shape) == 1 and isinstance(shape[0], tuple) else shape)
    cls.square = lambda self: mul(self, self)


__all__ = [n for n in dir() if not n.startswith("_") and n not in ("bind_methods",)]
