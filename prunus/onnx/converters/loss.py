"""ONNX converters for prunus/ops/loss.py: cross_entropy as SoftmaxCrossEntropyLoss, and its
class-weighted / label-smoothed form written out from LogSoftmax."""

from __future__ import annotations

import numpy as np

from prunus.graph.ir import Ref
from prunus.onnx.converters._registry import converts
from prunus.ops import loss as L


@converts(L.CrossEntropy)
def convert_CrossEntropy(ctx, node):
    ctx.emit("SoftmaxCrossEntropyLoss", [ctx.inp(node, 0), ctx.inp(node, 1)], ctx.out(node),
             reduction=node.attrs["reduction"], ignore_index=int(node.attrs["ignore_index"]))


@converts(L.SoftTargetCrossEntropy)
def convert_SoftTargetCrossEntropy(ctx, node):
    # -sum_c q[i, c] log_softmax(z)[i, c], q[i] = (1 - eps) w[t_i] onehot(t_i) + eps/C w, 0 for
    # ignored rows; 'mean' divides by the summed target weights (see the op)
    z, t = ctx.inp(node, 0), ctx.inp(node, 1)
    dt = ctx.np_dtype(node.inputs[0])
    if ctx.is_dynamic(node.inputs[0], 1):
        raise ctx.fail("the number of classes (dim 1) is a dynamic axis")
    c = ctx.shape(node.inputs[0])[1]
    eps, weight = float(node.attrs["smoothing"]), node.attrs["weight"]
    if weight is None:
        w = ctx.const(np.ones(c, dtype=dt), "class_weight")
    elif isinstance(weight, Ref):
        w = ctx.name(weight.value)
    else:
        w = ctx.const(ctx.to_numpy(weight).astype(dt), "class_weight")
    tdt = ctx.np_dtype(node.inputs[1])
    valid = ctx.emit("Not", [ctx.emit("Equal", [t, ctx.scalar(node.attrs["ignore_index"], tdt)])])
    safe = ctx.emit("Where", [valid, t, ctx.scalar(0, tdt)])
    validf = ctx.cast(valid, dt)
    wt = ctx.emit("Mul", [ctx.emit("Gather", [w, safe], axis=0), validf])  # (N,)
    onehot = ctx.cast(ctx.emit("Equal", [ctx.unsqueeze(safe, [1]),
                                         ctx.const(np.arange(c, dtype=tdt), "classes")]), dt)
    hot = ctx.emit("Mul", [onehot, ctx.unsqueeze(
        ctx.emit("Mul", [wt, ctx.scalar(1 - eps, dt)]), [1])])
    smooth = ctx.emit("Mul", [ctx.unsqueeze(validf, [1]),
                              ctx.emit("Mul", [w, ctx.scalar(eps / c, dt)])])
    q = ctx.emit("Add", [hot, smooth])
    logp = ctx.emit("LogSoftmax", [z], axis=1)
    losses = ctx.emit("Neg", [ctx.reduce("ReduceSum", ctx.emit("Mul", [q, logp]), [1], False)])
    reduction = node.attrs["reduction"]
    if reduction == "none":
        ctx.emit("Identity", [losses], ctx.out(node))
        return
    total = ctx.reduce("ReduceSum", losses, [0], False,
                       None if reduction == "mean" else ctx.out(node))
    if reduction == "mean":
        ctx.emit("Div", [total, ctx.reduce("ReduceSum", wt, [0], False)], ctx.out(node))
