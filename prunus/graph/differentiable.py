"""A compiled call whose result stays differentiable: one run of a graph as one autograd op.

When a compiled function (typically a compiled Module in an eager training loop) returns a tensor
with autograd history, its trace records the backward too (capture.py, Graph.backward). Later
calls run the forward half of that graph inside `CompiledCall.forward`, keeping the environment,
and the engine's backward through the op runs the other half: the gradients of the call's
arguments and of the parameters it read, computed by the captured backward nodes.
"""

from __future__ import annotations

from prunus import autograd
from prunus.autograd import Op
from prunus.errors import AutogradError
from prunus.graph.control_flow import Output, output_grads
from prunus.tensor import Tensor


class CompiledCall(Op):
    """inputs: the tensors the backward ends at (Graph.backward.targets, live), so the engine
    routes their gradients; forward ignores their arrays and runs the graph on the call's
    arguments. Several differentiable outputs: the op returns the first, `Output` ops pick the
    others and hand their gradients back (as the control-flow ops do)."""

    def forward(self, *arrays, entry, args, kwargs, box):
        env, ops = entry.executor.run_forward(args, kwargs)
        self.entry, self.env, self.ops = entry, env, ops
        self.outs = [env[vi] for vi in entry.graph.backward.outputs]
        self.pending = {}
        box.append(env)  # the caller builds the other outputs from it
        return self.outs[0]

    def backward(self, g):
        if autograd.is_grad_enabled():
            raise AutogradError(
                "CompiledCall.backward: create_graph=True (gradients of gradients) does not go "
                "through a compiled call; call the function uncompiled for higher-order gradients"
            )
        env = self.__dict__.pop("env", None)
        if env is None:
            raise AutogradError(
                "CompiledCall.backward: backward through a compiled call a second time; its saved "
                "values were used up by the first (retain_graph does not keep them)"
            )
        dev = self.device
        like = [Tensor._make(a, dev, False, None) for a in self.outs]
        grads_in = [t.data for t in output_grads(self, g, like)]  # from the Output ops too
        grads = self.entry.executor.run_backward(env, self.ops, grads_in)
        self.ops = self.outs = None
        return tuple(None if a is None else Tensor._make(a, dev, False, None) for a in grads)


def call(entry, args, kwargs):
    """Run a cached graph with a backward half as one differentiable op; the function's return
    structure, its differentiable outputs carrying the op as history."""
    b = entry.graph.backward
    inputs = [(args[x] if isinstance(x, int) else kwargs[x]) if kind == "input" else x
              for kind, x in b.targets]
    box: list = []
    first = CompiledCall.apply(*inputs, entry=entry, args=args, kwargs=kwargs, box=box)
    outs = [first] + [Output.apply(first, fwd=first._ctx, index=i) for i in range(1, len(b.outputs))]
    return entry.executor.finish(box[0], args, kwargs, replace=dict(zip(b.outputs, outs)))
