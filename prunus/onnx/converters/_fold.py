"""Export-time constant folding: nodes that read only parameters, buffers and constants (in an
exported inference graph they never change) are run once with their own prunus op and become
initializers, so BatchNorm's reshapes and rsqrt of its running statistics, or a transposed
weight, are not recomputed by every ONNX run. Nothing here computes an op's math itself.
"""

from __future__ import annotations

import numpy as np

from prunus import autograd
from prunus.graph.ir import CONST, STATE
from prunus.onnx.converters._context import same_in_captures

_NEVER = {"Dropout"}  # draws a fresh mask on every run
_GROWTH = 4096  # a result with more elements than this and than its inputs stays an op (Expand)


def fold_constants(graph, variants, sigs, to_numpy, state_names) -> dict:
    """value index -> (Tensor, name hint) for every node output that can be computed now."""
    ok = {v.index for v in graph.values
          if v.kind in (STATE, CONST) and same_in_captures(v, variants, to_numpy)}
    folded: dict = {}
    for node in graph.nodes:
        if (node.mutates or node.has_refs or node.name in _NEVER
                or not all(i in ok or i in folded for i in node.inputs)
                or any(len(set(s)) > 1 for s in sigs[node.output])):
            continue
        ins = [folded[i][0] if i in folded else graph.values[i].tensor for i in node.inputs]
        out = graph.values[node.output]
        if int(np.prod(out.shape)) > max(_GROWTH, *(int(np.prod(t.shape)) for t in ins)):
            continue
        t = _run(node, ins)
        if t is None:
            continue
        first = node.inputs[0]
        base = folded[first][1] if first in folded else (
            state_names.get(id(graph.values[first].tensor)) or f"const_{first}")
        folded[node.output] = (t, f"{base}_{node.name.lower()}")
    return folded


def _run(node, ins):
    """The node's op on constant tensors, or None when it can't run here (its converter, or the
    lack of one, then says what is wrong)."""
    try:
        with autograd.no_grad():
            return node.op.apply(*ins, **node.attrs)
    except Exception:  # noqa: BLE001
        return None
