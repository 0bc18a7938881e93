"""`prunus.compile`: a function or Module that runs as a captured, optimized graph.

The first call with a new signature (the shapes, dtypes, devices and requires_grad of the tensor
arguments, the other arguments' values, the grad mode) traces the function, which also runs it, eagerly; later
calls with that signature run the graph, after checking the guards recorded while tracing. A
changed signature or a failed guard traces again (like tf.function): `cache` holds the graphs by
signature and `retraces` counts the traces after the first.

Results carry no autograd history, except when the function returns a tensor with history (a
compiled Module called with grad on, for an eager loss and backward): then the graph also holds
that tensor's backward and each call is one differentiable op (differentiable.py).
"""

from __future__ import annotations

from prunus import autograd
from prunus.errors import ArgumentError, CaptureError
from prunus.graph import differentiable
from prunus.graph.capture import capture
from prunus.graph.executor import Executor
from prunus.tensor import Tensor


def _signature(args, kwargs):
    def one(a):
        if isinstance(a, Tensor):
            return ("T", a.shape, a.data.dtype.str, str(a.device), a.requires_grad)
        try:
            hash(a)
        except TypeError:
            raise CaptureError(
                f"a compiled function got an argument of type {type(a).__name__}, which can't be "
                "part of its cache key; pass tensors, or hashable Python values"
            ) from None
        return ("P", type(a).__name__, a)

    return (tuple(one(a) for a in args), tuple((k, one(v)) for k, v in sorted(kwargs.items())),
            autograd._state.grad_enabled)


class _Entry:
    __slots__ = ("executor", "graph")

    def __init__(self, graph):
        self.graph = graph
        self.executor = Executor(graph)

    def guards_hold(self) -> bool:
        return all(fn() == expected for _, fn, expected in self.graph.guards)


class Compiled:
    """The compiled form of `fn` (see the module docstring). `passes`: names of optimization
    passes to run on each new graph (None: the defaults of prunus.graph.passes)."""

    def __init__(self, fn, passes=None):
        if not callable(fn):
            raise ArgumentError(f"prunus.compile: expected a function or Module, got {type(fn).__name__}")
        self.fn = fn
        self.passes = passes
        self.cache: dict = {}  # signature -> [entries]
        self.traces = 0
        self.last_graph = None
        self.not_cached: list[str] = []  # why the latest trace was not kept, if it wasn't

    @property
    def retraces(self) -> int:
        return max(0, self.traces - 1)

    def __call__(self, *args, **kwargs):
        if autograd._state.tracer is not None:
            # called inside another capture (a compiled step calling a compiled model, an ONNX
            # export of a compiled model): its ops become part of the outer graph
            return self.fn(*args, **kwargs)
        key = _signature(args, kwargs)
        for entry in self.cache.get(key, ()):
            if entry.guards_hold():
                if entry.graph.backward is not None:
                    return differentiable.call(entry, args, kwargs)
                return entry.executor.run(args, kwargs)
        graph, result, reasons = capture(self.fn, *args, **kwargs)
        self.traces += 1
        self.not_cached = reasons
        if not reasons:
            from prunus.graph.passes import run_passes

            run_passes(graph, self.passes)
            self.cache.setdefault(key, []).append(_Entry(graph))
        self.last_graph = graph
        if graph.backward is not None:  # the eager result, whose history the caller differentiates
            return result
        return _detach(result)  # as a run of the graph returns it: no autograd history

    def graph_for(self, *args, **kwargs):
        """The cached graph these arguments would run (None when they would trace)."""
        for entry in self.cache.get(_signature(args, kwargs), ()):
            if entry.guards_hold():
                return entry.graph
        return None


class CompiledModule(Compiled):
    """A compiled Module: calls run the graph; everything else (parameters(), train(), ...)
    reaches the module."""

    def __init__(self, module, passes=None):
        super().__init__(module, passes)
        self.module = module

    def __getattr__(self, name):
        module = self.__dict__.get("module")  # absent while copy/pickle build an empty instance
        if module is None:
            raise AttributeError(name)
        attr = getattr(module, name)
        if callable(attr) and getattr(attr, "__self__", None) is module:
            # methods that return the module (train, eval, to, requires_grad_, ...) return the
            # compiled module, so `prunus.compile(model).eval()` stays compiled
            def method(*args, **kwargs):
                out = attr(*args, **kwargs)
                return self if out is module else out

            method.__name__, method.__doc__ = attr.__name__, attr.__doc__
            return method
        return attr

    def __deepcopy__(self, memo):
        # a copy of the module, compiled afresh: the cached graphs read the original's tensors
        import copy

        return CompiledModule(copy.deepcopy(self.module, memo), self.passes)

    def __repr__(self) -> str:
        return f"CompiledModule({self.module!r})"


def compile(fn_or_module, passes=None):
    """Compile a function or Module into a static graph (see prunus/graph/compile.py)."""
    from prunus.nn.module import Module

    if isinstance(fn_or_module, Module):
        return CompiledModule(fn_or_module, passes)
    return Compiled(fn_or_module, passes)


def _detach(x):
    if isinstance(x, Tensor):
        return x.detach() if x.requires_grad else x
    if type(x) in (tuple, list):
        return type(x)(_detach(i) for i in x)
    if type(x) is dict:
        return {k: _detach(v) for k, v in x.items()}
    return x
