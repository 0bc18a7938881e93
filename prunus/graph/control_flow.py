"""Control flow as graph ops: `prunus.cond`, `prunus.while_loop`, `prunus.fori_loop`.

In eager mode they simply run (Python's if and while, so autograd records what ran). Inside a
captured function, each branch or loop body is captured into a subgraph whose inputs are the
operands plus every outside tensor it reads (parameters, earlier values: "lifted"), and one op runs
the subgraph that the tensor predicate picks: `Cond` and `WhileLoop`. Their backward rules are
graph ops too (the cond of the branches' vector-Jacobian products; a reverse loop over the saved
iteration states), so a captured training step can differentiate through them.

Ops here return one array; a control-flow op with several results returns the first, and
`Output` ops pick the others (their backward hands their gradient to the op they came from).
"""

from __future__ import annotations

from prunus import autograd
from prunus.autograd import Op, enable_grad
from prunus.creation import zeros_like
from prunus.errors import ArgumentError, CaptureError, DTypeError, ShapeError
from prunus.graph.capture import Tracer
from prunus.graph.executor import Executor
from prunus.graph.ir import Graph
from prunus.tensor import Tensor

# -- capturing a branch -------------------------------------------------------------------------


def _flat(x, what):
    """A branch's result as a list of tensors and whether it was a single tensor."""
    if isinstance(x, Tensor):
        return [x], True
    if type(x) in (tuple, list) and x and all(isinstance(t, Tensor) for t in x):
        return list(x), False
    raise CaptureError(f"{what} must return a tensor or a non-empty tuple/list of tensors, got {type(x).__name__}")


def _subgraph(fn, operands, what):
    """Capture fn(*operands) as a Graph; (graph, flat outputs, single, lifted outside tensors)."""
    parent = autograd._state.tracer
    g = Graph()
    tr = Tracer(g, parent=parent)
    for pos, t in enumerate(operands):
        tr.add_input(t, pos)
    autograd._state.tracer = tr
    try:
        result = fn(*operands)
        outs, single = _flat(result, what)
        for t in outs:
            g.outputs.append(tr.value_of(t))
    finally:
        autograd._state.tracer = parent
    for n in g.nodes:
        if n.mutates:
            raise CaptureError(f"{what} updates a tensor in place ({n.name}); branches and loop bodies may not")
    if tr.delivered:
        raise CaptureError(f"{what} runs backward into .grad; compute gradients outside branches")
    g.device = operands[0].device if operands else (tr.lifted[0].device if tr.lifted else None)
    g.out_tree = None
    return g, outs, single, tr.lifted


def _executor(g: Graph) -> Executor:
    ex = g.__dict__.get("_executor")
    if ex is None:
        ex = g._executor = Executor(g)
    return ex


def _interpret(g: Graph, tensors) -> list:
    """Apply a branch graph's nodes as eager ops (recording autograd) on `tensors`: the branch as
    a differentiable function of all its inputs, lifted ones included."""
    env = {}
    for vi, t in zip(g.inputs, tensors):
        env[vi] = t
    for v in g.values:
        if v.kind in ("state", "const"):
            env[v.index] = v.tensor
    for n in g.nodes:
        if n.has_refs:
            raise CaptureError(f"a branch that refers to saved op state ({n.name}) can't be differentiated")
        env[n.output] = n.op.apply(*[env[i] for i in n.inputs], **n.attrs)
    return [env[vi] for vi in g.outputs]


def _vjp_fn(g: Graph, n_in: int, diff: tuple):
    """A function (*inputs, *output_grads) -> gradients of the inputs marked in `diff` (zeros
    where an input does not reach the outputs)."""

    def vjp(*args):
        ins, gs = args[:n_in], args[n_in:]
        with enable_grad():
            leaves = [x.detach().requires_grad_(True) if d else x.detach() for x, d in zip(ins, diff)]
            outs = _interpret(g, leaves)
            wrt = [x for x, d in zip(leaves, diff) if d]
            pairs = [(o, gg) for o, gg in zip(outs, gs) if o.requires_grad]
            got = autograd.grad([o for o, _ in pairs], wrt, [gg for _, gg in pairs],
                                allow_unused=True) if pairs else [None] * len(wrt)
        return tuple(zeros_like(x) if gr is None else gr for x, gr in zip(wrt, got))

    return vjp


def _results(op_out: Tensor, op, n: int):
    return [op_out] + [Output.apply(op_out, fwd=op, index=i) for i in range(1, n)]


