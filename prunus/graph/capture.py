"""Capture: run a function once, eagerly, while recording every op application into a `Graph`.

`Op.apply` hands each application to the active `Tracer` (one global check when none is active).
Because the backward rules are written with prunus ops and the optimizers update through ops
(prunus/ops/optim_update.py, prunus/ops/inplace.py), a function that runs forward, backward and
an optimizer step records all three into one graph.

Capture fails loudly instead of freezing one branch: reading a tensor's value in Python
(`.item()`, `bool()`, `.numpy()`, ...) while tracing raises `CaptureError` pointing at
`prunus.cond`/`prunus.while_loop`. What Python state a graph depends on is checked by guards that
the library registers while tracing (a module's train/eval mode, an optimizer's hyperparameters and
state, whether a gradient is None before the call); a graph whose tracing changed Python-side
state (an optimizer's first step creating its buffers) is not reused. A function returning a
tensor whose autograd history is still to be used gets that tensor's backward recorded as well
(Graph.backward; differentiable.py runs it).
"""

from __future__ import annotations

from prunus import autograd
from prunus.errors import CaptureError
from prunus.graph.ir import CONST, GRAD, INPUT, NODE, SAVED, STATE, Backward, Graph, Node, Ref
from prunus.tensor import Tensor


def _is_array(a) -> bool:
    return hasattr(a, "__array_interface__") or hasattr(a, "__cuda_array_interface__")


