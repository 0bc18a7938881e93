"""Run a captured `Graph`: each node calls its op's `forward` on arrays, in order, with no
autograd bookkeeping; arrays are dropped after their last use, so peak memory follows liveness.

An op's forward may look at `self.inputs` (shapes, requires_grad) and at the grad mode, so each
node gets an op object with the input Tensors it had while tracing (one reused wrapper per value)
and runs in the grad mode it was recorded in. Ops that a later node refers to (a forward op whose
saved activations its backward op reads) are kept until that node has run.

A graph with a backward half (Graph.backward: a compiled call whose result stays differentiable)
runs in two phases over one environment: `run_forward` up to the first node that reads the
incoming gradient, `run_backward` the rest once the gradient is known. Liveness is planned over
both, so what the backward reads stays alive in between and nothing else does.
"""

from __future__ import annotations

from prunus import autograd
from prunus.errors import CaptureError
from prunus.graph.ir import CONST, GRAD, NODE, SAVED, STATE, Graph, Ref, iter_refs
from prunus.graph.passes._rewrite import external, reads
from prunus.tensor import Tensor

_new = object.__new__


def _resolve(a, env, ops):
    if isinstance(a, Ref):
        if a.value is not None:
            return env[a.value]
        op = ops[a.node]
        return op if a.attr is None else op.__dict__.get(a.attr)
    if type(a) in (tuple, list):
        return type(a)(_resolve(x, env, ops) for x in a)
    return a