class Output(Op):
    """Result `index` (>= 1) of the multi-result op `fwd` (its first result is the anchor input)."""

    def forward(self, anchor, fwd, index):
        self.fwd, self.index = fwd, index
        return fwd.outs[index]

    def backward(self, g):
        pending = self.fwd.pending
        pending[self.index] = g if self.index not in pending else pending[self.index] + g
        return zeros_like(self.inputs[0])  # keeps the engine going to fwd, adds nothing


def output_grads(op, g0, outs_like):
    """The gradients of a multi-result op's results: `g0` for the first, what its Output ops
    collected in `op.pending` for the others (zeros for a result nothing used)."""
    gs = [g0]
    for i in range(1, len(outs_like)):
        gi = op.pending.get(i)
        gs.append(zeros_like(outs_like[i]) if gi is None else gi)
    op.pending = {}
    return gs


# -- cond ---------------------------------------------------------------------------------------


class Cond(Op):
    """inputs: pred, then the branches' inputs (operands, then lifted tensors of the true branch,
    then of the false branch). attrs: the two branch graphs and how many inputs each takes."""

    def forward(self, pred, *arrays, true_graph, false_graph, n_operands, n_true):
        self.tg, self.fg, self.n_operands, self.n_true = true_graph, false_graph, n_operands, n_true
        self.pending = {}
        ops_ = list(arrays[:n_operands])
        if bool(pred.reshape(()).item()):
            self.outs = _executor(true_graph).run_arrays(ops_ + list(arrays[n_operands : n_operands + n_true]))
        else:
            self.outs = _executor(false_graph).run_arrays(ops_ + list(arrays[n_operands + n_true :]))
        return self.outs[0]

    def backward(self, g0):
        tg, fg, n_ops, n_true = self.tg, self.fg, self.n_operands, self.n_true
        pred, rest = self.inputs[0], self.inputs[1:]
        operands = list(rest[:n_ops])
        lt, lf = list(rest[n_ops : n_ops + n_true]), list(rest[n_ops + n_true :])
        gs = output_grads(self, g0, [Tensor._make(a, self.device, False, None) for a in self.outs])
        needs = self.needs_input_grad[1:]
        diff_ops = tuple(bool(needs[i]) and operands[i].dtype.is_floating_point for i in range(n_ops))
        diff_t = tuple(bool(needs[n_ops + i]) for i in range(len(lt)))
        diff_f = tuple(bool(needs[n_ops + n_true + i]) for i in range(len(lf)))
        vt = _vjp_fn(tg, n_ops + len(lt), diff_ops + diff_t)
        vf = _vjp_fn(fg, n_ops + len(lf), diff_ops + diff_f)
        k_ops, k_t, k_f = sum(diff_ops), sum(diff_t), sum(diff_f)
        # one cond over both VJPs, each returning (operand grads, true-lifted, false-lifted) with
        # zeros for the other branch's lifted tensors, so both branches return the same structure
        lt_d = [x for x, d in zip(lt, diff_t) if d]
        lf_d = [x for x, d in zip(lf, diff_f) if d]

        def true_vjp(*args):
            o, a, _, g = _split(args, n_ops, len(lt), len(lf))
            got = vt(*o, *a, *g)
            return tuple(got[:k_ops]) + tuple(got[k_ops:]) + tuple(zeros_like(x) for x in lf_d)

        def false_vjp(*args):
            o, _, b, g = _split(args, n_ops, len(lt), len(lf))
            got = vf(*o, *b, *g)
            return tuple(got[:k_ops]) + tuple(zeros_like(x) for x in lt_d) + tuple(got[k_ops:])

        if k_ops + k_t + k_f == 0:
            return (None,) * len(self.inputs)
        grads = cond(pred, true_vjp, false_vjp, *operands, *lt, *lf, *gs)
        grads = [grads] if isinstance(grads, Tensor) else list(grads)
        it = iter(grads)
        out = [None]
        for d in diff_ops + diff_t + diff_f:
            out.append(next(it) if d else None)
        return tuple(out)


def _split(args, n_ops, n_t, n_f):
    a = n_ops
    b = a + n_t
    c = b + n_f
    return args[:a], args[a:b], args[b:c], args[c:]


def _check_pred(pred, what):
    if isinstance(pred, bool):
        return
    if not isinstance(pred, Tensor):
        raise DTypeError(f"{what}: the predicate must be a bool tensor (or a Python bool), got {type(pred).__name__}")
    if pred.data.size != 1:
        raise ShapeError(f"{what}: the predicate must have one element, got shape {tuple(pred.shape)}")


