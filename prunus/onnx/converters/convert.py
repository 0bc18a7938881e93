"""ONNX converters for prunus/ops/convert.py: dtype casts, and moves between devices (which an
ONNX graph, on one device, doesn't have)."""

from __future__ import annotations

from prunus.onnx.converters._registry import converts
from prunus.ops import convert as C


@converts(C.Cast)
def convert_Cast(ctx, node):
    ctx.cast(ctx.inp(node, 0), node.attrs["dtype"].np, ctx.out(node))


@converts(C.ToDevice)
def convert_ToDevice(ctx, node):
    ctx.emit("Identity", [ctx.inp(node, 0)], ctx.out(node))
