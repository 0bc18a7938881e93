"""Dead-code elimination: drop the nodes whose results nobody needs.

A node stays when its output leaves the graph (an output or a delivered gradient), when a node
that stays reads its output or one of its saved arrays, or refers to its op, and always when it
has effects of its own: it writes an input in place, or it draws random numbers (dropping a
Dropout would shift every later draw of its generator).
"""

from __future__ import annotations

from prunus.graph.ir import SAVED, iter_refs
from prunus.graph.passes._rewrite import external, has_effects, reads, remove_nodes


def dead_nodes(graph) -> set:
    """Indices of the nodes nothing needs. Nodes only refer backwards, so one sweep from the end
    reaches the fixed point: when a node is judged, every node that could need it is settled."""
    needed_values = external(graph)
    needed_nodes: set = set()
    saved_by: dict = {}
    for v in graph.values:
        if v.kind == SAVED:
            saved_by.setdefault(v.node, []).append(v.index)
    dead = set()
    for n in reversed(graph.nodes):
        live = (
            has_effects(n)
            or n.output in needed_values
            or n.index in needed_nodes
            or any(s in needed_values for s in saved_by.get(n.index, ()))
        )
        if not live:
            dead.add(n.index)
            continue
        needed_values.update(reads(n))
        if n.has_refs:
            needed_nodes.update(r.node for r in iter_refs(n.attrs) if r.node is not None)
    return dead


def dce(graph) -> dict:
    """Remove dead nodes in place (repeating until nothing more goes); {"removed": n}."""
    removed = 0
    while True:
        dead = dead_nodes(graph)
        if not dead:
            return {"removed": removed}
        removed += remove_nodes(graph, dead)
