"""Reverse-mode automatic differentiation: the `Op` base class and the backward engine.

An `Op` is one differentiable primitive: `forward` works on backend arrays, `backward` on Tensors
(so gradients of gradients come for free). `Op.apply` runs forward and, when grad mode is on and
some input requires grad, records the op as the creator of its output. The engine walks the
recorded graph in reverse topological order without recursion. Also here: grad-mode context
managers, `grad()`, anomaly detection and `gradcheck`.
"""

from __future__ import annotations

import functools
import itertools
import threading
import traceback
from heapq import heappop, heappush

import numpy as np

from prunus.errors import (
    AnomalyError,
    AutogradError,
    DeviceError,
    DTypeError,
    GradcheckError,
    PrunusError,
    ShapeError,
    fmt_shape,
)

Tensor = None  # set by prunus.tensor once the class exists (the two modules need each other)
_new = object.__new__
_next_seq = itertools.count().__next__  # creation order of recorded ops (see _run_backward)
# The seq of the latest in-place change (mark_modified); in-place changes take numbers from the
# same counter, so "changed after op was recorded" is `t._modified_at > op.seq`, and a backward
# with nothing changed since an op was recorded checks nothing.
_last_inplace = -1



class _ThreadState(threading.local):
    """Per-thread autograd state, as PyTorch's: a no_grad() in one thread (an inference server,
    a loader) leaves training in another alone. Class attributes are each new thread's defaults."""

    grad_enabled = True
    anomaly = False
    tracer = None  # the active prunus.graph.capture.Tracer while a function is being captured


_state = _ThreadState()


# -- grad mode -------------------------------------------------------------------------------


def is_grad_enabled() -> bool:
    return _state.grad_enabled


class _GradMode:
    """Context manager and decorator that sets grad mode and restores it afterwards."""

    mode = True

    def __enter__(self):
        self._prev = _state.grad_enabled
        _state.grad_enabled = self.mode

    def __exit__(self, *exc):
        _state.grad_enabled = self._prev
        return False

    def __call__(self, fn):
        mode = self.mode

        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            with set_grad_enabled(mode):  # a fresh context per call: calls may nest or recurse
                return fn(*args, **kwargs)

        return wrapper


class no_grad(_GradMode):
    """Record nothing: ops inside produce tensors without history. Also a decorator."""

    mode = False


class enable_grad(_GradMode):
    """Record again inside a `no_grad` region. Also a decorator."""

    mode = True


class set_grad_enabled(_GradMode):
    """`set_grad_enabled(False)` is `no_grad()`; usable as a context manager or a decorator."""

    def __init__(self, mode: bool):
        self.mode = bool(mode)


class detect_anomaly:
    """In this mode backward checks every gradient it computes and raises `AnomalyError` naming
    the op whose backward first produced NaN or Inf, with the stack where that op was created.
    Off by default, and costs nothing then."""

    def __init__(self, check_nan: bool = True):
        self.check_nan = check_nan

    def __enter__(self):
        self._prev = _state.anomaly
        _state.anomaly = self.check_nan

    def __exit__(self, *exc):
        _state.anomaly = self._prev
        return False


# -- ops -------------------------------------------------------------------------------------


