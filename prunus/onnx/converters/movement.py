"""ONNX converters for prunus/ops/movement.py: reshape (as Flatten where it is one), permute,
broadcast_to, sum_to, cat, pad, flip, repeat, tril/triu, contiguous/clone.

Reshape and broadcast_to carry target shapes traced at the example sizes; their converters write
them so they hold at any size of the dynamic axes (see Context.shape_operand).
"""

from __future__ import annotations

import math

import numpy as np

from prunus.onnx.converters._context import INT64_MIN
from prunus.onnx.converters._registry import converts
from prunus.ops import movement as M


def _prod(sigs, n_captures):
    return tuple(math.prod(s[c] for s in sigs) for c in range(n_captures))


def _flatten_axis(in_sig, out_sig):
    """k when the reshape is ONNX Flatten(axis=k): (prod(dims[:k]), prod(dims[k:])) at every
    traced size."""
    if len(out_sig) != 2 or len(in_sig) < 2:
        return None
    n = len(out_sig[0])
    for k in range(1, len(in_sig)):
        if _prod(in_sig[:k], n) == out_sig[0] and _prod(in_sig[k:], n) == out_sig[1]:
            return k
    return None


@converts(M.Reshape, varying=("shape",))
def convert_Reshape(ctx, node):
    x = ctx.inp(node, 0)
    in_sig, out_sig = ctx.sig(node.inputs[0]), ctx.sig(node.output)
    k = _flatten_axis(in_sig, out_sig)
    if k is not None:
        ctx.emit("Flatten", [x], ctx.out(node), axis=k)
        return
    shape, allowzero = ctx.shape_operand(out_sig, x, in_sig, "Reshape's target shape")
    ctx.emit("Reshape", [x, shape], ctx.out(node), allowzero=allowzero or None)


@converts(M.Permute)
def convert_Permute(ctx, node):
    ctx.emit("Transpose", [ctx.inp(node, 0)], ctx.out(node), perm=list(node.attrs["dims"]))


@converts(M.BroadcastTo, varying=("shape",))
def convert_BroadcastTo(ctx, node):
    # Expand broadcasts both ways, so a target dim of 1 keeps the input's dim whatever its size:
    # only dims that really grow are written, and those must be static
    in_sig, out_sig = ctx.sig(node.inputs[0]), ctx.sig(node.output)
    lead = len(out_sig) - len(in_sig)
    target = []
    for d, s in enumerate(out_sig):
        if d >= lead and in_sig[d - lead] == s:
            target.append(1)
        elif len(set(s)) == 1:
            target.append(s[0])
        else:
            raise ctx.fail(
                f"broadcast_to grows dim {d} to a size that follows a dynamic axis (sizes {s} "
                "across the traced sizes); export with that axis static"
            )
    ctx.emit("Expand", [ctx.inp(node, 0), ctx.ints(target)], ctx.out(node))


@converts(M.SumTo)
def convert_SumTo(ctx, node):
    shape, in_shape = tuple(node.attrs["shape"]), ctx.shape(node.inputs[0])
    lead = len(in_shape) - len(shape)
    axes = list(range(lead)) + [
        i + lead for i, s in enumerate(shape) if s == 1 and in_shape[i + lead] != 1
    ]
    x = ctx.inp(node, 0)
    if not axes:
        ctx.emit("Identity", [x], ctx.out(node))
        return
    if not lead:
        ctx.reduce("ReduceSum", x, axes, True, ctx.out(node))
        return
    ctx.squeeze(ctx.reduce("ReduceSum", x, axes, True), range(lead), ctx.out(node))


@converts(M.Cat)
def convert_Cat(ctx, node):
    ctx.emit("Concat", [ctx.name(i) for i in node.inputs], ctx.out(node),
             axis=int(node.attrs["dim"]))


@converts(M.Pad)
def convert_Pad(ctx, node):
    widths = node.attrs["widths"]
    pads = [int(lo) for lo, _ in widths] + [int(hi) for _, hi in widths]
    value = ctx.scalar(node.attrs["value"], ctx.np_dtype(node.inputs[0]))
    ctx.emit("Pad", [ctx.inp(node, 0), ctx.ints(pads), value], ctx.out(node), mode="constant")


@converts(M.Flip)
def convert_Flip(ctx, node):
    dims = list(node.attrs["dims"])
    x = ctx.inp(node, 0)
    if not dims:
        ctx.emit("Identity", [x], ctx.out(node))
        return
    k = len(dims)
    # a step of -1 from the last element (start -1) to before the first (end clamped to -1)
    ctx.emit("Slice", [x, ctx.ints([-1] * k), ctx.ints([INT64_MIN] * k), ctx.ints(dims),
                       ctx.ints([-1] * k)], ctx.out(node))


@converts(M.Repeat)
def convert_Repeat(ctx, node):
    reps = list(node.attrs["reps"])
    x = ctx.inp(node, 0)
    lead = len(reps) - len(ctx.shape(node.inputs[0]))
    if lead:  # more repeats than dims: new leading dims of size 1, as NumPy's tile
        x = ctx.unsqueeze(x, range(lead))
    ctx.emit("Tile", [x, ctx.ints(reps)], ctx.out(node))


def _trilu(upper):
    def convert(ctx, node):
        k = ctx.const(np.asarray(int(node.attrs["diagonal"]), dtype=np.int64), "k")
        ctx.emit("Trilu", [ctx.inp(node, 0), k], ctx.out(node), upper=upper)

    return convert


convert_Tril = converts(M.Tril, min_opset=14)(_trilu(0))
convert_Triu = converts(M.Triu, min_opset=14)(_trilu(1))


@converts(M.Contiguous, M.Clone)
def convert_Identity(ctx, node):
    ctx.emit("Identity", [ctx.inp(node, 0)], ctx.out(node))
