"""Memory planning: run an elementwise node in place, over an input that dies at it.

The executor already drops every array after its last use (executor.py), so peak memory follows
liveness. This pass reuses buffers on top of that: a node whose op has `forward_into` (Add, Sub,
Mul, Div, Exp, Log, Tanh, ReLU, ReLUGrad) writes its result over an input when that input is
 - the fresh result of an op known to allocate its output (not a view, not an in-place result,
   not an input, parameter or constant),
 - of the result's shape and dtype (and every input has that dtype, so the arithmetic is the same),
 - read by nothing after this node (no node, no output, no gradient, no attribute reference), and
 - read before it only by ops known neither to return views of it nor to keep it.
Results are bit-identical: the same ufunc runs with `out=`.
"""

from __future__ import annotations

from prunus.graph.ir import NODE, iter_refs
from prunus.graph.passes._rewrite import external


def _op_names(*names):
    return frozenset(names)


# ops whose forward returns a freshly allocated array (never a view of an input or the input itself)
FRESH = _op_names(
    "Linear", "MatMul", "Add", "Sub", "Mul", "Div", "Exp", "Log", "Tanh", "ReLU", "ReLUGrad",
    "Conv2d", "Conv2dBackwardInput", "Conv2dBackwardWeight", "MaxPool2d", "MaxPool2dScatter",
    "CrossEntropyBackward", "Sigmoid", "Neg",
)
# ops that may read a value without returning a view of it or keeping it on the op
READS_ONLY = FRESH | _op_names("Sum", "Mean", "SumTo", "CrossEntropy", "ConvBiasGrad", "SGDUpdate",
                                   "AdamUpdate")


def plan_inplace(graph) -> dict:
    """Mark nodes to run in place (Node.inplace); the report counts them and the bytes saved."""
    g = graph
    last_use: dict = {}
    readers: dict = {}
    ref_value_after: dict = {}
    ref_node_last: dict = {}
    for n in g.nodes:
        for i in n.inputs:
            last_use[i] = n.index
            readers.setdefault(i, []).append(n)
        if n.has_refs:
            for r in iter_refs(n.attrs):
                if r.value is not None:
                    ref_value_after[r.value] = n.index
                else:
                    ref_node_last[r.node] = max(ref_node_last.get(r.node, -1), n.index)
    keep = external(g)
    mutated = {n.inputs[k] for n in g.nodes for k in n.mutates}
    count, saved_bytes = 0, 0
    for n in g.nodes:
        n.inplace = None
        if not hasattr(n.op, "forward_into") or n.mutates or n.has_refs:
            continue
        out = g.values[n.output]
        if any(g.values[i].dtype != out.dtype for i in n.inputs):
            continue
        for k, vi in enumerate(n.inputs):
            v = g.values[vi]
            if v.kind != NODE or vi in keep or vi in mutated or n.inputs.count(vi) > 1:
                continue
            if v.shape != out.shape or last_use.get(vi) != n.index or ref_value_after.get(vi, -1) >= n.index:
                continue
            producer = g.nodes[v.node]
            if producer.name not in FRESH or ref_node_last.get(producer.index, -1) > n.index:
                continue
            if any(r is not n and r.name not in READS_ONLY for r in readers[vi]):
                continue
            n.inplace = k
            count += 1
            size = 1
            for d in out.shape:
                size *= d
            saved_bytes += size * _itemsize(out.dtype)
            break
    return {"inplace_nodes": count, "bytes_reused_per_run": saved_bytes}


def _itemsize(dtype: str) -> int:
    import numpy as np

    try:
        return np.dtype(dtype).itemsize
    except TypeError:  # bfloat16 and friends: ml_dtypes names
        return 2
