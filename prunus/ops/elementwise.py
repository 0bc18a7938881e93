"""Elementwise arithmetic and math: + - * / ** // %, exp/log family, trig, abs, sign, clamp,
maximum/minimum, where, and the comparisons (which carry no gradient).

Binary ops broadcast as PyTorch does and promote dtypes by prunus.dtypes; each backward reduces
its gradient back to the input's shape with `sum_to`. Activations live in activation.py.
"""

from __future__ import annotations

from prunus import dtypes
from prunus.errors import DTypeError, fmt_shape
from prunus.ops._util import Elementwise, constant, describe, promote
from prunus.ops.movement import sum_to
from prunus.tensor import Tensor

# -- binary arithmetic -----------------------------------------------------------------------


class Add(Elementwise):
    saves_inputs = False  # backward needs only shapes

    def forward(self, a, b):
        return a + b

    def forward_into(self, out, a, b):  # the same result written over a dead input's buffer
        return self.xp.add(a, b, out=out)

    def backward(self, g):
        a, b = self.inputs
        return sum_to(g, a.shape), sum_to(g, b.shape)


class Sub(Elementwise):
    saves_inputs = False  # backward needs only shapes

    def forward(self, a, b):
        return a - b

    def forward_into(self, out, a, b):
        return self.xp.subtract(a, b, out=out)

    def backward(self, g):
        a, b = self.inputs
        return sum_to(g, a.shape), sum_to(-g, b.shape) if self.needs_input_grad[1] else None


class Mul(Elementwise):
    def forward(self, a, b):
        return a * b

    def forward_into(self, out, a, b):
        return self.xp.multiply(a, b, out=out)

    def backward(self, g):
        a, b = self.inputs
        na, nb = self.needs_input_grad
        return (sum_to(g * b, a.shape) if na else None, sum_to(g * a, b.shape) if nb else None)


class Div(Elementwise):
    def forward(self, a, b):
        return a / b

    def forward_into(self, out, a, b):
        return self.xp.true_divide(a, b, out=out)

    def backward(self, g):
        a, b = self.inputs
        na, nb = self.needs_input_grad
        ga = sum_to(g / b, a.shape) if na else None
        gb = sum_to(-g * a / (b * b), b.shape) if nb else None
        return ga, gb


class Pow(Elementwise):
    def forward(self, a, b):
        self.out = a**b
        return self.out

    def backward(self, g):
        a, b = self.inputs
        na, nb = self.needs_input_grad
        ga = gb = None
        if na:
            # b * a^(b-1), written so that a^0 has gradient 0 at a = 0 (as PyTorch)
            ga = sum_to(where(b == 0, 0.0, g * b * a ** (b - 1)), a.shape)
        if nb:
            # d/db a^b = a^b log a; PyTorch defines it as 0 where a = 0 and b >= 0
            safe = where(a == 0, 1.0, a)
            gb = sum_to(where((a == 0) & (b >= 0), 0.0, g * self.output() * log(safe)), b.shape)
        return ga, gb


class FloorDivide(Elementwise):
    differentiable = False

    def forward(self, a, b):
        return a // b


class Remainder(Elementwise):
    """Python's modulo: the result has the sign of the divisor (as torch.remainder)."""

    def forward(self, a, b):
        return a % b

    def backward(self, g):
        a, b = self.inputs
        na, nb = self.needs_input_grad
        ga = sum_to(g, a.shape) if na else None
        gb = sum_to(-g * floor(a / b), b.shape) if nb else None
        return ga, gb


def _arith(cls, a, b):
    a, b = promote(a, b, cls.__name__)
    return cls.apply(a, b)


def add(a, b, alpha=1):
    return _arith(Add, a, b if alpha == 1 else b * alpha)


def _is_bool(x) -> bool:
    return type(x) is bool or type(x) is Tensor and x.data.dtype.kind == "b"


def sub(a, b, alpha=1):
    if _is_bool(a) or _is_bool(b):  # either side bool, tensor or Python bool: PyTorch refuses too
        raise DTypeError(
            f"Sub: subtraction with a bool operand ({describe(a)} - {describe(b)}) is not "
            "supported; use ~ or logical_xor"
        )
    return _arith(Sub, a, b if alpha == 1 else b * alpha)


def mul(a, b):
    return _arith(Mul, a, b)


def div(a, b):
    a, b = promote(a, b, "Div")
    if not a.dtype.is_floating_point:  # true division of integers gives the default float
        a, b = a.to(dtypes.get_default_dtype()), b.to(dtypes.get_default_dtype())
    return Div.apply(a, b)


