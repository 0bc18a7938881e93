"""ONNX converters for prunus/ops/linalg.py: matmul (NumPy's rules are ONNX MatMul's) and linear
(x @ W.T + b as one Gemm with transB)."""

from __future__ import annotations

from prunus.onnx.converters._registry import converts
from prunus.ops import linalg as L


@converts(L.MatMul)
def convert_MatMul(ctx, node):
    ctx.emit("MatMul", [ctx.inp(node, 0), ctx.inp(node, 1)], ctx.out(node))


@converts(L.Linear)
def convert_Linear(ctx, node):
    # the op only ever sees a 2-D x (linear() folds leading dims around it), as Gemm needs
    ctx.emit("Gemm", [ctx.name(i) for i in node.inputs], ctx.out(node), transB=1)