def cond(pred, true_fn, false_fn, *operands):
    """true_fn(*operands) if pred else false_fn(*operands), as one graph op when captured.

    Both branches take the operands (tensors) and return a tensor or a tuple of tensors of the
    same shapes and dtypes. They may read other tensors (parameters, earlier results) and are
    differentiable in all of them; they may not update tensors in place.
    """
    _check_pred(pred, "cond")
    if not callable(true_fn) or not callable(false_fn):
        raise ArgumentError("cond: true_fn and false_fn must be callables")
    for i, t in enumerate(operands):
        if not isinstance(t, Tensor):
            raise DTypeError(f"cond: operand {i} must be a Tensor, got {type(t).__name__}")
    if autograd._state.tracer is None or isinstance(pred, bool):  # eager: simply run
        return true_fn(*operands) if bool(pred) else false_fn(*operands)
    tg, touts, tsingle, tl = _subgraph(true_fn, operands, "cond's true_fn")
    fg, fouts, fsingle, fl = _subgraph(false_fn, operands, "cond's false_fn")
    if tsingle != fsingle or len(touts) != len(fouts):
        raise CaptureError(f"cond: the branches return different structures ({len(touts)} vs {len(fouts)} tensors)")
    for i, (a, b) in enumerate(zip(touts, fouts)):
        if a.shape != b.shape or a.dtype is not b.dtype:
            raise ShapeError(
                f"cond: result {i} of the branches differs: {a.dtype.name}{list(a.shape)} vs "
                f"{b.dtype.name}{list(b.shape)}"
            )
    out = Cond.apply(pred, *operands, *tl, *fl, true_graph=tg, false_graph=fg,
                     n_operands=len(operands), n_true=len(tl))
    res = _results(out, _op_of(out), len(touts))
    return res[0] if tsingle else tuple(res)


def _op_of(out: Tensor):
    """The op that made `out` (recorded by autograd or, when no input needs grad, by the tracer)."""
    if out._ctx is not None:
        return out._ctx
    tr = autograd._state.tracer
    return tr.node_ops[tr.g.values[tr.val[id(out)]].node]


# -- while_loop ---------------------------------------------------------------------------------


def _array_true(a) -> bool:
    return bool(a.reshape(()).item())


class WhileLoop(Op):
    """inputs: the loop variables' initial values, then the tensors cond_fn lifts, then those
    body_fn lifts. With `save`, keeps every iteration's state for the backward."""

    def forward(self, *arrays, cond_graph, body_graph, n_vars, n_cond, save):
        self.cg, self.bg, self.n_vars, self.n_cond = cond_graph, body_graph, n_vars, n_cond
        self.pending = {}
        vals = list(arrays[:n_vars])
        lc, lb = list(arrays[n_vars : n_vars + n_cond]), list(arrays[n_vars + n_cond :])
        cex, bex = _executor(cond_graph), _executor(body_graph)
        states = []
        while _array_true(cex.run_arrays(vals + lc)[0]):
            if save:
                states.append(vals)
            vals = bex.run_arrays(vals + lb)
        self.states = states
        self.outs = vals
        return vals[0]

    def backward(self, g0):
        n_vars, n_cond = self.n_vars, self.n_cond
        vars0, lb = list(self.inputs[:n_vars]), list(self.inputs[n_vars + n_cond :])
        needs = self.needs_input_grad
        diff_v = tuple(v.dtype.is_floating_point for v in vars0)
        diff_b = tuple(bool(needs[n_vars + n_cond + i]) for i in range(len(lb)))
        if not any(needs[:n_vars]) and not any(diff_b):
            return (None,) * len(self.inputs)
        gs = output_grads(self, g0, [Tensor._make(a, self.device, False, None) for a in self.outs])
        vjp = _vjp_fn(self.bg, n_vars + len(lb), diff_v + diff_b)
        vg, _, _, vl = _subgraph(vjp, [*vars0, *lb, *gs], "while_loop's body (its gradient)")
        out = WhileLoopGrad.apply(*gs, *lb, *vl, fwd=self, vjp_graph=vg, diff_v=diff_v,
                                  diff_b=diff_b)
        res = _results(out, _op_of(out), n_vars + sum(diff_b))
        grads = [r if needs[i] else None for i, r in enumerate(res[:n_vars])]
        grads += [None] * n_cond
        it = iter(res[n_vars:])
        grads += [next(it) if d else None for d in diff_b]
        return tuple(grads)


