"""ONNX converters for prunus/ops/indexing.py: x[index] (ints, slices, None, Ellipsis and one
integer-array or 1-D constant bool-mask index), gather, index_select, masked_fill.

x[index] becomes one Slice for the ints and slices, a Gather for the array, then Squeeze,
Transpose and Unsqueeze to put the dims in NumPy's order (an array index separated from an int by
a slice sends its dims to the front, as NumPy does).
"""

from __future__ import annotations

import numpy as np

from prunus.graph.ir import Ref
from prunus.onnx.converters._context import INT64_MAX, INT64_MIN
from prunus.onnx.converters._registry import converts
from prunus.ops import indexing as I


def _consumed(ctx, item) -> int:
    """How many input dims an index item uses: a k-D bool mask uses k, None and ... none."""
    if item is None or item is Ellipsis:
        return 0
    if isinstance(item, Ref) and item.value is not None:
        v = ctx.graph.values[item.value]
        return len(v.shape) if ctx.np_dtype(item.value) == np.bool_ else 1
    if hasattr(item, "dtype") and item.dtype == np.bool_:
        return item.ndim
    return 1


def _expand_ellipsis(ctx, index, ndim):
    used = sum(_consumed(ctx, i) for i in index)
    out = []
    for item in index:
        if item is Ellipsis:
            out.extend([slice(None)] * (ndim - used))
        else:
            out.append(item)
    return out


def _slice_bounds(ctx, s: slice):
    for part in (s.start, s.stop, s.step):
        if part is not None and not isinstance(part, (int, np.integer)):
            raise ctx.fail(f"a slice bound is a {type(part).__name__}, not an int; ONNX export "
                           "needs ints there")
    step = 1 if s.step is None else int(s.step)
    start = (0 if step > 0 else INT64_MAX) if s.start is None else int(s.start)
    stop = (INT64_MAX if step > 0 else INT64_MIN) if s.stop is None else int(s.stop)
    return start, stop, step


def _array_index(ctx, item):
    """(ONNX name, ndim) of an array index; a 1-D constant mask becomes its positions."""
    if isinstance(item, Ref):
        if item.value is None:
            raise ctx.fail("the index refers to an op's saved array; export a forward computation")
        v = ctx.graph.values[item.value]
        if ctx.np_dtype(item.value) == np.bool_:
            if v.tensor is None:
                raise ctx.fail(
                    f"indexing with a bool mask {v.dtype} {v.shape} known only at run time gives "
                    "a data-dependent shape; use where() or masked_fill instead"
                )
            item = ctx.to_numpy(v.tensor.data)  # a constant mask: its positions are fixed
        else:
            return ctx.name(item.value), len(v.shape)
    arr = ctx.to_numpy(item)
    if arr.dtype == np.bool_:
        if arr.ndim != 1:
            raise ctx.fail(f"a bool mask index of shape {arr.shape} is supported only 1-D")
        arr = np.nonzero(arr)[0]
    return ctx.const(arr.astype(np.int64), "index"), arr.ndim


@converts(I.Index)
def convert_Index(ctx, node):
    x = ctx.inp(node, 0)
    ndim = len(ctx.shape(node.inputs[0]))
    items = _expand_ellipsis(ctx, node.attrs["index"], ndim)
    starts, ends, axes, steps = [], [], [], []
    int_dims, advanced, target = [], [], []
    array = None  # (input dim, name, ndim)
    d = 0
    for pos, item in enumerate(items):
        if item is None:
            target.append(("new", pos))
        elif isinstance(item, (int, np.integer)):
            i = int(item)
            starts.append(i), ends.append(i + 1 if i != -1 else INT64_MAX), axes.append(d)
            steps.append(1), int_dims.append(d), advanced.append(pos)
            d += 1
        elif isinstance(item, slice):
            start, stop, step = _slice_bounds(ctx, item)
            if (start, stop, step) != (0, INT64_MAX, 1):
                starts.append(start), ends.append(stop), axes.append(d), steps.append(step)
            target.append(("in", d))
            d += 1
        else:
            if array is not None:
                raise ctx.fail("ONNX export supports one integer-array (or mask) index per "
                               "indexing; index in two steps")
            name, k = _array_index(ctx, item)
            array = (d, name, k)
            target.extend(("arr", j) for j in range(k))
            advanced.append(pos)
            d += 1
    target.extend(("in", j) for j in range(d, ndim))
    y = x
    if axes:
        bounds = [ctx.ints(starts), ctx.ints(ends), ctx.ints(axes), ctx.ints(steps)]
        y = ctx.emit("Slice", [y, *bounds])
    labels = [("in", j) for j in range(ndim)]
    if array is not None:
        ad, name, k = array
        y = ctx.emit("Gather", [y, name], axis=ad)
        labels = labels[:ad] + [("arr", j) for j in range(k)] + labels[ad + 1:]
        if advanced != list(range(advanced[0], advanced[-1] + 1)):  # NumPy: array dims go first
            arr = [t for t in target if t[0] == "arr"]
            target = arr + [t for t in target if t[0] != "arr"]
    if int_dims:
        y = ctx.squeeze(y, [labels.index(("in", j)) for j in int_dims])
        labels = [t for t in labels if not (t[0] == "in" and t[1] in int_dims)]
    kept = [t for t in target if t[0] != "new"]
    if labels != kept:
        y = ctx.emit("Transpose", [y], perm=[labels.index(t) for t in kept])
    new = [i for i, t in enumerate(target) if t[0] == "new"]
    if len(target) != len(ctx.shape(node.output)):
        raise ctx.fail(f"internal: index {node.attrs['index']!r} gives {len(target)} dims, the op "
                       f"{len(ctx.shape(node.output))}")
    if new:
        ctx.unsqueeze(y, new, ctx.out(node))
    else:
        ctx.emit("Identity", [y], ctx.out(node))


@converts(I.Gather)
def convert_Gather(ctx, node):
    a, index, dim = node.inputs[0], node.inputs[1], int(node.attrs["dim"])
    x = ctx.inp(node, 0)
    sa, si = ctx.sig(a), ctx.sig(index)
    cut = [j for j in range(len(sa)) if j != dim and sa[j] != si[j]]
    if cut:  # gather allows an index smaller than the input outside `dim`: slice it to size
        shape = ctx.static_shape(index, "gather's index shape, smaller than its input,")
        x = ctx.emit("Slice", [x, ctx.ints([0] * len(cut)), ctx.ints([shape[j] for j in cut]),
                               ctx.ints(cut)])
    ctx.emit("GatherElements", [x, ctx.inp(node, 1)], ctx.out(node), axis=dim)


@converts(I.IndexSelect)
def convert_IndexSelect(ctx, node):
    ctx.emit("Gather", [ctx.inp(node, 0), ctx.inp(node, 1)], ctx.out(node),
             axis=int(node.attrs["dim"]))


@converts(I.MaskedFill)
def convert_MaskedFill(ctx, node):
    value = ctx.scalar(node.attrs["value"], ctx.np_dtype(node.inputs[0]))
    ctx.emit("Where", [ctx.inp(node, 1), value, ctx.inp(node, 0)], ctx.out(node))
