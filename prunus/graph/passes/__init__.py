"""Optimization passes over a captured Graph, one per file; `run_passes` applies them in order.

Each pass takes a Graph, rewrites it in place so that running it gives bit for bit what eager
gives, and returns a short report (what it changed). `PASSES` maps names to passes; `DEFAULT` is
the order `prunus.compile` runs them in: folding makes constants the algebraic rules can see,
both leave repeats for CSE to merge, fusion lets ReLU pre-activations die early, DCE sweeps what
the others left unread. Memory planning runs last (it is in DEFAULT): it plans buffers for the
final graph, and any rewrite after it could make a buffer it reuses live again. Shared rewriting
helpers are in _rewrite.py, the before/after report in report.py.
"""

from __future__ import annotations

from prunus.graph.passes import algebraic, constant_folding, cse, dce, fusion, memory
from prunus.graph.passes.report import format_report, peak_bytes, run_with_report

# name -> function(graph) -> report dict (the modules keep their names: each holds one pass)
PASSES: dict = {
    "constant_folding": constant_folding.constant_folding,
    "algebraic": algebraic.algebraic,
    "cse": cse.cse,
    "dce": dce.dce,
    "fusion": fusion.fuse_relu,
    "memory": memory.plan_inplace,
}
# "memory" marks nodes to run in place, so it runs last (after anything that rewrites nodes)
DEFAULT: tuple = ("constant_folding", "algebraic", "cse", "fusion", "dce", "memory")


def run_passes(graph, names=None) -> list:
    """Run the named passes (None: DEFAULT; [] none) on graph; the rows of `run_with_report`,
    also kept as graph.pass_reports."""
    rows = run_with_report(graph, DEFAULT if names is None else names)
    graph.pass_reports = rows
    return rows


__all__ = ["DEFAULT", "PASSES", "format_report", "peak_bytes", "run_passes", "run_with_report"]
