"""Optimization passes over a captured Graph, one per file; `run_passes` applies them in order.

Each pass takes a Graph, rewrites it in place and returns a short report (what it changed).
"""

from __future__ import annotations

PASSES: dict = {}  # name -> function(graph) -> report dict
DEFAULT: tuple = ()


def run_passes(graph, names=None) -> list:
    """Run the named passes (None: DEFAULT) on graph; the list of (name, report)."""
    reports = []
    for name in DEFAULT if names is None else names:
        reports.append((name, PASSES[name](graph)))
    graph.pass_reports = reports
    return reports