def pow(a, b):
    return _arith(Pow, a, b)


def floor_divide(a, b):
    return _arith(FloorDivide, a, b)


def remainder(a, b):
    return _arith(Remainder, a, b)


def neg(x):
    return Neg.apply(x)


class Neg(Elementwise):
    saves_inputs = False  # backward needs only shapes

    def forward(self, a):
        if a.dtype == bool:
            raise DTypeError(f"Neg: negation of a bool tensor {fmt_shape(a.shape)}; use ~ instead")
        return -a

    def backward(self, g):
        return -g


# -- unary math ------------------------------------------------------------------------------


class _Unary(Elementwise):
    """Unary float math: integer inputs are promoted to the default float, as in PyTorch."""


def _float_unary(cls, x, **attrs):
    if not x.dtype.is_floating_point:
        x = x.to(dtypes.get_default_dtype())
    return cls.apply(x, **attrs)


class Exp(_Unary):
    def forward(self, a):
        self.out = self.xp.exp(a)
        return self.out

    def forward_into(self, out, a):
        self.out = self.xp.exp(a, out=out)
        return self.out

    def backward(self, g):
        return g * self.output()


class Log(_Unary):
    def forward(self, a):
        return self.xp.log(a)

    def forward_into(self, out, a):
        return self.xp.log(a, out=out)

    def backward(self, g):
        return g / self.inputs[0]


class Log1p(_Unary):
    def forward(self, a):
        return self.xp.log1p(a)

    def backward(self, g):
        return g / (self.inputs[0] + 1)


class Expm1(_Unary):
    def forward(self, a):
        self.out = self.xp.expm1(a)
        return self.out

    def backward(self, g):
        return g * (self.output() + 1)


class Sqrt(_Unary):
    def forward(self, a):
        self.out = self.xp.sqrt(a)
        return self.out

    def backward(self, g):
        return g / (2 * self.output())


class Rsqrt(_Unary):
    def forward(self, a):
        xp = self.xp
        self.out = xp.reciprocal(xp.sqrt(a))
        return self.out

    def backward(self, g):
        y = self.output()
        return g * (-0.5) * y * y * y


class Sin(_Unary):
    def forward(self, a):
        return self.xp.sin(a)

    def backward(self, g):
        return g * cos(self.inputs[0])


class Cos(_Unary):
    def forward(self, a):
        return self.xp.cos(a)

    def backward(self, g):
        return -g * sin(self.inputs[0])


class Floor(_Unary):
    differentiable = False

    def forward(self, a):
        return self.xp.floor(a)


class Abs(Elementwise):
    def forward(self, a):
        return abs(a)

    def backward(self, g):
        return g * sign(self.inputs[0])


class Sign(Elementwise):
    saves_inputs = False  # backward needs only shapes

    def forward(self, a):
        return self.xp.sign(a)

    def backward(self, g):
        return g * 0


def exp(x):
    return _float_unary(Exp, x)


def log(x):
    return _float_unary(Log, x)


def log1p(x):
    return _float_unary(Log1p, x)


def expm1(x):
    return _float_unary(Expm1, x)


def sqrt(x):
    return _float_unary(Sqrt, x)


def rsqrt(x):
    return _float_unary(Rsqrt, x)


def sin(x):
    return _float_unary(Sin, x)


def cos(x):
    return _float_unary(Cos, x)


def floor(x):
    return Floor.apply(x) if x.dtype.is_floating_point else x


def abs_(x):
    return Abs.apply(x)


def sign(x):
    return Sign.apply(x)


# -- clamp, maximum, minimum, where ----------------------------------------------------------


class Clamp(Elementwise):
    def forward(self, a, lo=None, hi=None):
        self.lo, self.hi = lo, hi
        return self.xp.clip(a, lo, hi)

    def backward(self, g):
        x = self.inputs[0]
        if self.lo is None:
            keep = x <= self.hi
        elif self.hi is None:
            keep = x >= self.lo
        else:
            keep = (x >= self.lo) & (x <= self.hi)
        return g * keep


