"""In-place updates: add_ sub_ mul_ div_ copy_ zero_ fill_ clamp_ masked_fill_.

They are ops too (without gradients) so that a captured graph sees optimizer updates and mask
applications like any other step. They refuse tensors that require grad while grad mode is on.
"""

from __future__ import annotations

from prunus import dtypes
from prunus.autograd import Op, mark_modified
from prunus.errors import DTypeError, ShapeError, fmt_shape
from prunus.ops._util import constant, describe
from prunus.tensor import Tensor


class _InPlace(Op):
    differentiable = False

    @staticmethod
    def mutated_inputs(n_inputs, attrs):
        """Positions of the inputs this op writes (for graph passes that must keep order)."""
        return (0,)

    def explain(self, shapes):
        raise ShapeError(
            f"{self.name}: cannot update a tensor of shape {fmt_shape(shapes[0])} in place with "
            f"{fmt_shape(shapes[1]) if len(shapes) > 1 else 'a scalar'}: the other operand must "
            "broadcast to it without growing it"
        )


class AddInPlace(_InPlace):
    def forward(self, a, b, alpha=1):
        if alpha == 1:
            self.xp.add(a, b, out=a, casting="unsafe")
        else:
            self.xp.add(a, b * alpha, out=a, casting="unsafe")
        return a


class MulInPlace(_InPlace):
    def forward(self, a, b):
        self.xp.multiply(a, b, out=a, casting="unsafe")
        return a


class DivInPlace(_InPlace):
    def forward(self, a, b):
        self.xp.true_divide(a, b, out=a, casting="unsafe")
        return a


class CopyInPlace(_InPlace):
    def forward(self, a, b):
        self.xp.copyto(a, b, casting="unsafe")
        return a


class ClampInPlace(_InPlace):
    def forward(self, a, lo, hi):
        self.xp.clip(a, lo, hi, out=a)
        return a


class MaskedFillInPlace(_InPlace):
    def forward(self, a, mask, value):
        self.xp.copyto(a, self.xp.asarray(value, dtype=a.dtype), where=mask)
        return a


def _operand(x, other):
    if isinstance(other, Tensor):
        if other.device is not x.device:
            other = other.to(x.device)
        return other
    return constant(other, x)


def _run(x, cls, *others, op=None, **attrs):
    x._check_inplace(op or cls.__name__)
    cls.apply(x, *[_operand(x, o) for o in others], **attrs)
    mark_modified(x)
    return x


def add_(x, other, alpha=1):
    return _run(x, AddInPlace, other, alpha=alpha, op="add_")


def sub_(x, other, alpha=1):
    return _run(x, AddInPlace, other, alpha=-alpha, op="sub_")


def mul_(x, other):
    return _run(x, MulInPlace, other, op="mul_")


def div_(x, other):
    return _run(x, DivInPlace, other, op="div_")


def copy_(x, src):
    return _run(x, CopyInPlace, src, op="copy_")


def zero_(x):
    return _run(x, CopyInPlace, 0, op="zero_")


def fill_(x, value):
    return _run(x, CopyInPlace, value, op="fill_")


def clamp_(x, min=None, max=None):
    return _run(x, ClampInPlace, lo=min, hi=max, op="clamp_")


def masked_fill_(x, mask, value):
    if not isinstance(mask, Tensor) or mask.dtype is not dtypes.bool_:
        raise DTypeError(f"masked_fill_: mask must be a bool tensor, got {describe(mask)}")
    if isinstance(value, Tensor):
        value = value.item()
    return _run(x, MaskedFillInPlace, mask, value=value, op="masked_fill_")
