"""Misuse gets a clear prunus error: one table of (call, expected class, message fragments).

Every case must raise a class from `prunus.errors` (never a bare IndexError, AttributeError or a
NumPy error), and the message must name the op, the shapes/dtypes involved and the axis where one
applies. Shapes are written as PyTorch prints them: "(2, 3)", "(3,)", "()".
"""

from __future__ import annotations

import numpy
import pytest

import prunus
from prunus import errors as E

ones, zeros, tensor = prunus.ones, prunus.zeros, prunus.tensor


def _fake_device_tensor():
    fake = prunus.backend.Device("fake", None, numpy, prunus.backend.cpu.kernels)
    return prunus.Tensor._make(numpy.ones((2, 3), dtype=numpy.float32), fake, False, None)


def _cuda_tensor():
    if prunus.cuda_is_available():  # pragma: no cover - only on a GPU machine with CuPy
        pytest.skip("CUDA is available here; this case checks the error without it")
    return zeros(2, device="cuda")


def _nonscalar_backward():
    y = ones(2, 3, requires_grad=True) * 2
    y.backward()


def _backward_wrong_gradient_shape():
    y = ones(2, 3, requires_grad=True) * 2
    y.backward(ones(3, 2))


def _backward_twice():
    y = (ones(2, requires_grad=True) * 2).sum()
    y.backward()
    y.backward()


def _setitem_wrong_shape():
    x = zeros(2, 3)
    x[0] = ones(4)


def _inplace_on_leaf():
    w = ones(2, 3, requires_grad=True)
    w.add_(1.0)


def _mask_2x3():
    return ones(2, 3) > 0


