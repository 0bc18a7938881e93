"""ONNX converters for prunus/ops/reduce.py: sum, mean, prod, amax/amin, argmax/argmin, all/any,
logsumexp. Reductions over a dynamic axis stay dynamic: ONNX reduces whatever size comes."""

from __future__ import annotations

import numpy as np

from prunus.onnx.converters._registry import converts
from prunus.ops import reduce as R


def _reduce(op_type, ctx, node, x=None):
    x = ctx.inp(node, 0) if x is None else x
    dims, keepdim = node.attrs["dims"], node.attrs["keepdim"]
    if not dims:  # a 0-d tensor: nothing to reduce
        ctx.emit("Identity", [x], ctx.out(node))
        return
    ctx.reduce(op_type, x, dims, keepdim, ctx.out(node))


@converts(R.Sum)
def convert_Sum(ctx, node):
    x = ctx.inp(node, 0)
    if ctx.np_dtype(node.inputs[0]).kind in "biu":  # sums of bools and integers are int64
        x = ctx.cast(x, np.int64)
    _reduce("ReduceSum", ctx, node, x)


@converts(R.Mean)
def convert_Mean(ctx, node):
    _reduce("ReduceMean", ctx, node)


@converts(R.Prod)
def convert_Prod(ctx, node):
    _reduce("ReduceProd", ctx, node)


@converts(R.Amax)
def convert_Amax(ctx, node):
    _reduce("ReduceMax", ctx, node)


@converts(R.Amin)
def convert_Amin(ctx, node):
    _reduce("ReduceMin", ctx, node)


def _all_any(op_type):
    def convert(ctx, node):
        # ONNX reduces bools only from opset 20: reduce 0/1 as int32 instead
        x = ctx.inp(node, 0)
        if ctx.np_dtype(node.inputs[0]) != np.bool_:
            x = ctx.cast(x, np.bool_)
        dims, keepdim = node.attrs["dims"], node.attrs["keepdim"]
        if not dims:
            ctx.emit("Identity", [x], ctx.out(node))
            return
        r = ctx.reduce(op_type, ctx.cast(x, np.int32), dims, keepdim)
        ctx.cast(r, np.bool_, ctx.out(node))

    return convert


convert_All = converts(R.All)(_all_any("ReduceMin"))
convert_Any = converts(R.Any)(_all_any("ReduceMax"))


def _arg(op_type):
    def convert(ctx, node):
        x, dim = ctx.inp(node, 0), node.attrs["dim"]
        if dim is None:  # over the flattened tensor, a 0-d result
            flat = ctx.emit("Reshape", [x, ctx.ints([-1])])
            ctx.emit(op_type, [flat], ctx.out(node), axis=0, keepdims=0)
            return
        ctx.emit(op_type, [x], ctx.out(node), axis=int(dim), keepdims=int(node.attrs["keepdim"]))

    return convert


convert_ArgMax = converts(R.ArgMax)(_arg("ArgMax"))
convert_ArgMin = converts(R.ArgMin)(_arg("ArgMin"))


@converts(R.LogSumExp)
def convert_LogSumExp(ctx, node):
    # m + log(sum(exp(x - m))), m the max where finite, else 0 (as the op): no overflow
    x, dims, keepdim = ctx.inp(node, 0), node.attrs["dims"], node.attrs["keepdim"]
    if not dims:
        ctx.emit("Identity", [x], ctx.out(node))
        return
    dt = ctx.np_dtype(node.inputs[0])
    m = ctx.reduce("ReduceMax", x, dims, True)
    finite = ctx.emit("Not", [ctx.emit("Or", [ctx.emit("IsInf", [m]), ctx.emit("IsNaN", [m])])])
    m = ctx.emit("Where", [finite, m, ctx.scalar(0, dt)])
    s = ctx.reduce("ReduceSum", ctx.emit("Exp", [ctx.emit("Sub", [x, m])]), dims, True)
    out = ctx.emit("Add", [ctx.emit("Log", [s]), m], None if not keepdim else ctx.out(node))
    if not keepdim:
        ctx.squeeze(out, dims, ctx.out(node))