class Tracer:
    def __init__(self, graph: Graph, parent: Tracer | None = None):
        # parent: set for the sub-tracer of a cond/while_loop branch, which lifts every tensor
        # from outside the branch into an input of its graph (see control_flow.py)
        self.parent = parent
        self.lifted: list = []  # outside tensors the branch reads, in input order
        self.g = graph
        self.val: dict = {}  # id(Tensor) -> value index
        self.data_val: dict = {}  # id(array) -> the value whose array it is
        self.saved: dict = {}  # id(array) -> (node, attr) for arrays ops keep on themselves
        self.op_node: dict = {}  # id(Op) -> node index
        self.node_ops: list = []  # node index -> the Op object that ran while tracing
        self.keep: list = []  # everything whose id is a key above stays alive while tracing
        self.grad_start: dict = {}  # id(grad Tensor) -> the parameter it was .grad of
        self.constants: dict = {}  # id -> initial array of tensors made as constants while tracing
        self.delivered: dict = {}  # id(param) -> param, for leaves that got a gradient
        self.none_before: dict = {}  # id(param) -> param whose .grad was None when it got one
        self.cleared: set = set()  # ids of params whose .grad the function set to None
        self.guard_keys: set = set()
        self.names: dict | None = None  # id(parameter or buffer) -> its name in the module
        self.uncacheable: list[str] = []
        self.devices: set = set()
        self.with_history: list = []  # returned tensors whose autograd history is alive

    # -- values ---------------------------------------------------------------------------

    def add_input(self, t: Tensor, position) -> None:
        v = self.g.add_value(INPUT, t.shape, t.data.dtype, requires_grad=t.requires_grad,
                             name=f"input {position}", position=position)
        self._bind(t, v.index)
        self.g.inputs.append(v.index)
        self.devices.add(t.device)

    def _bind(self, t: Tensor, index: int) -> None:
        self.val[id(t)] = index
        self.data_val.setdefault(id(t.data), index)
        self.keep.append(t)

    def note_param(self, p: Tensor) -> None:
        """A leaf the function may update or differentiate: remember its .grad at first sight."""
        if id(p) in self.val or not p.requires_grad:
            return
        g = p.grad
        if g is not None:
            self.grad_start[id(g)] = p
            self.keep.append(g)

    def value_of(self, t: Tensor) -> int:
        i = self.val.get(id(t))
        if i is not None:
            return i
        a = t.data
        i = self.data_val.get(id(a))
        if i is not None:  # another Tensor over a traced array (detach(), a .grad taken over)
            self.val[id(t)] = i
            self.keep.append(t)
            return i
        if self.parent is not None and id(t) not in self.constants:
            v = self.g.add_value(INPUT, t.shape, a.dtype, requires_grad=t.requires_grad,
                                 name="captured", position=len(self.g.inputs))
            self.g.inputs.append(v.index)
            self.lifted.append(t)
            self._bind(t, v.index)
            return v.index
        self.note_param(t)
        src = self.saved.get(id(a))
        dt = a.dtype
        if src is not None:  # an array an earlier op saved, wrapped by a backward rule
            v = self.g.add_value(SAVED, t.shape, dt, node=src[0], attr=src[1])
        elif id(t) in self.grad_start:  # a gradient that existed before the call: read it live
            p = self.grad_start[id(t)]
            v = self.g.add_value(GRAD, t.shape, dt, tensor=p)
            self._guard(("grad not None", id(p)), f"the .grad of a parameter {t.shape} is set",
                        lambda p=p: p.grad is not None, True)
        elif id(t) in self.constants:  # with its value when made: the function may update it
            v = self.g.add_value(CONST, t.shape, dt, tensor=t, initial=self.constants[id(t)])
        else:  # parameters, buffers, optimizer state: live tensors, read on every run
            name = None if self.names is None else self.names.get(id(t))
            v = self.g.add_value(STATE, t.shape, dt, tensor=t, requires_grad=t.requires_grad,
                                 name=name)
        self._bind(t, v.index)
        self.devices.add(t.device)
        return v.index

    def _resolve(self, a):
        """An attribute as a literal or a Ref into the graph."""
        if isinstance(a, autograd.Op):
            node = self.op_node.get(id(a))
            if node is None:
                raise CaptureError(
                    f"an op attribute refers to a {a.name} that was not recorded in this capture"
                )
            return Ref(node=node), True
        if isinstance(a, Tensor):
            return Ref(value=self.value_of(a)), True
        if type(a) in (tuple, list):
            items = [self._resolve(x) for x in a]
            return type(a)(x for x, _ in items), any(r for _, r in items)
        if type(a) is dict and any(_is_array(x) or isinstance(x, Tensor) for x in a.values()):
            raise CaptureError(
                "an op got a dict of arrays as an attribute, which a graph can't refer to; pass "
                "the op that holds them (as CrossEntropyBackward gets fwd=the CrossEntropy op)"
            )
        if _is_array(a):
            i = self.data_val.get(id(a))
            if i is not None:
                return Ref(value=i), True
            src = self.saved.get(id(a))
            if src is not None:
                return Ref(node=src[0], attr=src[1]), True
        return a, False

    # -- recording ------------------------------------------------------------------------

    def record(self, op, inputs, attrs, out: Tensor) -> None:
        cls = type(op)
        ins = [self.value_of(t) for t in inputs]
        resolved, refs = {}, False
        for k, a in attrs.items():
            resolved[k], r = self._resolve(a)
            refs = refs or r
        mutated = getattr(cls, "mutated_inputs", None)
        mutates = tuple(mutated(len(inputs), attrs)) if mutated else ()
        node = Node(
            len(self.g.nodes), cls, ins, -1, resolved,
            needs_input_grad=getattr(op, "needs_input_grad", None) or tuple(t.requires_grad for t in inputs),
            grad_enabled=autograd._state.grad_enabled, mutates=mutates, has_refs=refs,
        )
        v = self.g.add_value(NODE, out.shape, out.data.dtype, node=node.index,
                             requires_grad=out.requires_grad)
        node.output = v.index
        self.g.nodes.append(node)
        self.val[id(out)] = v.index
        self.data_val[id(out.data)] = v.index  # an in-place op's output is its input's array
        self.keep.append(out)
        self.op_node[id(op)] = node.index
        self.node_ops.append(op)
        for k, a in op.__dict__.items():
            if k not in ("inputs", "device", "needs_input_grad") and _is_array(a) \
                    and id(a) not in self.data_val:
                self.saved.setdefault(id(a), (node.index, k))
                self.keep.append(a)

    # -- what the library tells the tracer ------------------------------------------------

    def _guard(self, key, what, fn, expected) -> None:
        if self.parent is not None:  # a branch's guards hold for the whole graph
            self.parent._guard(key, what, fn, expected)
            return
        if key in self.guard_keys:
            return
        self.guard_keys.add(key)
        self.g.guards.append((what, fn, expected))

    def guard(self, key, what, fn) -> None:
        """The graph is valid while fn() returns what it returns now."""
        self._guard(key, what, fn, fn())

    def not_reusable(self, why: str) -> None:
        if self.parent is not None:
            self.parent.not_reusable(why)
        self.uncacheable.append(why)

    def name_tensors(self, module) -> None:
        """Name the parameters and buffers of the first module called (the outermost one) for
        print() and to_dot(): "fc1.weight"."""
        if self.names is None:
            self.names = {}
            for k, t in (*module.named_parameters(), *module.named_buffers()):
                self.names.setdefault(id(t), k)
                self.keep.append(t)

    def name_state(self, state: dict) -> None:
        """Name an optimizer's state tensors after their parameters ("momentum_buffer of
        fc1.weight") in values made already."""
        names = self.names or {}
        for p, st in state.items():
            for k, t in st.items():
                vi = self.val.get(id(t)) if isinstance(t, Tensor) else None
                if vi is not None and self.g.values[vi].name is None:
                    self.g.values[vi].name = f"{k} of {names.get(id(p), 'a parameter')}"

    def note_constant(self, t: Tensor) -> None:
        """t was made from Python values while tracing (ops._util.constant): foldable."""
        self.constants[id(t)] = t.data.copy()
        self.keep.append(t)

    def delivering_grad(self, p: Tensor) -> None:
        """The engine is about to set or add to p.grad."""
        self.note_param(p)
        self.delivered[id(p)] = p
        if p.grad is None and id(p) not in self.cleared:
            self.none_before[id(p)] = p

    def cleared_grad(self, p: Tensor) -> None:
        """zero_grad(set_to_none=True) dropped p.grad inside the function."""
        if id(p) not in self.cleared:
            self.cleared.add(id(p))
            if p.grad is None or id(p.grad) not in self.val:  # nothing in the graph read it yet
                self.g.cleared_grads_first.append(p)
                self.keep.append(p)

    def data_access(self, t: Tensor, what: str):
        raise CaptureError(
            f"{what} on a tensor of shape {tuple(t.shape)} inside a compiled function: its value "
            "is not known while the graph is captured, so Python cannot branch or compute on it. "
            "Use prunus.cond(pred, true_fn, false_fn, *operands) or prunus.while_loop(cond_fn, "
            "body_fn, init_vals) for control flow on tensor values, or move this out of the "
            "compiled function (return the tensor and read it afterwards)."
        )

    # -- finishing ------------------------------------------------------------------------

    def finish(self, result) -> None:
        g = self.g
        g.out_tree = self._flatten(result)
        if self.with_history:
            self._add_backward()
        for pid, p in self.delivered.items():
            if p.grad is None:
                g.cleared_grads.append(p)
                continue
            vi = self.val.get(id(p.grad))
            if vi is None:
                vi = self.value_of(p.grad)
            pos = self._input_position(pid)
            g.grad_outputs.append((("input", pos) if pos is not None else ("tensor", p), vi))
        for pid, p in self.none_before.items():
            if pid not in self.cleared and self._input_position(pid) is None:
                self._guard(("grad None", pid), f"the .grad of a parameter {tuple(p.shape)} is None",
                            lambda p=p: p.grad is None, True)
        for v in g.values:
            if v.kind == INPUT or v.kind == NODE:
                continue
            t = v.tensor
            if v.kind == STATE and isinstance(t, Tensor) and t.requires_grad:
                v.name = v.name or "parameter"

    def _add_backward(self) -> None:
        """The function returned tensors with live autograd history (a compiled Module called
        for training): record their backward as well, from placeholders for the gradients that
        will arrive at them down to the function's arguments and the parameters it read, so that
        later calls run the graph as one differentiable op (differentiable.py)."""
        g = self.g
        outs = list({id(t): t for t in self.with_history}.values())
        if self.delivered:
            raise CaptureError(
                "a compiled function ran a backward pass and also returned a tensor with autograd "
                "history that backward did not use; return it detached, or leave the backward "
                "to the caller"
            )
        targets = self._grad_targets(outs)
        phs = []
        for out in outs:  # placeholders: values that are not arguments, set when backward runs
            ph = Tensor._make(out.device.xp.ones_like(out.data), out.device, False, None)
            v = g.add_value(INPUT, ph.shape, ph.data.dtype, name="grad of output")
            self._bind(ph, v.index)
            phs.append(ph)
        # the backward is traced by running it (as a compiled training step's is), on the
        # placeholders and with the history kept: the eager result is returned to the caller,
        # whose own backward must still find it
        grads = autograd._run_backward(tuple(outs), tuple(phs), True, False,
                                       tuple(t for _, t in targets), allow_unused=True,
                                       stop_at_inputs=True)
        g.backward = Backward([self.val[id(t)] for t in outs], [self.val[id(p)] for p in phs],
                              [k for k, _ in targets],
                              [None if gr is None else self.value_of(gr) for gr in grads])
        for val in g.values:  # a parameter frozen or unfrozen later needs another backward
            t = val.tensor
            if val.kind == STATE and isinstance(t, Tensor):
                self._guard(("requires_grad", id(t)), f"requires_grad of a tensor {tuple(t.shape)}",
                            lambda t=t: t.requires_grad, t.requires_grad)

    def _grad_targets(self, outs) -> list:
        """[(target, tensor)]: where the backward of `outs` ends inside the graph: arguments
        ("input", position) and tensors read live ("tensor", t), those that require grad."""
        g = self.g
        targets, seen_ops, seen = [], set(), set()
        stack = [t._ctx for t in reversed(outs)]
        while stack:
            op = stack.pop()
            if id(op) in seen_ops:
                continue
            seen_ops.add(id(op))
            for t in op.inputs:
                if not t.requires_grad or id(t) in seen:
                    continue
                seen.add(id(t))
                vi = self.val.get(id(t))
                kind = None if vi is None else g.values[vi].kind
                if kind == INPUT:
                    targets.append((("input", g.values[vi].position), t))
                elif kind in (STATE, GRAD, CONST):
                    targets.append((("tensor", t), t))
                elif t._ctx is not None and t._ctx.inputs is not None:  # made inside: go on
                    stack.append(t._ctx)
        return targets

    def _input_position(self, pid):
        vi = self.val.get(pid)
        return None if vi is None or self.g.values[vi].kind != INPUT else self.g.values[vi].position

    def _flatten(self, x):
        if isinstance(x, Tensor):
            vi = self.val.get(id(x))
            if vi is None:
                vi = self.value_of(x)
            if x._ctx is not None and x._ctx.inputs is not None:  # its backward is still to come
                if self.g.values[vi].kind != NODE:
                    raise CaptureError(
                        f"a compiled function returned a tensor of shape {tuple(x.shape)} with "
                        "autograd history that it did not compute (an argument, or a tensor "
                        "from outside, unchanged); use it outside the compiled function"
                    )
                self.with_history.append(x)
            self.g.outputs.append(vi)
            return ("t", len(self.g.outputs) - 1)
        if type(x) in (tuple, list):
            return (type(x).__name__, [self._flatten(i) for i in x])
        if type(x) is dict:
            return ("dict", [(k, self._flatten(v)) for k, v in x.items()])
        if x is None or isinstance(x, (bool, int, float, str)):
            return ("lit", x)
        raise CaptureError(
            f"a compiled function returned a {type(x).__name__}; it may return tensors, and tuples, "
            "lists and dicts of them, and Python numbers or strings"
        )


def capture(fn, *args, **kwargs):
    """Run fn(*args, **kwargs) eagerly while recording it; return (graph, result, reasons) where
    `reasons` lists why the graph must not be reused (empty when it may)."""
    if autograd._state.tracer is not None:
        raise CaptureError("capture inside a capture: compiled functions do not nest yet")
    g = Graph()
    tr = Tracer(g)
    for pos, a in enumerate(args):
        if isinstance(a, Tensor):
            tr.add_input(a, pos)
    for k, a in kwargs.items():
        if isinstance(a, Tensor):
            tr.add_input(a, k)
    autograd._state.tracer = tr
    try:
        result = fn(*args, **kwargs)
        tr.finish(result)
    finally:
        autograd._state.tracer = None
    if len(tr.devices) > 1:
        raise CaptureError(f"a compiled function must run on one device, got {sorted(map(str, tr.devices))}")
    g.device = next(iter(tr.devices)) if tr.devices else None
    return g, result, tr.uncacheable
