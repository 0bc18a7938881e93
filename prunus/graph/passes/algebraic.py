"""Algebraic simplification, only where the result is bit for bit the same:

- x * 1, 1 * x, x / 1 (float and integer x): IEEE multiplication and division by one are exact;
- where(c, a, b) with a constant c that is all True (a) or all False (b);
- x - 0 and x + 0 for integers; for floats x - (+0.0) and x + (-0.0) only, since -0.0 + 0.0 is
  +0.0 (and 1/x would tell the two zeros apart);
- Permute(Permute(x)) as one Permute of x, or x itself when the two cancel; Permute by the
  identity; Reshape(Reshape(x)) as one Reshape of x; Reshape to x's own shape.

The constant must be a CONST (never STATE: a parameter can change between runs), and the node's
output must have x's shape and dtype (a constant that broadcasts x up, or promotes it, stays).
A node whose result is then x itself goes, its readers reading x. Nothing that writes in place,
is written in place, or leaves the graph is touched, nor anything read across an in-place write
that x might alias.
"""

from __future__ import annotations

import numpy as np

from prunus.graph.ir import CONST, NODE
from prunus.graph.passes._rewrite import (
    aliased,
    external,
    last_use,
    mutated,
    mutation_counts,
    referenced_nodes,
    remove_nodes,
    replace_uses,
    used_values,
)
from prunus.ops.elementwise import Add, Div, Mul, Neg, Pow, Sub, Where
from prunus.ops.linalg import MatMul
from prunus.ops.movement import Permute, Reshape


def _const_array(graph, vi):
    v = graph.values[vi]
    if v.kind != CONST or v.tensor is None:
        return None
    a = v.tensor.data
    return np.asarray(a.get() if hasattr(a, "get") else a)  # a CuPy constant: read it on the host


def _all(a, value: float, neg_zero=None) -> bool:
    """Every element equals `value` (for a float zero, also with the given sign)."""
    if a is None or a.dtype.kind not in "fiu" or not (a == value).all():
        return False
    if neg_zero is None or a.dtype.kind != "f":
        return True
    return bool((np.signbit(a) == neg_zero).all())


def _picked_by_where(graph, n):
    """Where(cond, a, b) with a constant cond that is all True (a) or all False (b)."""
    cond = _const_array(graph, n.inputs[0])
    if cond is None or cond.dtype.kind != "b" or cond.size == 0:
        return None
    x = n.inputs[1] if cond.all() else n.inputs[2] if not cond.any() else None
    out = graph.values[n.output]
    if x is not None and graph.values[x].shape == out.shape and graph.values[x].dtype == out.dtype:
        return x
    return None


def _identity_operand(graph, n):
    """The input x when node n computes exactly x (as arithmetic with a constant, or a Where
    with a constant condition), else None."""
    if n.op is Where and len(n.inputs) == 3:
        return _picked_by_where(graph, n)
    if n.op not in (Mul, Add, Sub, Div) or len(n.inputs) != 2:
        return None
    a, b = n.inputs
    out = graph.values[n.output]
    choices = []
    if n.op is Mul:
        choices = [(a, b, 1.0, None), (b, a, 1.0, None)]
    elif n.op is Div:
        choices = [(a, b, 1.0, None)]
    elif n.op is Add:
        choices = [(a, b, 0.0, True), (b, a, 0.0, True)]
    elif n.op is Sub:
        choices = [(a, b, 0.0, False)]
    for x, c, value, neg_zero in choices:
        xv = graph.values[x]
        if xv.shape == out.shape and xv.dtype == out.dtype and xv.dtype[0] in "fiu" \
                and _all(_const_array(graph, c), value, neg_zero):
            return x
    return None


# ops whose forward always returns a new array (never a view of an input)
_FRESH = (Add, Sub, Mul, Div, Pow, Neg, Where, MatMul)


def _fresh(graph, vi) -> bool:
    v = graph.values[vi]
    return v.kind == NODE and graph.nodes[v.node].op in _FRESH


def _producer(graph, vi, op):
    v = graph.values[vi]
    if v.kind == NODE and graph.nodes[v.node].op is op:
        return graph.nodes[v.node]
    return None


def algebraic(graph) -> dict:
    """Simplify in place; {"removed": nodes replaced by their input, "collapsed": chains made
    one node}."""
    written = mutated(graph)
    time_varying = aliased(graph, written)  # may share memory with something written in place
    counts = mutation_counts(graph)
    last = last_use(graph)
    out_values = external(graph)
    referenced = referenced_nodes(graph)

    def untouchable(n) -> bool:
        return bool(n.mutates or n.has_refs or n.index in referenced or n.output in written)

    def steady(x, lo, hi) -> bool:
        """Reading x anywhere in nodes lo..hi gives what reading it at node lo gave."""
        return x not in written and (x not in time_varying or counts[hi + 1] == counts[lo + 1])

    def may_become(n, x) -> bool:
        """n's readers may read x instead of n's result."""
        if not steady(x, n.index, max(last.get(n.output, n.index), n.index)):
            return False
        if graph.values[x].requires_grad != graph.values[n.output].requires_grad:
            return False  # a reader's forward may look at it (Conv2d keeps columns by it)
        # a result that leaves the graph must stay an array of its own, as eager's is
        return n.output not in out_values or (
            x not in out_values and x not in time_varying and _fresh(graph, x))

    alias: dict = {}
    removed, collapsed, maybe_dead = set(), 0, set()
    for n in graph.nodes:
        n.inputs = [alias.get(i, i) for i in n.inputs]
        if untouchable(n):
            continue
        x = _identity_operand(graph, n)
        if x is None and n.op is Reshape and graph.values[n.inputs[0]].shape == graph.values[n.output].shape:
            x = n.inputs[0]
        if x is None and n.op is Permute and tuple(n.attrs["dims"]) == tuple(range(len(n.attrs["dims"]))):
            x = n.inputs[0]
        if x is not None:
            if may_become(n, x):
                alias[n.output] = x
                removed.add(n.index)
                if n.output in out_values:
                    out_values.add(x)  # now leaves the graph: no second result may become it
            continue
        if n.output in out_values:  # a collapsed chain might alias what eager's result did not
            continue
        end = max(last.get(n.output, n.index), n.index)
        inner = _producer(graph, n.inputs[0], n.op) if n.op in (Reshape, Permute) else None
        if inner is None or inner.mutates or inner.has_refs or inner.index in removed:
            continue
        x = inner.inputs[0]
        if not steady(x, inner.index, end) or inner.output in written:
            continue
        if n.op is Permute:  # x's axis d1[d2[j]] ends up as axis j
            d1, d2 = inner.attrs["dims"], n.attrs["dims"]
            n.attrs = {**n.attrs, "dims": tuple(d1[j] for j in d2)}
        maybe_dead.add(inner.index)
        n.inputs = [x]
        collapsed += 1
        if graph.values[x].shape == graph.values[n.output].shape and (
            n.op is Reshape or n.attrs["dims"] == tuple(range(len(n.attrs["dims"])))
        ) and may_become(n, x):
            alias[n.output] = x  # the pair cancels: the node is x itself
            removed.add(n.index)
    replace_uses(graph, alias)
    used = used_values(graph)
    dead = removed | {k for k in maybe_dead
                      if graph.nodes[k].output not in used and k not in referenced and k not in removed}
    remove_nodes(graph, dead)
    return {"removed": len(removed), "collapsed": collapsed}