class Op:
    """A differentiable primitive. Subclass it to define your own op (like torch.autograd.Function):

        class Cube(Op):
            def forward(self, x):            # backend arrays in, one array out
                return x * x * x
            def backward(self, grad):        # Tensors in, one gradient per input out
                (x,) = self.inputs
                return grad * 3 * x * x

        y = Cube.apply(x)

    `forward` may store what backward needs on `self`; `self.inputs` holds the input Tensors and
    `self.needs_input_grad` says which of them need a gradient. `backward` returns a Tensor or None
    per input (a single value when there is one input) and is written with prunus ops, so it is
    differentiable itself (create_graph=True). Non-tensor arguments go to forward as keywords.
    """

    differentiable = True  # False for ops whose outputs never carry gradients (argmax, ==)
    # Whether backward reads the values of the inputs (False for ops that need only shapes: Add,
    # Reshape, Sum, ...) and of the output (found from backward's code: it reads self.out or
    # self.output()). An input or output changed in place between forward and backward would
    # give a silently wrong gradient; such a backward raises instead (see mark_modified).
    saves_inputs = True
    saves_output = False
    returns_view = False  # forward may return a view of input 0 (Reshape, Permute, Index, ...)

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        backward = cls.__dict__.get("backward")
        if backward is not None and "saves_output" not in cls.__dict__:
            cls.saves_output = not {"out", "output"}.isdisjoint(backward.__code__.co_names)

    def forward(self, *arrays, **attrs):
        raise NotImplementedError(f"{type(self).__name__}.forward")

    def backward(self, grad):
        raise AutogradError(f"{type(self).__name__} has no backward")

    @property
    def xp(self):
        """The array module (NumPy or CuPy) of the device this op runs on."""
        return self.device.xp

    @property
    def name(self) -> str:
        return type(self).__name__

    @classmethod
    def apply(cls, *inputs, **attrs):
        # The hot path of every op: kept flat, with one- and two-input cases spelled out.
        op = _new(cls)
        op.inputs = inputs
        a = inputs[0]
        op.device = dev = a.device
        n = len(inputs)
        try:
            if n == 1:
                out = op.forward(a.data, **attrs)
            elif n == 2:
                b = inputs[1]
                if b.device is not dev:
                    _device_mismatch(cls, inputs)
                out = op.forward(a.data, b.data, **attrs)
            else:
                for t in inputs:
                    if t.device is not dev:
                        _device_mismatch(cls, inputs)
                out = op.forward(*[t.data for t in inputs], **attrs)
        except PrunusError:
            raise
        except (ValueError, TypeError, IndexError, ZeroDivisionError) as e:
            _explain_failure(op, inputs, e)
        if type(out) is not dev.array_type:  # a NumPy scalar, or an array on another device
            dev = getattr(op, "out_device", dev)
            if type(out) is not dev.array_type:
                out = dev.xp.asarray(out)
        t = _new(Tensor)
        t.data = out
        t.device = dev
        t.grad = None
        t._hooks = None
        if cls.returns_view:  # a change through the view is a change of what it views
            base = out.base
            if base is not None and (base is a.data or base is a.data.base):
                t._base = memory_owner(a)
        st = _state
        if st.grad_enabled and cls.differentiable:
            if n == 1:
                record = a.requires_grad
                if record:
                    op.needs_input_grad = (True,)
            elif n == 2:
                ra, rb = a.requires_grad, b.requires_grad
                record = ra or rb
                if record:
                    op.needs_input_grad = (ra, rb)
            else:
                needs = tuple([x.requires_grad for x in inputs])
                record = True in needs
                if record:
                    op.needs_input_grad = needs
            if record:
                op.seq = _next_seq()
                if st.anomaly:
                    op._stack = traceback.format_stack()[:-1]
                t.requires_grad = True
                t._ctx = op
                tracer = st.tracer
                if tracer is not None:
                    tracer.record(op, inputs, attrs, t)
                return t
        t.requires_grad = False
        t._ctx = None
        tracer = st.tracer
        if tracer is not None:
            tracer.record(op, inputs, attrs, t)
        return t

    def output(self):
        """The op's output as a Tensor, for backward rules (forward must set `self.out`).

        Built anew rather than kept: keeping the output Tensor would make a reference cycle.
        Inside create_graph it is a node of the graph, so second derivatives flow through it.
        """
        out = self.out
        if type(out) is not self.device.array_type:  # forward kept a NumPy scalar (0-d result)
            out = self.out = self.device.xp.asarray(out)
        if _state.grad_enabled:
            return Tensor._make(out, self.device, True, self)
        return Tensor._make(out, self.device, False, None)


Function = Op  # PyTorch's name for the same idea (torch.autograd.Function)


def memory_owner(t):
    """The tensor whose memory `t` shares (t itself unless it is a view or a detach())."""
    try:
        return t._base
    except AttributeError:
        return t


def _changed_at(t) -> int:
    try:
        return memory_owner(t)._modified_at
    except AttributeError:
        return -1


def mark_modified(*tensors) -> None:
    """Note that `tensors` were just changed in place (the in-place ops and fused optimizer
    updates call this). A recorded op whose backward reads one of them, or another view of the
    same memory, refuses to run afterwards instead of computing its gradient from the new values
    (PyTorch's version counter, shared by a tensor, its views and detach()es). Changes through
    .data or NumPy are not seen."""
    global _last_inplace
    s = _last_inplace = _next_seq()
    for t in tensors:
        owner = memory_owner(t)
        owner._modified_at = s
        for x in (t, owner):
            c = x._ctx
            if c is not None:  # the output of a recorded op (changed under no_grad)
                c._output_modified = s