class WhileLoopGrad(Op):
    """The backward of WhileLoop: the body's vector-Jacobian product applied from the last saved
    iteration to the first. Results: a gradient per loop variable (zeros for integer ones), then
    one per differentiable lifted body tensor (summed over iterations). First order only."""

    differentiable = False

    def forward(self, *arrays, fwd, vjp_graph, diff_v, diff_b):
        # arrays: the loop results' gradients, the body's lifted tensors, the VJP graph's own
        # lifted tensors (constants of the body it replays)
        n_vars = len(diff_v)
        xp = self.xp
        g = list(arrays[:n_vars])
        lb = list(arrays[n_vars : n_vars + len(diff_b)])
        lv = list(arrays[n_vars + len(diff_b) :])
        ex = _executor(vjp_graph)
        acc = [xp.zeros_like(b) for b, d in zip(lb, diff_b) if d]
        k_v = sum(diff_v)
        for state in reversed(fwd.states):
            res = ex.run_arrays(list(state) + lb + g + lv)
            it = iter(res[:k_v])
            g = [next(it) if d else xp.zeros_like(gi) for d, gi in zip(diff_v, g)]
            for a, r in zip(acc, res[k_v:]):
                a += r
        self.outs = g + acc
        return self.outs[0]


def while_loop(cond_fn, body_fn, init_vals):
    """Run `vals = body_fn(*vals)` while `cond_fn(*vals)` is true; the final vals (a tuple).

    init_vals: a tuple of tensors (the loop variables); body_fn returns a tuple of the same
    shapes and dtypes; cond_fn returns a one-element bool tensor. Captured, the loop is one graph
    op, differentiable in the floating loop variables and in the tensors the body reads (first
    order: the backward keeps every iteration's state).
    """
    if not callable(cond_fn) or not callable(body_fn):
        raise ArgumentError("while_loop: cond_fn and body_fn must be callables")
    if isinstance(init_vals, Tensor):
        raise ArgumentError("while_loop: init_vals must be a tuple of tensors, e.g. (x,)")
    vals = tuple(init_vals)
    if not vals or not all(isinstance(v, Tensor) for v in vals):
        raise DTypeError("while_loop: init_vals must be a non-empty tuple of tensors")
    if autograd._state.tracer is None:  # eager: simply run
        while True:
            c = cond_fn(*vals)
            _check_pred(c, "while_loop's cond_fn")
            if not bool(c):
                return vals
            vals = _check_body(body_fn(*vals), vals)
    cg, couts, _, lc = _subgraph(cond_fn, vals, "while_loop's cond_fn")
    if len(couts) != 1 or couts[0].data.size != 1:
        raise ShapeError("while_loop: cond_fn must return one one-element bool tensor")
    bg, bouts, _, lb = _subgraph(body_fn, vals, "while_loop's body_fn")
    _check_body(bouts, vals)
    save = autograd._state.grad_enabled and any(t.requires_grad for t in (*vals, *lb))
    out = WhileLoop.apply(*vals, *lc, *lb, cond_graph=cg, body_graph=bg, n_vars=len(vals),
                          n_cond=len(lc), save=save)
    return tuple(_results(out, _op_of(out), len(vals)))


def _check_body(outs, vals):
    outs = (outs,) if isinstance(outs, Tensor) else tuple(outs)
    if len(outs) != len(vals):
        raise CaptureError(f"while_loop: body_fn returned {len(outs)} values for {len(vals)} loop variables")
    for i, (o, v) in enumerate(zip(outs, vals)):
        if not isinstance(o, Tensor) or o.shape != v.shape or o.dtype is not v.dtype:
            got = f"{o.dtype.name}{list(o.shape)}" if isinstance(o, Tensor) else type(o).__name__
            raise ShapeError(
                f"while_loop: body_fn's result {i} is {got}, the loop variable is "
                f"{v.dtype.name}{list(v.shape)}; shapes and dtypes must stay the same"
            )
    return outs


def fori_loop(lower: int, upper: int, body_fn, init_val):
    """val = body_fn(i, val) for i in range(lower, upper), with Python int bounds: the loop runs
    in Python, so a captured graph holds it unrolled (use while_loop for tensor bounds)."""
    if not all(isinstance(b, int) and not isinstance(b, bool) for b in (lower, upper)):
        raise ArgumentError(f"fori_loop: bounds must be Python ints, got {lower!r}, {upper!r}; use while_loop for tensor bounds")
    val = init_val
    for i in range(lower, upper):
        val = body_fn(i, val)
    return val