class Executor:
    def __init__(self, graph: Graph):
        self.graph = graph
        self.device = graph.device
        g = graph
        self.wrappers = [None] * len(g.values)
        for v in g.values:  # one Tensor per value, its .data set before each node runs
            t = _new(Tensor)
            t.data = None
            t.device = self.device
            t.requires_grad = v.requires_grad
            t.grad = None
            t._ctx = None
            t._hooks = None
            self.wrappers[v.index] = t
        self._plan()

    def _plan(self) -> None:
        """Last uses: which values and kept ops each node can drop after it runs."""
        g = self.graph
        keep = external(g)
        self.split = len(g.nodes)  # where the backward half starts (Graph.backward)
        if g.backward is not None:
            gis = set(g.backward.grad_inputs)
            self.split = next((n.index for n in g.nodes if gis.intersection(reads(n))), len(g.nodes))
        last_value: dict = {}
        last_op: dict = {}
        saved_by: dict = {}
        for v in g.values:
            if v.kind == SAVED:
                saved_by.setdefault(v.node, []).append(v.index)
        for n in g.nodes:
            for i in n.inputs:
                last_value[i] = n.index
            for r in iter_refs(n.attrs) if n.has_refs else ():
                if r.value is not None:
                    last_value[r.value] = n.index
                else:
                    last_op[r.node] = n.index
            for i in n.inputs:  # a SAVED value needs its op until it has been read
                v = g.values[i]
                if v.kind == SAVED:
                    last_op[v.node] = max(last_op.get(v.node, -1), n.index)
        self.drop_values = [[] for _ in g.nodes]
        self.drop_ops = [[] for _ in g.nodes]
        for vi, ni in last_value.items():
            if vi not in keep and g.values[vi].kind in (NODE, SAVED):
                self.drop_values[ni].append(vi)
        for n in g.nodes:  # results nobody reads (an in-place op's, say) go at once
            if n.output not in last_value and n.output not in keep:
                self.drop_values[n.index].append(n.output)
        for k, ni in last_op.items():
            self.drop_ops[ni].append(k)
        self.keep_op = set(last_op)
        self.saved_by = saved_by
        # one flat tuple per node: the run loop reads locals, not attributes (a batch-1 MLP
        # forward is ~6 nodes of a few microseconds each, so the loop's own cost shows)
        w = self.wrappers
        self.steps = [
            (n.op, tuple(n.inputs), tuple(w[i] for i in n.inputs), n.output, n.attrs,
             n.has_refs, n.grad_enabled, n.needs_input_grad, n.inplace, n.index in self.keep_op,
             n.index, tuple((vi, g.values[vi].attr) for vi in saved_by.get(n.index, ())),
             tuple(self.drop_values[n.index]), tuple(self.drop_ops[n.index]))
            for n in g.nodes
        ]
        dropped = {vi for d in self.drop_values for vi in d}
        self.linger = [w[i] for i in sorted({i for n in g.nodes for i in n.inputs} - dropped)]
        self.live = [(v.index, v.kind, v.tensor) for v in g.values if v.kind in (STATE, CONST, GRAD)]
        # a constant made inside the function and then updated in place starts fresh every run,
        # as it does when the function runs eagerly
        written = {n.inputs[k] for n in g.nodes for k in n.mutates}
        self.fresh_consts = {vi: g.values[vi].initial for vi, kind, _ in self.live
                             if kind == CONST and vi in written and g.values[vi].initial is not None}

    def _arguments(self, args, kwargs) -> list:
        """A fresh environment holding the call's tensor arguments."""
        g = self.graph
        env = [None] * len(g.values)
        for vi in g.inputs:
            pos = g.values[vi].position
            env[vi] = (args[pos] if isinstance(pos, int) else kwargs[pos]).data
        return env

    def run(self, args, kwargs):
        """Run on Tensor arguments; the function's return structure, .grad assignments done."""
        g = self.graph
        env = self._arguments(args, kwargs)
        for p in g.cleared_grads_first:  # zero_grad ran before anything read them: as eager,
            p.grad = None  # drop last step's gradients now, not when the new ones arrive
        return self.finish(self._execute(env), args, kwargs)

    def run_forward(self, args, kwargs):
        """The forward half of a graph with a backward (see the module docstring): returns the
        environment and the kept ops that `run_backward` continues from."""
        env = self._arguments(args, kwargs)
        ops: dict = {}
        self._execute(env, ops, 0, self.split)
        return env, ops

    def run_backward(self, env, ops, grads) -> list:
        """The backward half, given the gradients arriving at the outputs: the gradient arrays of
        Graph.backward.targets (None where there is none)."""
        b = self.graph.backward
        for vi, a in zip(b.grad_inputs, grads):
            env[vi] = a
        self._execute(env, ops, self.split, len(self.steps), load_live=False)
        return [None if vi is None else env[vi] for vi in b.grads]

    def run_arrays(self, arrays) -> list:
        """Run on arrays given in input order; the flat list of output arrays (a branch or loop
        body of a control-flow op)."""
        g = self.graph
        env = [None] * len(g.values)
        for vi, a in zip(g.inputs, arrays):
            env[vi] = a
        env = self._execute(env)
        return [env[vi] for vi in g.outputs]

    def _execute(self, env, ops=None, start=0, stop=None, load_live=True):
        for vi, kind, t in self.live if load_live else ():
            if kind == GRAD:
                if t.grad is None:
                    raise CaptureError("a gradient the compiled graph reads is None (guards should have caught this)")
                env[vi] = t.grad.data
            elif vi in self.fresh_consts:
                env[vi] = self.fresh_consts[vi].copy()
            else:
                env[vi] = t.data
        if ops is None:
            ops = {}
        steps = self.steps if start == 0 and stop is None else self.steps[start:stop]
        wrappers = self.wrappers
        dev = self.device
        array_type = dev.array_type
        prev_mode = mode = autograd._state.grad_enabled
        try:
            for (cls, ins, ws, out_i, attrs, refs, grad_mode, needs, inplace, keep, index,
                 saved, drop_v, drop_o) in steps:
                op = _new(cls)
                op.device = dev
                arrays = [env[i] for i in ins]
                for w, a in zip(ws, arrays):
                    w.data = a
                op.inputs = ws
                op.needs_input_grad = needs
                if grad_mode is not mode:
                    autograd._state.grad_enabled = mode = grad_mode
                if refs:
                    attrs = {k: _resolve(a, env, ops) for k, a in attrs.items()}
                if inplace is None:
                    out = op.forward(*arrays, **attrs)
                else:  # memory planning found the input dead and unaliased (passes/memory.py)
                    out = op.forward_into(arrays[inplace], *arrays, **attrs)
                if type(out) is not array_type:
                    out = dev.xp.asarray(out)
                env[out_i] = out
                if keep:
                    ops[index] = op
                for vi, attr in saved:
                    env[vi] = op.__dict__.get(attr)
                for vi in drop_v:
                    env[vi] = None
                    wrappers[vi].data = None  # the wrapper would keep the array alive
                for k in drop_o:
                    ops.pop(k, None)
        finally:
            autograd._state.grad_enabled = prev_mode
            for w in self.linger:
                w.data = None
        return env

    def finish(self, env, args, kwargs, replace=None):
        """The return structure; `replace` = {value index: Tensor} puts Tensors made elsewhere
        (a differentiable call's outputs) where those values are returned."""
        g = self.graph
        dev = self.device
        for target, vi in g.grad_outputs:
            p = (args[target[1]] if isinstance(target[1], int) else kwargs[target[1]]) if target[0] == "input" else target[1]
            p.grad = Tensor._make(env[vi], dev, False, None)
        for p in g.cleared_grads:
            p.grad = None
        replace = replace or {}
        outs = [replace[vi] if vi in replace else Tensor._make(env[vi], dev, False, None)
                for vi in g.outputs]
        return _unflatten(g.out_tree, outs)


def _unflatten(tree, outs):
    kind, x = tree
    if kind == "t":
        return outs[x]
    if kind == "lit":
        return x
    if kind == "dict":
        return {k: _unflatten(v, outs) for k, v in x}
    items = [_unflatten(i, outs) for i in x]
    return tuple(items) if kind == "tuple" else items