def _check_unmodified(op):
    cls = type(op)
    bad = None
    if cls.saves_inputs:
        for i, t in enumerate(op.inputs):
            if _changed_at(t) > op.seq:
                bad = f"its input {i} ({fmt_shape(t.shape)} {t.dtype.name})"
                break
    if bad is None and cls.saves_output and "_output_modified" in op.__dict__:
        bad = "its output"
    if bad is not None:
        where = ("; it was recorded at:\n" + "".join(op._stack[-4:])) if "_stack" in op.__dict__ else \
            " (run under prunus.autograd.detect_anomaly() to see where it was recorded)"
        raise AutogradError(
            f"{op.name}.backward: {bad} was changed in place after {op.name} ran, and its "
            f"gradient needs the old values; make the change after backward, or on a clone"
            f"{where}"
        )


def _explain_failure(op, inputs, exc):
    """Turn an array library's exception into a prunus error naming the op, shapes and dtypes."""
    explain = getattr(op, "explain", None)
    if explain is not None:
        explain([t.shape for t in inputs])  # raises a precise error when it finds the cause
    desc = ", ".join(f"{fmt_shape(t.shape)} {t.dtype.name}" for t in inputs)
    cls = DTypeError if isinstance(exc, TypeError) else ShapeError
    raise cls(f"{op.name}: cannot apply to inputs {desc}: {exc}") from None


def _device_mismatch(cls, inputs):
    devs = ", ".join(f"{t.device} {fmt_shape(t.shape)}" for t in inputs)
    raise DeviceError(f"{cls.__name__}: expected all tensors on one device, got {devs}")


# -- the engine ------------------------------------------------------------------------------


def _freed(op):
    return AutogradError(
        f"trying to backward through the graph a second time (through {op.name}): its saved "
        "values were freed after the first backward; pass retain_graph=True to the first "
        "backward if you need to go through it again"
    )


def _run_backward(roots, root_grads, retain_graph, create_graph, inputs=None, allow_unused=False, made=(),
                  stop_at_inputs=False):
    """Propagate `root_grads` from `roots` back through the graph.

    With `inputs` None, gradients accumulate into the `.grad` of leaves that require grad.
    Otherwise the gradients of `inputs` are returned and no `.grad` changes; `stop_at_inputs`
    also leaves the history behind non-leaf `inputs` alone (a compiled function's backward ends
    at its arguments: prunus/graph/capture.py).
    """
    st = _state
    grads = {}
    # Buffers a .grad may not take over without a copy: the caller's root gradients, and (added as
    # they are stored) the buffers already given to another leaf's .grad in this call.
    taken = {id(_owner(g.data)) for g in root_grads if id(g) not in made}
    captured = wanted = None
    if inputs is not None:
        captured = {}
        keys = [t._ctx if t._ctx is not None else id(t) for t in inputs]
        wanted = set(keys)
    prev_mode = st.grad_enabled
    st.grad_enabled = bool(create_graph)
    anomaly = st.anomaly
    try:
        # Every recorded op has a sequence number larger than those of the ops that made its
        # inputs, so taking the largest pending number first visits each op after all of its
        # consumers (as PyTorch's engine does). Only ops that receive a gradient are visited.
        heap = []
        for t, g in zip(roots, root_grads):
            c = t._ctx
            if c is None:
                _deliver_leaf(t, g, captured, wanted, create_graph, taken)
                continue
            prev = grads.get(c)
            if prev is None:
                grads[c] = g
                heappush(heap, (-c.seq, c))
            else:
                grads[c] = prev + g
        while heap:
            op = heappop(heap)[1]
            g = grads.pop(op)
            if op.inputs is None:
                raise _freed(op)
            state = op.__dict__
            hooks = state.get("_hooks")
            if hooks:
                for h in hooks:
                    r = h(g)
                    if r is not None:
                        g = r
            if captured is not None and op in wanted:
                captured[op] = g
                if stop_at_inputs:
                    continue
            if _last_inplace > op.seq:  # something changed in place since op was recorded
                _check_unmodified(op)
            in_grads = op.backward(g)
            inputs_ = op.inputs
            if type(in_grads) is not tuple:
                in_grads = (in_grads,)
            if len(in_grads) != len(inputs_):
                raise AutogradError(
                    f"{op.name}.backward returned {len(in_grads)} gradients for "
                    f"{len(inputs_)} inputs"
                )
            i = 0
            for t, need in zip(inputs_, op.needs_input_grad):
                ig = in_grads[i]
                i += 1
                if ig is None or not need:
                    continue
                if ig.data.shape != t.data.shape:
                    raise AutogradError(
                        f"{op.name}.backward returned a gradient of shape {fmt_shape(ig.shape)} for "
                        f"input {i - 1} of shape {fmt_shape(t.shape)}"
                    )
                if ig.data.dtype is not t.data.dtype and ig.data.dtype != t.data.dtype:
                    ig = ig.to(t.dtype)
                if anomaly:
                    _check_finite(op, i - 1, ig)
                c = t._ctx
                if c is None:
                    _deliver_leaf(t, ig, captured, wanted, create_graph, taken)
                else:  # the same as for the roots above, inline: this is the hot loop
                    prev = grads.get(c)
                    if prev is None:
                        grads[c] = ig
                        heappush(heap, (-c.seq, c))
                    else:
                        grads[c] = prev + ig
            if not retain_graph:
                seq = op.seq
                state.clear()  # saved arrays and inputs; inputs=None marks the op as freed
                op.inputs = None
                op.seq = seq  # a later graph built on this op's output still orders by it
    finally:
        st.grad_enabled = prev_mode
    if captured is None:
        return None
    out = []
    for t, k in zip(inputs, keys):
        g = captured.get(k)
        if g is None and not allow_unused:
            raise AutogradError(
                f"one of the differentiated tensors (shape {fmt_shape(t.shape)}) was not used to "
                "compute the outputs; pass allow_unused=True to get None for it"
            )
        out.append(g)
    return tuple(out)