def clamp(x, min=None, max=None):
    """Clip to [min, max] (bounds are numbers); the gradient passes where min <= x <= max."""
    if min is None and max is None:
        from prunus.errors import ArgumentError

        raise ArgumentError("clamp: at least one of min and max must be given")
    if not x.dtype.is_floating_point and (isinstance(min, float) or isinstance(max, float)):
        x = x.to(dtypes.get_default_dtype())  # int tensor, float bound: a float result (PyTorch)
    if isinstance(min, Tensor) or isinstance(max, Tensor):
        out = x
        if min is not None:
            out = maximum(out, min)
        if max is not None:
            out = minimum(out, max)
        return out
    return Clamp.apply(x, lo=min, hi=max)


class Maximum(Elementwise):
    def forward(self, a, b):
        return self.xp.maximum(a, b)

    def backward(self, g):
        # ties share the gradient equally, as in PyTorch
        a, b = self.inputs
        half = g * 0.5
        ga = where(a > b, g, where(a == b, half, 0.0))
        gb = where(b > a, g, where(a == b, half, 0.0))
        return sum_to(ga, a.shape), sum_to(gb, b.shape)


class Minimum(Elementwise):
    def forward(self, a, b):
        return self.xp.minimum(a, b)

    def backward(self, g):
        a, b = self.inputs
        half = g * 0.5
        ga = where(a < b, g, where(a == b, half, 0.0))
        gb = where(b < a, g, where(a == b, half, 0.0))
        return sum_to(ga, a.shape), sum_to(gb, b.shape)


def maximum(a, b):
    return _arith(Maximum, a, b)


def minimum(a, b):
    return _arith(Minimum, a, b)


class Where(Elementwise):
    def forward(self, cond, a, b):
        return self.xp.where(cond, a, b)

    def backward(self, g):
        cond, a, b = self.inputs
        _, na, nb = self.needs_input_grad
        zero = constant(0, g)
        ga = sum_to(Where.apply(cond, g, zero), a.shape) if na else None
        gb = sum_to(Where.apply(cond, zero, g), b.shape) if nb else None
        return None, ga, gb


def where(cond, a, b):
    """`a` where `cond` is true, else `b` (broadcasting; a and b may be numbers)."""
    if not isinstance(cond, Tensor) or cond.dtype is not dtypes.bool_:
        raise DTypeError(f"where: condition must be a bool tensor, got {describe(cond)}")
    if not isinstance(a, Tensor) and not isinstance(b, Tensor):
        d = dtypes.result_type(a, b)
        a, b = constant(a, cond, d), constant(b, cond, d)
    else:
        a, b = promote(a, b, "where")
    return Where.apply(cond, a, b)


# -- comparisons and logic (no gradient) -----------------------------------------------------


class _Compare(Elementwise):
    differentiable = False


class Eq(_Compare):
    def forward(self, a, b):
        return a == b


class Ne(_Compare):
    def forward(self, a, b):
        return a != b


class Lt(_Compare):
    def forward(self, a, b):
        return a < b


class Le(_Compare):
    def forward(self, a, b):
        return a <= b


class Gt(_Compare):
    def forward(self, a, b):
        return a > b


class Ge(_Compare):
    def forward(self, a, b):
        return a >= b


class LogicalAnd(_Compare):
    def forward(self, a, b):
        return a & b


class LogicalOr(_Compare):
    def forward(self, a, b):
        return a | b


class LogicalXor(_Compare):
    def forward(self, a, b):
        return a ^ b


class LogicalNot(_Compare):
    def forward(self, a):
        if a.dtype != bool and a.dtype.kind not in "iu":
            raise DTypeError(f"LogicalNot: ~ needs a bool or integer tensor, got {a.dtype}")
        return ~a


class IsFinite(_Compare):
    def forward(self, a):
        return self.xp.isfinite(a)


def _cmp(cls):
    def fn(a, b):
        a, b = promote(a, b, cls.__name__)
        return cls.apply(a, b)

    fn.__name__ = cls.__name__.lower()
    return fn


eq, ne, lt, le, gt, ge = (_cmp(c) for c in (Eq, Ne, Lt, Le, Gt, Ge))


def _bitwise(cls):
    def fn(a, b):
        pa, pb = promote(a, b, cls.__name__)
        if pa.dtype.is_floating_point:
            raise DTypeError(
                f"{cls.__name__}: needs bool or integer tensors, got {describe(a)} and "
                f"{describe(b)}"
            )
        return cls.apply(pa, pb)

    return fn


logical_and, logical_or, logical_xor = (_bitwise(c) for c in (LogicalAnd, LogicalOr, LogicalXor))


def logical_not(x):
    return LogicalNot.apply(x)


def isfinite(x):
    return IsFinite.apply(x)
