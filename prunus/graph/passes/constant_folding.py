"""Constant folding: a node that reads only constants (tensors made from Python values while
tracing) runs once, now, and its output becomes a constant; the node goes.

Never folded: STATE values are read live on every run (parameters, buffers, optimizer state), so
a node reading one is not constant; nodes that write in place or draw random numbers; nodes that
carry Refs or whose op a later node refers to; constants or results that something writes in
place (the folded array would change from run to run); and results that leave the graph (each run
must hand out a fresh array, as eager does).
"""

from __future__ import annotations

from prunus import autograd
from prunus.graph.ir import CONST, NODE
from prunus.graph.passes._rewrite import (
    external,
    is_random,
    mutated,
    referenced_nodes,
    remove_nodes,
)
from prunus.tensor import Tensor

_new = object.__new__


def _run_node(graph, n, device):
    """The node's forward, called exactly as the executor calls it (an op object with input
    Tensors, needs_input_grad and the grad mode it was traced in)."""
    arrays = [graph.values[i].tensor.data for i in n.inputs]
    op = _new(n.op)
    op.device = device
    ins = []
    for i, a in zip(n.inputs, arrays):
        t = Tensor._make(a, device, graph.values[i].requires_grad, None)
        ins.append(t)
    op.inputs = tuple(ins)
    op.needs_input_grad = n.needs_input_grad
    prev = autograd._state.grad_enabled
    autograd._state.grad_enabled = n.grad_enabled
    try:
        out = op.forward(*arrays, **n.attrs)
    finally:
        autograd._state.grad_enabled = prev
    if type(out) is not device.array_type:
        out = device.xp.asarray(out)
    return out


def constant_folding(graph) -> dict:
    """Fold constant nodes in place, in order (a chain of them folds whole); {"folded": n}."""
    written = mutated(graph)
    keep = external(graph) | written
    referenced = referenced_nodes(graph)
    folded = set()
    for n in graph.nodes:
        if n.mutates or n.has_refs or is_random(n) or n.index in referenced or n.output in keep:
            continue
        ins = [graph.values[i] for i in n.inputs]
        if not ins or any(v.kind != CONST or v.index in written for v in ins):
            continue
        device = getattr(ins[0].tensor, "device", None) or graph.device
        out = _run_node(graph, n, device)
        v = graph.values[n.output]
        if v.kind != NODE or tuple(out.shape) != v.shape or str(out.dtype) != v.dtype:
            continue  # not what tracing saw: leave it to run
        v.kind, v.node, v.tensor = CONST, None, Tensor._make(out, device, False, None)
        v.requires_grad = False
        folded.add(n.index)
    remove_nodes(graph, folded)
    return {"folded": len(folded)}
