"""The converter registry: each prunus op class maps to its `convert_<Op>` function (filled in by
the family modules through `@converts`), with what the converter needs to know about it.

A converter is called as `fn(ctx, node)` with the export context (converters/_context.py) and one
IR node; it emits ONNX nodes that write `ctx.out(node)`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple


class Converter(NamedTuple):
    fn: Callable
    # attributes that may differ between the captures made to trace dynamic axes: the converter
    # reads them in a way that works at any size (every other attribute must not change)
    varying: tuple = ()
    min_opset: int = 13


REGISTRY: dict = {}  # op class -> Converter

# -- control flow: reserved ---------------------------------------------------------------------
# prunus.cond / prunus.while_loop are becoming graph ops. Their converters belong here, in a
# family module converters/control.py mirroring the op module: convert_Cond -> ONNX If (both
# branches converted into subgraphs with this same registry) and convert_WhileLoop -> ONNX Loop.
# Until they exist, a node of those ops fails like any op without a converter, with this note.
RESERVED = {"Cond": "If", "WhileLoop": "Loop"}


def converts(*op_classes, varying: tuple = (), min_opset: int = 13):
    """Register the decorated `convert_<Op>` for each of `op_classes`."""

    def deco(fn):
        for cls in op_classes:
            REGISTRY[cls] = Converter(fn, tuple(varying), min_opset)
        return fn

    return deco
