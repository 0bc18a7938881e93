"""What the passes did: node counts and the executor's peak memory before and after each one.

`peak_bytes` replays the executor's memory plan without running anything: a node's output and
the arrays its op saves for later nodes (NODE and SAVED values) appear when the node runs and go
after their last reader, except outputs and delivered gradients, which stay to the end, and
results nobody reads, which the executor also keeps to the end. Bytes are prod(shape) * itemsize;
a view counts as a new array (an upper bound), an in-place node's output as nothing (it is its
input's array), and a node that memory planning runs over an input's buffer (Node.inplace) as
that buffer passed on. Inputs, state, gradients read live and constants live outside the plan: they are
in `resident_bytes`, not in the peak.
"""

from __future__ import annotations

import math

import numpy as np

from prunus import dtypes
from prunus.errors import ArgumentError
from prunus.graph.ir import NODE, SAVED
from prunus.graph.passes._rewrite import external, reads


def _itemsize(name: str) -> int:
    try:
        return np.dtype(name).itemsize
    except TypeError:  # bfloat16 is known to prunus (via ml_dtypes) by name, not to NumPy
        return dtypes.as_dtype(name).itemsize


def value_bytes(v) -> int:
    return math.prod(v.shape) * _itemsize(v.dtype)


def peak_bytes(graph) -> int:
    """The most bytes of NODE and SAVED arrays alive at once while the executor runs `graph`."""
    keep = external(graph)
    last: dict = {}
    for n in graph.nodes:
        for i in reads(n):
            last[i] = n.index
    made: dict = {}  # node -> the values it brings to life
    for v in graph.values:
        if v.kind in (NODE, SAVED) and v.node is not None:
            made.setdefault(v.node, []).append(v)
    drops: dict = {}
    for vi, k in last.items():
        if vi not in keep and graph.values[vi].kind in (NODE, SAVED):
            drops.setdefault(k, []).append(vi)
    size = {}
    live = peak = 0
    for n in graph.nodes:
        over = getattr(n, "inplace", None)  # memory planning: the result takes an input's buffer
        for v in made.get(n.index, ()):
            if v.kind == NODE and over is not None:
                size[v.index] = size.get(n.inputs[over], 0)
                size[n.inputs[over]] = 0
                continue
            size[v.index] = 0 if v.kind == NODE and n.mutates else value_bytes(v)
            live += size[v.index]
        peak = max(peak, live)
        for vi in drops.get(n.index, ()):
            live -= size.get(vi, 0)
    return peak


def resident_bytes(graph) -> dict:
    """Bytes of the arrays that live outside the executor's plan, by value kind (input, state,
    grad, const)."""
    out: dict = {}
    for v in graph.values:
        if v.kind not in (NODE, SAVED):
            out[v.kind] = out.get(v.kind, 0) + value_bytes(v)
    return out


def run_with_report(graph, names) -> list:
    """Run the named passes in order on `graph` (in place); one row per pass: its name, nodes and
    peak bytes before and after, and the pass's own report."""
    from prunus.graph.passes import PASSES

    try:
        names = None if isinstance(names, str) else list(names)
    except TypeError:
        names = None
    if names is None or not all(isinstance(n, str) for n in names):
        raise ArgumentError(f"passes: expected a list of pass names, got {names!r}")
    unknown = [n for n in names if n not in PASSES]
    if unknown:
        raise ArgumentError(f"passes: unknown pass {unknown[0]!r}; the passes are {', '.join(PASSES)}")
    if "memory" in names and names[-1] != "memory":
        raise ArgumentError(
            f"passes: 'memory' must come last in {names}: it plans buffers for the final graph, "
            "and a later rewrite could make a buffer it reuses live again"
        )
    rows = []
    for name in names:
        nodes, peak = len(graph.nodes), peak_bytes(graph)
        report = PASSES[name](graph)
        rows.append({
            "pass": name, "nodes_before": nodes, "nodes_after": len(graph.nodes),
            "peak_bytes_before": peak, "peak_bytes_after": peak_bytes(graph), "report": report,
        })
    return rows


def format_report(rows) -> str:
    """The rows of `run_with_report` as a text table."""
    lines = [f"{'pass':<18}{'nodes':>14}{'peak bytes':>26}  report"]
    for r in rows:
        detail = ", ".join(f"{k}={v}" for k, v in r["report"].items())
        lines.append(
            f"{r['pass']:<18}{r['nodes_before']:>6} -> {r['nodes_after']:<6}"
            f"{r['peak_bytes_before']:>12} -> {r['peak_bytes_after']:<12}  {detail}"
        )
    return "\n".join(lines)
