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

# Ops reserved for a converter still to come (op name -> the ONNX op it will become): a node of
# one fails like any op without a converter, with this note. Control flow (Cond -> If, WhileLoop
# -> Loop) has landed in converters/control_flow.py; none are reserved now.
RESERVED: dict = {}

# Ops that will not export, with why (an inference graph never holds them).
REFUSED = {
    "WhileLoopGrad": "it is the backward of a prunus.while_loop (a training graph); export runs "
                     "the model in eval mode under no_grad, so export a forward computation",
}


def converts(*op_classes, varying: tuple = (), min_opset: int = 13):
    """Register the decorated `convert_<Op>` for each of `op_classes`."""

    def deco(fn):
        for cls in op_classes:
            REGISTRY[cls] = Converter(fn, tuple(varying), min_opset)
        return fn

    return deco
