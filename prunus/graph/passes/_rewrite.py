"""Helpers the passes share: walking and rewriting Refs, redirecting a value's uses, removing nodes
with consistent renumbering, and the facts about mutation and aliasing that decide what is safe.

Invariants every pass keeps: `graph.nodes[i].index == i`, `graph.values[i].index == i`, a NODE
value's `.node` is its producer, a SAVED value's `.node` the node whose op holds its array, and
Refs (also nested in tuples/lists of attrs) point at existing nodes and values.
"""

from __future__ import annotations

from prunus.errors import CaptureError
from prunus.graph.ir import INPUT, NODE, SAVED, Ref, iter_refs
from prunus.ops.dropout import Dropout

# -- Refs inside attrs -------------------------------------------------------------------------



def map_refs(a, fn):
    """`a` with every Ref r replaced by fn(r), keeping tuple/list types."""
    if isinstance(a, Ref):
        return fn(a)
    if type(a) in (tuple, list):
        return type(a)(map_refs(x, fn) for x in a)
    return a


def _rewrite_attrs(node, fn) -> None:
    if node.has_refs:
        node.attrs = {k: map_refs(a, fn) for k, a in node.attrs.items()}


def reads(node) -> list:
    """Every value a node reads: its inputs and the Ref(value=...) in its attrs."""
    out = list(node.inputs)
    if node.has_refs:
        out += [r.value for r in iter_refs(node.attrs) if r.value is not None]
    return out


# -- facts about a graph ---------------------------------------------------------------------


def external(graph) -> set:
    """Values that leave the graph: its outputs, the gradients it delivers, and for a
    differentiable call the gradients its backward returns."""
    out = set(graph.outputs) | {vi for _, vi in graph.grad_outputs}
    b = graph.backward
    if b is not None:
        out |= {vi for vi in b.grads if vi is not None} | set(b.outputs)
    return out


def is_random(node) -> bool:
    """Ops that draw random numbers: each run must draw anew, and in the order traced."""
    return issubclass(node.op, Dropout) or "generator" in node.attrs


def has_effects(node) -> bool:
    """A node that must run even if nobody reads its output: it writes an input in place, or it
    advances a random generator (dropping it would shift every later draw)."""
    return bool(node.mutates) or is_random(node)


def referenced_nodes(graph) -> set:
    """Nodes whose op object a later node needs: Ref(node=...) targets and SAVED values' nodes."""
    out = set()
    for n in graph.nodes:
        for r in iter_refs(n.attrs) if n.has_refs else ():
            if r.node is not None:
                out.add(r.node)
    for v in graph.values:
        if v.kind == SAVED:
            out.add(v.node)
    return out


def used_values(graph) -> set:
    """Values read by some node or leaving the graph."""
    used = external(graph)
    for n in graph.nodes:
        used.update(reads(n))
    return used


def mutated(graph) -> set:
    """Values whose array may be written in place at some point of a run.

    The written inputs of mutating nodes and those nodes' outputs (the same arrays), closed
    backwards: any op may return a view of what it reads, so the inputs of a written value's
    producer may be written too (and the op's saved arrays may be views of its inputs)."""
    out = set()
    for n in graph.nodes:
        if n.mutates:
            out.update(n.inputs[i] for i in n.mutates)
            out.add(n.output)
    nodes, values = graph.nodes, graph.values
    todo = list(out)
    while todo:
        v = values[todo.pop()]
        if v.kind not in (NODE, SAVED):
            continue
        n = nodes[v.node]
        if n.mutates and v.index == n.output:
            continue  # the output of an in-place node is its written inputs, already in
        for i in reads(n):
            if i not in out:
                out.add(i)
                todo.append(i)
    return out


def aliased(graph, written: set) -> set:
    """Values whose array may share memory with a written one: `written` closed forwards (any
    op's output, or its saved arrays, may be a view of what it reads)."""
    out = set(written)
    saved_of: dict = {}
    for v in graph.values:
        if v.kind == SAVED:
            saved_of.setdefault(v.node, []).append(v.index)
    for n in graph.nodes:
        if any(i in out for i in reads(n)):
            out.add(n.output)
            out.update(saved_of.get(n.index, ()))
    return out


def mutation_counts(graph) -> list:
    """counts[k]: how many nodes before node k write in place. A write lies strictly between
    nodes lo and hi when counts[hi] > counts[lo + 1]."""
    counts = [0]
    for n in graph.nodes:
        counts.append(counts[-1] + bool(n.mutates))
    return counts


def last_use(graph) -> dict:
    """value index -> the last node that reads it."""
    out = {}
    for n in graph.nodes:
        for i in reads(n):
            out[i] = n.index
    return out


# -- rewriting -------------------------------------------------------------------------------


def replace_uses(graph, mapping: dict) -> None:
    """Make every reader of value `old` read `mapping[old]` instead: node inputs, Ref(value=),
    graph outputs and delivered gradients."""
    if not mapping:
        return
    get = mapping.get

    def fn(r):
        return Ref(value=get(r.value, r.value)) if r.value is not None else r

    for n in graph.nodes:
        n.inputs = [get(i, i) for i in n.inputs]
        _rewrite_attrs(n, fn)
    graph.outputs = [get(i, i) for i in graph.outputs]
    graph.grad_outputs = [(p, get(i, i)) for p, i in graph.grad_outputs]
    b = graph.backward
    if b is not None:
        b.outputs = [get(i, i) for i in b.outputs]
        b.grad_inputs = [get(i, i) for i in b.grad_inputs]
        b.grads = [None if i is None else get(i, i) for i in b.grads]


def remove_nodes(graph, dead) -> int:
    """Remove the nodes in `dead` (indices), renumber the rest in order and drop the values no
    longer produced or read; returns how many nodes went. Callers make sure nothing still reads
    a removed node's output or refers to its op."""
    dead = set(dead)
    if not dead:
        return 0
    keep = [n for n in graph.nodes if n.index not in dead]
    new_index = {n.index: k for k, n in enumerate(keep)}

    def fn(r):
        return Ref(node=new_index[r.node], attr=r.attr) if r.node is not None else r

    for k, n in enumerate(keep):
        n.index = k
        _rewrite_attrs(n, fn)
    graph.nodes = keep
    # values of removed nodes first lose their producer, then compaction drops them
    for v in graph.values:
        if v.kind in (NODE, SAVED):
            v.node = new_index.get(v.node)
    compact_values(graph)
    return len(dead)


def compact_values(graph) -> int:
    """Drop values nothing produces or reads (inputs always stay: the executor finds arguments by
    them) and renumber the rest; returns how many went."""
    used = used_values(graph)
    for v in graph.values:
        if v.index in used and v.kind in (NODE, SAVED) and v.node is None:
            raise CaptureError(f"graph pass: value %{v.index} is still read but its node was removed")
    produced = {n.output for n in graph.nodes}
    keep = [v for v in graph.values
            if v.kind == INPUT or v.index in produced or (v.index in used and v.kind != NODE)]
    removed = len(graph.values) - len(keep)
    if not removed:
        return 0
    new = {v.index: k for k, v in enumerate(keep)}
    for k, v in enumerate(keep):
        v.index = k
    graph.values = keep
    replace_uses(graph, new)
    for n in graph.nodes:
        n.output = new[n.output]
    graph.inputs = [new[i] for i in graph.inputs]
    return removed