def _owner(a):
    """The array that owns `a`'s memory (NumPy and CuPy point a view's .base at the owner)."""
    return a if a.base is None else a.base


def _deliver_leaf(t, g, captured, wanted, create_graph, taken):
    if captured is not None:  # grad(): only the requested leaves, .grad untouched
        if id(t) in wanted:
            prev = captured.get(id(t))
            captured[id(t)] = g if prev is None else prev + g
        return
    if not t.requires_grad:
        return
    for h in t._hooks or ():
        r = h(g)
        if r is not None:
            g = r
    tracer = _state.tracer
    if tracer is not None:
        tracer.delivering_grad(t)
    if t.grad is None:
        # A .grad is the user's to modify in place (w.grad.zero_()), so it must own its memory.
        # Take the engine's buffer over when nobody else can see it (like PyTorch's
        # AccumulateGrad); copy read-only broadcast views and buffers another .grad took already
        # (with an op, so that a captured graph makes the copy too).
        if not create_graph:
            owner = id(_owner(g.data))
            if owner in taken or not g.data.flags.writeable:
                g = g.clone()
                owner = id(g.data)
            taken.add(owner)
        t.grad = g
    else:
        t.grad = t.grad + g


def _check_finite(op, i, g):
    if not bool(g.device.xp.isfinite(g.data).all()):
        where = "".join(getattr(op, "_stack", ["(stack not recorded)\n"])[-6:])
        raise AnomalyError(
            f"detect_anomaly: {op.name}.backward produced NaN/Inf in the gradient of its input {i} "
            f"(shape {fmt_shape(g.shape)}, dtype {g.dtype.name}). {op.name} was created at:\n{where}"
        )


def backward(tensors, grad_tensors=None, retain_graph=None, create_graph=False):
    """Accumulate into leaves' `.grad` the gradients of `tensors` (a Tensor or a sequence)."""
    tensors = _as_tuple(tensors)
    grad_tensors, made = _root_grads(tensors, grad_tensors, "backward")
    if retain_graph is None:
        retain_graph = create_graph
    _run_backward(tensors, grad_tensors, retain_graph, create_graph, made=made)


def grad(outputs, inputs, grad_outputs=None, retain_graph=None, create_graph=False, allow_unused=False):
    """The gradients of `outputs` with respect to `inputs`, as a tuple; `.grad` is left alone."""
    outputs = _as_tuple(outputs)
    inputs = _as_tuple(inputs)
    for t in inputs:
        if not t.requires_grad:
            raise AutogradError(
                f"grad: an input (shape {fmt_shape(t.shape)}) does not require grad"
            )
    grad_outputs, made = _root_grads(outputs, grad_outputs, "grad")
    if retain_graph is None:
        retain_graph = create_graph
    return _run_backward(
        outputs, grad_outputs, retain_graph, create_graph, inputs, allow_unused, made
    )


def _as_tuple(x):
    if isinstance(x, (tuple, list)):
        return tuple(x)
    return (x,)


