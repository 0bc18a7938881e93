"""The dtypes of prunus and how they promote (PyTorch's rules; the table is in docs/dtypes.md).

A `DType` wraps a NumPy dtype (bfloat16 comes from ml_dtypes). Promotion follows PyTorch, not
NumPy: categories bool < integer < floating; within a category the wider type wins; float16 with
bfloat16 gives float32; int8 with uint8 gives int16. Operands have priority: tensors with
dimensions, then zero-dimensional tensors, then Python scalars. A lower-priority operand changes the
result only when its category is higher (int32 tensor * 2.5 -> float32, the default float dtype).
"""

from __future__ import annotations

import ml_dtypes
import numpy as np

from prunus.errors import DTypeError

_BOOL, _INT, _FLOAT = 0, 1, 2


class DType:
    """One prunus dtype. Compare with `is` or `==`; `str(d)` is 'prunus.float32'."""

    __slots__ = ("bits", "category", "is_floating_point", "is_signed", "itemsize", "name", "np")

    def __init__(self, name: str, np_dtype, category: int):
        self.name = name
        self.np = np.dtype(np_dtype)
        self.category = category
        self.itemsize = self.np.itemsize
        self.bits = self.itemsize * 8
        self.is_floating_point = category == _FLOAT
        self.is_signed = name not in ("bool", "uint8")

    def __repr__(self) -> str:
        return f"prunus.{self.name}"

    def __reduce__(self):  # dtypes are singletons; copy/deepcopy keep identity
        return (from_name, (self.name,))


bool_ = DType("bool", np.bool_, _BOOL)
uint8 = DType("uint8", np.uint8, _INT)
int8 = DType("int8", np.int8, _INT)
int16 = DType("int16", np.int16, _INT)
int32 = DType("int32", np.int32, _INT)
int64 = DType("int64", np.int64, _INT)
float16 = DType("float16", np.float16, _FLOAT)
bfloat16 = DType("bfloat16", ml_dtypes.bfloat16, _FLOAT)
float32 = DType("float32", np.float32, _FLOAT)
float64 = DType("float64", np.float64, _FLOAT)

ALL = (bool_, uint8, int8, int16, int32, int64, float16, bfloat16, float32, float64)
FLOATING = (float16, bfloat16, float32, float64)
_BY_NAME = {d.name: d for d in ALL}
_BY_NAME.update(half=float16, float=float32, double=float64, long=int64, int=int32, short=int16)
_BY_NP = {d.np: d for d in ALL}

# Python-side aliases, so `prunus.float` and `prunus.long` work as in PyTorch.
half, double, long, short = float16, float64, int64, int16

_default_float = float32


def get_default_dtype() -> DType:
    return _default_float


def set_default_dtype(d) -> None:
    global _default_float
    d = as_dtype(d)
    if not d.is_floating_point:
        raise DTypeError(f"set_default_dtype: expected a floating dtype, got {d}")
    _default_float = d


def from_name(name: str) -> DType:
    return _BY_NAME[name]


def as_dtype(d) -> DType:
    """A DType from a DType, a name ('float32'), a NumPy dtype or a Python type (float, int, bool)."""
    if isinstance(d, DType):
        return d
    if d is float:
        return _default_float
    if d is int:
        return int64
    if d is bool:
        return bool_
    if isinstance(d, str):
        found = _BY_NAME.get(d.removeprefix("prunus.").removeprefix("torch."))
        if found is not None:
            return found
        raise DTypeError(f"unknown dtype {d!r}; prunus has {', '.join(x.name for x in ALL)}")
    try:
        return _BY_NP[np.dtype(d)]
    except (TypeError, KeyError):
        raise DTypeError(
            f"unsupported dtype {d!r}; prunus has {', '.join(x.name for x in ALL)}"
        ) from None


def from_numpy_dtype(npd) -> DType:
    try:
        return _BY_NP[npd]
    except KeyError:
        raise DTypeError(
            f"NumPy dtype {npd} has no prunus equivalent; "
            f"supported: {', '.join(str(x.np) for x in ALL)}"
        ) from None


# -- promotion -------------------------------------------------------------------------------

_INT_ORDER = (uint8, int8, int16, int32, int64)


def _promote_pair(a: DType, b: DType) -> DType:
    if a is b:
        return a
    if a.category != b.category:
        return a if a.category > b.category else b
    if a.category == _FLOAT:
        if {a, b} == {float16, bfloat16}:
            return float32
        return a if a.itemsize > b.itemsize else b
    if a.category == _INT:
        if {a, b} == {uint8, int8}:
            return int16
        if uint8 in (a, b):  # uint8 with a wider signed int: the signed one holds both
            return b if a is uint8 else a
        return a if a.itemsize > b.itemsize else b
    return a


def promote_types(a, b) -> DType:
    """The smaller dtype that holds both (both treated as dimensioned tensors)."""
    return _promote_pair(as_dtype(a), as_dtype(b))


def _scalar_dtype(x) -> DType:
    if isinstance(x, (bool, np.bool_)):
        return bool_
    if isinstance(x, (int, np.integer)):
        return int64
    if isinstance(x, (float, np.floating)):
        return _default_float
    raise DTypeError(f"cannot use {type(x).__name__} {x!r} as a number in a tensor op")


def _scalar_default(d: DType) -> DType:
    return _default_float if d.category == _FLOAT else int64


def result_type(*operands) -> DType:
    """PyTorch's promotion over tensors and Python scalars (see the module docstring)."""
    tiers = ([], [], [])  # dimensioned tensors, 0-d tensors, Python scalars
    for x in operands:
        dt = getattr(x, "dtype", None)
        if isinstance(dt, DType):
            tiers[0 if x.ndim else 1].append(dt)
        else:
            tiers[2].append(_scalar_dtype(x))
    result = None
    for tier in tiers:
        if not tier:
            continue
        best = tier[0]
        for d in tier[1:]:
            best = _promote_pair(best, d)
        if result is None:
            result = best
        elif best.category > result.category:
            # A lower tier lifts the category only. A 0-d tensor brings its own dtype; a Python
            # scalar brings the default of its category (float -> default float, int -> int64).
            result = best if tier is not tiers[2] else _scalar_default(best)
    return result
