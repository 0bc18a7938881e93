"""Common-subexpression elimination: a node that repeats an earlier one (same op, same inputs,
same attributes, same grad mode) is dropped and its readers read the earlier result.

Equal small constants become one value first (each `2.0` in `x * 2.0` is a constant of its own).
Only where the earlier result is provably what the later node would compute, and stays so:
never nodes that write in place or draw random numbers, nodes carrying Refs, pairs with an
in-place write between them (what both read, or a view of it, could change in between: a
parameter before and after the optimizer step), or nodes whose output or saved arrays are written
later (the merged readers would see each other's writes).
"""

from __future__ import annotations

import struct

import numpy as np

from prunus.graph.ir import CONST, SAVED, Ref
from prunus.graph.passes._rewrite import (
    compact_values,
    external,
    is_random,
    map_refs,
    mutated,
    mutation_counts,
    remove_nodes,
    replace_uses,
)


def same_attr(a, b) -> bool:
    """Attributes equal in every way an op could tell: type, and value down to a float's sign
    of zero and an array's bytes; anything unknown only by identity."""
    if a is b:
        return True
    if type(a) is not type(b):
        return False
    if isinstance(a, Ref):
        return a == b
    if type(a) in (tuple, list):
        return len(a) == len(b) and all(same_attr(x, y) for x, y in zip(a, b))
    if type(a) is dict:
        return a.keys() == b.keys() and all(same_attr(a[k], b[k]) for k in a)
    if type(a) is float:
        return struct.pack("<d", a) == struct.pack("<d", b)  # bits: 0.0 is not -0.0
    if type(a) is slice:
        return all(same_attr(x, y) for x, y in ((a.start, b.start), (a.stop, b.stop), (a.step, b.step)))
    if a is None or type(a) in (int, bool, str, bytes, type(Ellipsis)):
        return a == b
    if hasattr(a, "dtype") and hasattr(a, "shape") and hasattr(a, "tobytes"):  # arrays, NumPy scalars
        return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()
    if type(a).__eq__ is object.__eq__:  # no value equality of its own: identity decided above
        return False
    try:  # dtypes, devices and other value-like objects with their own equality
        return bool(a == b)
    except (TypeError, ValueError):
        return False


_SMALL = 4096  # constants up to this many elements are compared by value


def _same_constants(graph, written: set, out_values: set) -> dict:
    """Equal constants (dtype, shape, bytes) as one value: each `2.0` of `x * 2.0` is a constant
    of its own, so without this no two such products would look the same."""
    seen: dict = {}
    alias: dict = {}
    for v in graph.values:
        if v.kind != CONST or v.tensor is None or v.index in written or v.index in out_values:
            continue
        a = v.tensor.data
        if a.size > _SMALL:
            continue
        host = np.asarray(a.get() if hasattr(a, "get") else a)  # CuPy: compare on the host
        first = seen.setdefault((v.dtype, v.shape, host.tobytes()), v.index)
        if first != v.index:
            alias[v.index] = first
    return alias


def _candidate(n, written: set) -> bool:
    # reading a value that is written in place somewhere is fine: a pair is merged only when no
    # in-place write happens between the two (mutation_counts below), so both read the same data
    return not (n.mutates or n.has_refs or is_random(n))


def cse(graph) -> dict:
    """Merge repeated nodes in place; {"merged": n}."""
    written = mutated(graph)
    counts = mutation_counts(graph)
    out_values = external(graph)
    saved_of: dict = {}
    for v in graph.values:
        if v.kind == SAVED:
            saved_of.setdefault(v.node, []).append(v)
    consts = _same_constants(graph, written, out_values)
    replace_uses(graph, consts)
    seen: dict = {}  # (op, inputs, modes, attr names) -> earlier nodes
    alias: dict = {}  # value of a dropped node -> the earlier node's value
    node_alias: dict = {}  # dropped node -> the earlier node
    for n in graph.nodes:
        n.inputs = [alias.get(i, i) for i in n.inputs]  # merges upstream make more repeats
        if not _candidate(n, written):
            continue
        if n.output in written or any(s.index in written for s in saved_of.get(n.index, ())):
            continue
        key = (n.op, tuple(n.inputs), n.grad_enabled, tuple(n.needs_input_grad), tuple(n.attrs))
        for first in seen.get(key, ()):
            if counts[n.index] > counts[first.index + 1]:
                continue
            if n.output in out_values and first.output in out_values:
                continue  # two results handed out must stay two arrays, as in eager
            if all(same_attr(first.attrs[k], n.attrs[k]) for k in n.attrs):
                if n.output in out_values:
                    out_values.add(first.output)
                alias[n.output] = first.output
                node_alias[n.index] = first.index
                break
        else:
            seen.setdefault(key, []).append(n)
    replace_uses(graph, alias)
    _redirect_op_refs(graph, node_alias)
    remove_nodes(graph, node_alias)
    compact_values(graph)  # the constants merged away
    return {"merged": len(node_alias), "constants_merged": len(consts)}


def _redirect_op_refs(graph, node_alias: dict) -> None:
    """Readers of a dropped node's op (its saved arrays) read the earlier node's op: the same
    forward on the same arrays in the same mode left the same attributes on it."""
    def fn(r):
        return Ref(node=node_alias[r.node], attr=r.attr) if r.node in node_alias else r

    for n in graph.nodes:
        if n.has_refs:
            n.attrs = {k: map_refs(a, fn) for k, a in n.attrs.items()}
    for v in graph.values:
        if v.kind == SAVED and v.node in node_alias:
            v.node = node_alias[v.node]