def _root_grads(tensors, grads, where):
    """The root gradients: given ones checked against their tensors, or ones for scalars.

    Also returns the ids of the gradients made here: nobody else holds them, so a leaf's .grad
    may take them over without a copy.
    """
    made = set()
    if grads is None:
        grads = (None,) * len(tensors)
    else:
        grads = _as_tuple(grads)
        if len(grads) != len(tensors):
            raise ShapeError(f"{where}: got {len(grads)} gradients for {len(tensors)} tensors")
    out = []
    for t, g in zip(tensors, grads):
        if not t.requires_grad:
            raise AutogradError(
                f"{where}: tensor of shape {fmt_shape(t.shape)} does not require grad and has no "
                "grad_fn (was it made under no_grad, or from tensors without requires_grad=True?)"
            )
        if g is None:
            if t.numel() != 1:
                raise AutogradError(
                    f"{where}: gradient can be implicitly created only for a scalar output, got "
                    f"shape {fmt_shape(t.shape)}; pass gradient= of that shape"
                )
            g = Tensor._make(t.device.xp.ones(t.shape, dtype=t.data.dtype), t.device, False, None)
            made.add(id(g))
            tracer = _state.tracer
            if tracer is not None:  # the seed of a captured backward is a foldable constant
                tracer.note_constant(g)
        else:
            if not isinstance(g, Tensor):
                g = Tensor._make(t.device.xp.asarray(g, dtype=t.data.dtype), t.device, False, None)
            if g.shape != t.shape:
                raise ShapeError(
                    f"{where}: gradient of shape {fmt_shape(g.shape)} for a tensor of shape "
                    f"{fmt_shape(t.shape)}"
                )
            if g.device is not t.device:
                raise DeviceError(f"{where}: gradient on {g.device} for a tensor on {t.device}")
        out.append(g)
    return out, made


# -- gradcheck -------------------------------------------------------------------------------


def gradcheck(fn, inputs, eps=1e-6, atol=1e-5, rtol=1e-3, seed=0, raise_exception=True) -> bool:
    """Check the backward of `fn` against float64 central differences.

    `inputs` are Tensors (those with requires_grad are checked; use float64). For a random
    cotangent v, the analytic vector-Jacobian product v^T J (one backward) must match the numerical
    one, element by element: |analytic - numeric| <= atol + rtol * |numeric|.
    """
    from prunus.dtypes import float64

    inputs = _as_tuple(inputs)
    checked = [t for t in inputs if isinstance(t, Tensor) and t.requires_grad]
    if not checked:
        raise GradcheckError("gradcheck: no input requires grad")
    for t in checked:
        if t.dtype is not float64:
            raise GradcheckError(
                f"gradcheck: inputs must be float64 for central differences, got {t.dtype.name}"
            )
    rng = np.random.default_rng(seed)
    outs = _as_tuple(fn(*inputs))
    vs = [rng.standard_normal(o.shape) for o in outs]

    def weighted(outputs):
        total = 0.0
        for o, v in zip(_as_tuple(outputs), vs):
            total += float(np.sum(np.asarray(o.detach().numpy(), dtype=np.float64) * v))
        return total

    vt = [Tensor._make(o.device.xp.asarray(v, dtype=o.data.dtype), o.device, False, None) for o, v in zip(outs, vs)]
    diff = [o for o in outs if o.requires_grad]
    if not diff:
        raise GradcheckError("gradcheck: no output requires grad")
    analytic = grad(
        [o for o in outs if o.requires_grad],
        checked,
        [v for o, v in zip(outs, vt) if o.requires_grad],
        allow_unused=True,
    )
    for k, (t, a) in enumerate(zip(checked, analytic)):
        a = np.zeros(t.shape) if a is None else np.asarray(a.numpy(), dtype=np.float64)
        numeric = np.zeros(t.shape)
        buf = t.data  # perturb the input's own buffer in place, then restore it
        with no_grad():
            for idx in np.ndindex(*t.shape):
                orig = buf[idx].item()
                buf[idx] = orig + eps
                plus = weighted(fn(*inputs))
                buf[idx] = orig - eps
                minus = weighted(fn(*inputs))
                buf[idx] = orig
                numeric[idx] = (plus - minus) / (2 * eps)
        bad = np.abs(a - numeric) > atol + rtol * np.abs(numeric)
        if bad.any():
            j = int(np.argmax(np.abs(a - numeric) * bad))
            msg = (
                f"gradcheck: gradient of input {k} (shape {fmt_shape(t.shape)}) disagrees at flat "
                f"index {j}: analytic {a.reshape(-1)[j]:.10g}, numerical {numeric.reshape(-1)[j]:.10g} "
                f"({int(bad.sum())} of {bad.size} elements off)"
            )
            if raise_exception:
                raise GradcheckError(msg)
            return False
    return True
