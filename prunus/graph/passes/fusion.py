"""Fusion: the ReLU after a matrix product or convolution runs in that op's buffer.

The ops are already fused where eager measured it worth it (Linear = matmul + bias-add, ReLUGrad =
the ReLU mask times the gradient, SGDUpdate = the whole optimizer update, CrossEntropy with its
softmax). What a graph adds is knowing the future: ReLU's backward, ReLUGrad(g, x), keeps the
pre-activation x alive only to read the mask x > 0, which equals relu(x) > 0 (NaN included: both
are false). Rewiring ReLUGrad to read the ReLU's output lets x die at the ReLU, so memory planning
(memory.py) runs the ReLU in place over the Linear/Conv output: bias-add + ReLU in one buffer, and
one activation-sized array less alive through the backward pass. Results are bit-identical.
"""

from __future__ import annotations

from prunus.graph.ir import NODE


def fuse_relu(graph) -> dict:
    g = graph
    mutated = {n.inputs[k] for n in g.nodes for k in n.mutates}
    relu_of: dict = {}  # pre-activation value -> the ReLU output value
    for n in g.nodes:
        if n.name == "ReLU" and g.values[n.inputs[0]].kind == NODE and n.output not in mutated:
            relu_of.setdefault(n.inputs[0], (n.index, n.output))
    rewired = 0
    for n in g.nodes:
        if n.name != "ReLUGrad":
            continue
        x = n.inputs[1]
        hit = relu_of.get(x)
        if hit is None or hit[0] >= n.index:  # the ReLU must run before the gradient reads it
            continue
        if g.values[hit[1]].dtype != g.values[x].dtype or g.values[hit[1]].shape != g.values[x].shape:
            continue
        n.inputs[1] = hit[1]
        rewired += 1
    return {"relu_masks_rewired": rewired}