# (id, thunk, expected class, fragments the message must contain)
CASES = [
    # -- matmul ------------------------------------------------------------------------------
    ("matmul-2d", lambda: ones(2, 3) @ ones(4, 5), E.ShapeError,
     ["matmul", "(2, 3)", "(4, 5)", "dimension -1", "dimension -2"]),
    ("matmul-1d", lambda: prunus.matmul(ones(3), ones(4)), E.ShapeError,
     ["matmul", "(3,)", "(4,)", "dimension 0"]),
    ("matmul-2d-by-1d", lambda: ones(2, 3) @ ones(4), E.ShapeError,
     ["matmul", "(2, 3)", "(4,)", "dimension 0"]),
    ("matmul-batched", lambda: ones(5, 2, 3) @ ones(5, 4, 2), E.ShapeError,
     ["matmul", "(5, 2, 3)", "(5, 4, 2)", "dimension -2"]),
    ("matmul-broadcast-batch", lambda: ones(2, 3, 4) @ ones(5, 4, 6), E.ShapeError,
     ["matmul", "(2, 3, 4)", "(5, 4, 6)", "dimension -3", "2", "5"]),
    ("matmul-0d-left", lambda: tensor(2.0) @ ones(3), E.ShapeError, ["matmul", "()", "(3,)"]),
    ("matmul-0d-right", lambda: ones(3) @ tensor(2.0), E.ShapeError, ["matmul", "(3,)", "()"]),
    ("mm-3d", lambda: prunus.mm(ones(2, 3, 4), ones(4, 2)), E.ShapeError,
     ["mm", "(2, 3, 4)", "(4, 2)"]),
    ("bmm-batch", lambda: prunus.bmm(ones(2, 3, 4), ones(3, 4, 5)), E.ShapeError,
     ["bmm", "(2, 3, 4)", "(3, 4, 5)"]),
    # -- broadcasting ------------------------------------------------------------------------
    ("add-broadcast", lambda: ones(2, 3) + ones(4, 3), E.ShapeError,
     ["Add", "(2, 3)", "(4, 3)", "dimension -2"]),
    ("mul-broadcast", lambda: ones(3) * ones(4), E.ShapeError,
     ["Mul", "(3,)", "(4,)", "dimension -1"]),
    ("lt-broadcast", lambda: ones(2, 3) < ones(2, 2), E.ShapeError,
     ["Lt", "(2, 3)", "(2, 2)", "dimension -1"]),
    ("where-broadcast", lambda: prunus.where(_mask_2x3(), ones(2, 3), ones(4, 1, 2)), E.ShapeError,
     ["Where", "(2, 3)", "(4, 1, 2)", "dimension -1"]),
    # -- reshape / view ----------------------------------------------------------------------
    ("reshape-numel", lambda: ones(2, 3).reshape(4, 2), E.ShapeError,
     ["reshape", "(2, 3)", "(4, 2)", "6 elements"]),
    ("view-numel", lambda: ones(2, 3).view(4, -1), E.ShapeError, ["view", "(2, 3)", "(4, -1)"]),
    ("reshape-two-minus-one", lambda: ones(6).reshape(-1, -1), E.ShapeError,
     ["reshape", "(6,)", "(-1, -1)", "only one dimension can be -1"]),
    ("flatten-start-after-end", lambda: ones(2, 3, 4).flatten(2, 0), E.ShapeError,
     ["flatten", "(2, 3, 4)"]),
    # -- cat / stack / split -----------------------------------------------------------------
    ("cat-mismatched-shapes", lambda: prunus.cat([ones(2, 3), ones(2, 4)], dim=0), E.ShapeError,
     ["cat", "(2, 3)", "(2, 4)", "dimension 1"]),
    ("cat-mismatched-ndim", lambda: prunus.cat([ones(2, 3), ones(3)]), E.ShapeError,
     ["cat", "(2, 3)", "(3,)", "number of dimensions"]),
    ("cat-empty-list", lambda: prunus.cat([]), E.ArgumentError, ["cat", "non-empty"]),
    ("cat-0d", lambda: prunus.cat([tensor(1.0), tensor(2.0)]), E.ShapeError,
     ["cat", "zero-dimensional", "()"]),
    ("cat-dim-out-of-range", lambda: prunus.cat([ones(2, 3), ones(2, 3)], dim=2),
     E.IndexOutOfRangeError, ["cat", "dimension 2", "2 dimensions"]),
    ("stack-different-shapes", lambda: prunus.stack([ones(2, 3), ones(3, 2)]), E.ShapeError,
     ["stack", "(2, 3)", "(3, 2)"]),
    ("split-sections-sum", lambda: ones(5, 2).split([2, 2]), E.ShapeError,
     ["split", "[2, 2]", "dimension 0", "(5, 2)"]),
    ("narrow-past-end", lambda: ones(2, 3).narrow(1, 2, 3), E.IndexOutOfRangeError,
     ["narrow", "dimension 1", "size 3", "(2, 3)"]),
    # -- indexing ----------------------------------------------------------------------------
    ("index-int-out-of-range", lambda: ones(2, 3)[5], E.IndexOutOfRangeError,
     ["getitem", "index 5", "dimension 0", "size 2", "(2, 3)"]),
    ("index-int-out-of-range-dim1", lambda: ones(2, 3)[0, 3], E.IndexOutOfRangeError,
     ["getitem", "index 3", "dimension 1", "size 3", "(2, 3)"]),
    ("index-negative-out-of-range", lambda: ones(2, 3)[-3], E.IndexOutOfRangeError,
     ["getitem", "index -3", "dimension 0", "size 2"]),
    ("index-int-tensor-out-of-range", lambda: ones(2, 3)[tensor([0, 4])], E.IndexOutOfRangeError,
     ["getitem", "index 4", "dimension 0", "size 2", "(2, 3)"]),
    ("index-int-tensor-negative", lambda: ones(2, 3)[:, tensor([-4])], E.IndexOutOfRangeError,
     ["getitem", "index -4", "dimension 1", "size 3"]),
    ("index-too-many", lambda: ones(2, 3)[0, 0, 0], E.IndexOutOfRangeError,
     ["getitem", "too many indices", "(2, 3)"]),
    ("index-mask-wrong-shape", lambda: ones(2, 3)[ones(3, 2) > 0], E.IndexOutOfRangeError,
     ["getitem", "mask", "(3, 2)", "(2, 3)", "dimensions 0..1"]),
    ("index-python-float", lambda: ones(2, 3)[1.5], E.DTypeError, ["getitem", "float", "1.5"]),
    ("index-float-tensor", lambda: ones(2, 3)[tensor([0.0, 1.0])], E.DTypeError,
     ["getitem", "float32"]),
    ("gather-float-index", lambda: ones(2, 3).gather(1, tensor([[0.0], [1.0]])), E.DTypeError,
     ["gather", "float32", "(2, 1)", "(2, 3)"]),
    ("gather-index-rank", lambda: ones(2, 3).gather(1, tensor([0, 1])), E.ShapeError,
     ["gather", "(2,)", "(2, 3)"]),
    ("gather-index-range", lambda: ones(2, 3).gather(1, tensor([[5], [0]])),
     E.IndexOutOfRangeError, ["gather", "index 5", "dimension 1", "size 3", "(2, 3)"]),
    ("index-select-float-index", lambda: ones(2, 3).index_select(0, tensor([0.0])), E.DTypeError,
     ["index_select", "float32"]),
    ("index-select-index-rank", lambda: ones(2, 3).index_select(0, tensor([[0]])), E.ShapeError,
     ["index_select", "(1, 1)", "(2, 3)"]),
    ("index-select-index-range", lambda: ones(2, 3).index_select(1, tensor([3])),
     E.IndexOutOfRangeError, ["index_select", "index 3", "dimension 1", "size 3"]),
    ("add-inplace-would-grow", lambda: zeros(3).add_(ones(2, 3)), E.ShapeError,
     ["AddInPlace", "(3,)", "(2, 3)"]),
    ("setitem-wrong-shape", _setitem_wrong_shape, E.ShapeError, ["setitem", "(4,)", "(3,)"]),
    # -- dims --------------------------------------------------------------------------------
    ("sum-dim-out-of-range", lambda: ones(2, 3).sum(2), E.IndexOutOfRangeError,
     ["sum", "dimension 2", "2 dimensions", "(2, 3)"]),
    ("sum-0d-dim-out-of-range", lambda: tensor(1.0).sum(3), E.IndexOutOfRangeError,
     ["sum", "dimension 3", "0 dimensions", "()"]),
    ("sum-dim-repeated", lambda: ones(2, 3).sum((1, -1)), E.ShapeError,
     ["sum", "repeated", "(1, -1)", "(2, 3)"]),
    ("sum-dim-float", lambda: ones(2, 3).sum(1.0), E.DTypeError, ["sum", "dim", "float"]),
    ("softmax-dim-out-of-range", lambda: prunus.softmax(ones(2, 3), dim=-3),
     E.IndexOutOfRangeError, ["softmax", "dimension -3", "2 dimensions", "(2, 3)"]),
    ("transpose-dim-out-of-range", lambda: ones(2, 3).transpose(0, 2), E.IndexOutOfRangeError,
     ["transpose", "dimension 2", "2 dimensions", "(2, 3)"]),
    ("unsqueeze-dim-out-of-range", lambda: ones(2, 3).unsqueeze(4), E.IndexOutOfRangeError,
     ["unsqueeze", "dimension 4", "2 dimensions", "(2, 3)", "-3..2"]),
    ("squeeze-dim-out-of-range", lambda: ones(2, 3).squeeze(2), E.IndexOutOfRangeError,
     ["squeeze", "dimension 2", "2 dimensions", "(2, 3)"]),
    ("permute-wrong-count", lambda: ones(2, 3).permute(0), E.ShapeError,
     ["permute", "(0,)", "(2, 3)"]),
    ("permute-repeated-dim", lambda: ones(2, 3).permute(0, 0), E.ShapeError,
     ["permute", "(0, 0)", "(2, 3)"]),
    # -- dtypes ------------------------------------------------------------------------------
    ("sub-bool", lambda: tensor([True, False]) - tensor([False, False]), E.DTypeError,
     ["Sub", "bool", "(2,)"]),
    ("neg-bool", lambda: -tensor([True, False]), E.DTypeError, ["Neg", "bool", "(2,)"]),
    ("where-float-condition", lambda: prunus.where(ones(2), ones(2), zeros(2)), E.DTypeError,
     ["where", "condition", "float32", "(2,)"]),
    ("masked-fill-float-mask", lambda: ones(2).masked_fill(ones(2), 0.0), E.DTypeError,
     ["masked_fill", "mask", "float32", "(2,)"]),
    ("masked-fill-inplace-float-mask", lambda: zeros(2, 3).masked_fill_(ones(2, 3), 1.0),
     E.DTypeError, ["masked_fill_", "mask", "float32", "(2, 3)"]),
    ("mean-int", lambda: tensor([1, 2]).mean(), E.DTypeError, ["mean", "int64"]),
    ("bitwise-and-float", lambda: ones(2) & ones(2), E.DTypeError, ["LogicalAnd", "float32"]),
    ("bitwise-or-int-float", lambda: tensor([1, 2]) | ones(2), E.DTypeError,
     ["LogicalOr", "int64 (2,)", "float32 (2,)"]),
    ("invert-float", lambda: ~ones(2), E.DTypeError, ["LogicalNot", "float32"]),
    ("matmul-bool", lambda: tensor([True]) @ tensor([True]), E.DTypeError,
     ["matmul", "bool", "(1,)"]),
    ("requires-grad-int-factory", lambda: tensor([1, 2], requires_grad=True), E.DTypeError,
     ["requires_grad", "int64", "(2,)"]),
    ("requires-grad-int-method", lambda: tensor([1, 2]).requires_grad_(), E.DTypeError,
     ["requires_grad", "int64", "(2,)"]),
    ("unknown-dtype", lambda: zeros(2, dtype="float128"), E.DTypeError, ["float128"]),
    ("item-multi-element", lambda: ones(2, 3).item(), E.DTypeError, ["item", "(2, 3)"]),
    # -- devices -----------------------------------------------------------------------------
    ("device-mix", lambda: ones(2, 3) + _fake_device_tensor(), E.DeviceError,
     ["Add", "cpu", "fake", "(2, 3)"]),
    ("device-mix-matmul", lambda: _fake_device_tensor() @ ones(3, 2), E.DeviceError,
     ["MatMul", "fake", "cpu", "(2, 3)", "(3, 2)"]),
    ("cuda-unavailable", _cuda_tensor, E.DeviceUnavailableError, ["cuda", "CuPy"]),
    ("unknown-device", lambda: zeros(2, device="tpu"), E.DeviceError, ["tpu", "cpu", "cuda"]),
    # -- arguments ---------------------------------------------------------------------------
    ("zeros-negative-size", lambda: zeros(2, -1), E.ArgumentError, ["zeros", "-1", "(2, -1)"]),
    ("pad-odd-length", lambda: prunus.pad(ones(2, 3), (1,)), E.ShapeError,
     ["pad", "(1,)", "(2, 3)"]),
    ("repeat-too-few-dims", lambda: ones(2, 3).repeat(2), E.ShapeError,
     ["repeat", "(2, 3)", "(2,)"]),
    ("expand-incompatible", lambda: ones(2, 3).expand(4, 3), E.ShapeError,
     ["expand", "(2, 3)", "(4, 3)", "dimension -2"]),
    ("expand-fewer-dims", lambda: ones(2, 3).expand(3), E.ShapeError, ["expand", "(2, 3)", "(3,)"]),
    ("tensor-ragged", lambda: tensor([[1.0, 2.0], [3.0]]), E.ShapeError, ["tensor", "ragged"]),
    # -- autograd ----------------------------------------------------------------------------
    ("backward-wrong-gradient-shape", _backward_wrong_gradient_shape, E.ShapeError,
     ["backward", "(3, 2)", "(2, 3)"]),
    # The autograd-engine misuses below are AutogradError, a RuntimeError as in PyTorch
    # (`except RuntimeError` keeps working); they are not counted among the Value/TypeErrors.
    ("backward-non-scalar", _nonscalar_backward, E.AutogradError, ["backward", "scalar", "(2, 3)"]),
    ("backward-twice", _backward_twice, E.AutogradError, ["second time", "retain_graph"]),
    ("numpy-requires-grad", lambda: ones(2, requires_grad=True).numpy(), E.AutogradError,
     ["numpy", "requires grad", "detach"]),
    ("inplace-add-on-grad-leaf", _inplace_on_leaf, E.AutogradError,
     ["add_", "requires grad", "(2, 3)"]),
]


@pytest.mark.parametrize(
    "thunk, expected, fragments",
    [pytest.param(fn, exc, frags, id=name) for name, fn, exc, frags in CASES],
)
def test_misuse_raises_clear_prunus_error(thunk, expected, fragments):
    with pytest.raises(Exception) as info:
        thunk()
    e = info.value
    assert type(e).__module__ == "prunus.errors", f"raised {type(e).__module__}.{type(e).__name__}: {e}"
    assert isinstance(e, E.PrunusError)
    assert isinstance(e, expected), f"expected {expected.__name__}, got {type(e).__name__}: {e}"
    if not issubclass(expected, E.AutogradError):
        assert isinstance(e, (ValueError, TypeError)), f"{type(e).__name__} is not a Value/TypeError"
    msg = str(e)
    missing = [f for f in fragments if f not in msg]
    assert not missing, f"message lacks {missing}: {msg!r}"

