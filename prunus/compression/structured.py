"""Structured (filter) pruning: remove whole output channels of Conv2d layers, by the L1 norm of
their filters (Li et al., "Pruning Filters for Efficient ConvNets", ICLR 2017), and shrink what
reads them -- the BatchNorm2d in between and the next Conv2d's input channels, or the first Linear
after a flatten (its input features in channel-major blocks) -- so the model really gets smaller
and faster. Unstructured (per-weight) pruning is in pruning.py.

Which layer reads a convolution's channels is found by running the model once on an example
input and following the data: forward hooks record what each leaf layer got and returned, the
recorded autograd graph says which ops use each activation. A channel can be removed only along
a plain chain conv -> [BatchNorm2d, zero-preserving activations, pooling, dropout] -> conv, or
-> flatten -> Linear. A branch (a residual connection, a concatenation) is refused with an
ArgumentError naming the layer: removing channels there would need the other branch cut alike.
ResNet's BasicBlock conv1 -> bn1 -> relu -> conv2 is such a chain, so those convolutions can be
pruned; a block's conv2 and the stem, which feed a residual sum, cannot.

The pruned model computes what the original computes with the removed channels zeroed (their
filters, biases and BatchNorm scale and shift set to 0): the removed channels would be 0 at every
position, and every layer on the chain maps 0 to 0. Equal up to float rounding, since a matmul
over fewer terms may add in another order.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from prunus import autograd
from prunus.autograd import enable_grad, no_grad
from prunus.compression.pruning import PruningMask, _find, _host
from prunus.errors import ArgumentError, fmt_shape
from prunus.nn.activation import ELU, GELU, LeakyReLU, ReLU, Tanh
from prunus.nn.conv import Conv2d
from prunus.nn.dropout import Dropout
from prunus.nn.linear import Flatten, Identity, Linear
from prunus.nn.module import Module, Parameter
from prunus.nn.normalization import BatchNorm2d
from prunus.nn.parametrize import is_parametrized
from prunus.nn.pooling import AdaptiveAvgPool2d, AvgPool2d, MaxPool2d
from prunus.tensor import Tensor

__all__ = [
    "ChannelPruning",
    "count_macs",
    "filter_l1_norms",
    "prune_channels",
    "select_channels",
]

# layers a pruned channel passes through unchanged in position and that keep a 0 input 0
# (Sigmoid would turn it into 0.5, so it is not here): on (N, C, H, W) ...
_CHANNELWISE = (ReLU, LeakyReLU, ELU, GELU, Tanh, MaxPool2d, AvgPool2d, AdaptiveAvgPool2d, Dropout, Identity)
# ... and on the flattened (N, C*H*W) activations, elementwise only
_ELEMENTWISE = (ReLU, LeakyReLU, ELU, GELU, Tanh, Dropout, Identity)
_RESHAPES = ("Reshape", "Flatten", "View", "Contiguous", "Clone")


@dataclass
class ChannelPruning:
    """What prune_channels did to one convolution: `layer` lost the output channels `removed`
    (indices into its original channels) and kept `kept`; `next_layer` (a Conv2d or Linear) lost
    the matching inputs; `batchnorms` lists the BatchNorm2d layers shrunk in between."""

    layer: str
    next_layer: str
    batchnorms: tuple
    kept: np.ndarray
    removed: np.ndarray

    @property
    def channels_before(self) -> int:
        return int(self.kept.size + self.removed.size)

    @property
    def channels_after(self) -> int:
        return int(self.kept.size)


# -- tracing --------------------------------------------------------------------------------------


@dataclass
class _Call:
    path: str
    module: Module
    inp: object
    out: object
    start: int  # autograd sequence numbers around the call: ops with start < seq < end are its own
    end: int


def _is_leaf(m) -> bool:
    # a parametrized layer has the submodule `parametrizations`; it is still a leaf layer
    return all(name == "parametrizations" for name, _ in m.named_children())


def _example(example_input, model) -> Tensor:
    if isinstance(example_input, Tensor):
        return example_input.detach()
    if isinstance(example_input, (tuple, list)) and example_input and \
            all(isinstance(s, (int, np.integer)) and not isinstance(s, bool) and s > 0 for s in example_input):
        # zeros in the model's dtype, on its device: the trace needs the ops, not the values
        p = next(iter(model.parameters()), None)
        x = Tensor(np.zeros(tuple(int(s) for s in example_input), dtype=np.float32))
        return x if p is None else x.to(device=p.device, dtype=p.dtype)
    raise ArgumentError(
        f"example_input must be a Tensor or a full input shape such as (1, 1, 28, 28), got "
        f"{example_input!r}"
    )


class _Trace:
    """One forward of `model` on `x` with every leaf layer's input/output and the autograd graph."""

    def __init__(self, model, x):
        self.calls: list[_Call] = []
        modes = {m: m.training for m in model.modules()}
        stack, handles = [], []

        def pre(mod, args, path):
            stack.append(autograd._next_seq())

        def post(mod, args, out, path):
            self.calls.append(_Call(path, mod, args[0] if args else None, out, stack.pop(), autograd._next_seq()))

        try:
            for path, m in model.named_modules():
                # the parametrizations' own modules (PruningMask, ...) work on weights, not data
                if _is_leaf(m) and m is not model and "parametrizations" not in path.split("."):
                    handles.append(m.register_forward_pre_hook(lambda mod, a, p=path: pre(mod, a, p)))
                    handles.append(m.register_forward_hook(lambda mod, a, o, p=path: post(mod, a, o, p)))
            model.eval()  # running BatchNorm statistics, no dropout: a deterministic forward
            # an input that requires grad makes every op record itself, frozen parameters or not
            x = Tensor._make(x.data, x.device, False, None).requires_grad_(True)
            with enable_grad():
                out = model(x)
        finally:
            for h in handles:
                h.remove()
            for m, mode in modes.items():
                m.training = mode
        if not isinstance(out, Tensor):
            raise ArgumentError(
                f"prune_channels: the model must return one Tensor to be traced, got {type(out).__name__}"
            )
        self.output = out
        # who uses each tensor, from the graph reachable from the output
        self.consumers: dict[int, list] = {}
        self.output_of: dict[int, Tensor] = {}
        seen, todo = set(), [out]
        while todo:
            t = todo.pop()
            op = t._ctx
            if op is None or id(op) in seen:
                continue
            seen.add(id(op))
            self.output_of[id(op)] = t
            for inp in op.inputs:
                self.consumers.setdefault(id(inp), []).append(op)
                todo.append(inp)

    def call_of(self, op):
        for c in self.calls:
            if c.start < op.seq < c.end:
                return c
        return None

    def calls_of(self, module) -> list:
        return [c for c in self.calls if c.module is module]


def _refuse(path, why) -> ArgumentError:
    return ArgumentError(f"prune_channels: can't remove output channels of layer {path!r}: {why}")


def _follow(trace: _Trace, conv_call: _Call):
    """(next layer's call, [BatchNorm2d calls], H*W at the flatten or None) along the chain that
    reads conv_call's output channels; ArgumentError when it is not a plain chain."""
    path, conv = conv_call.path, conv_call.module
    cur, bns, hw = conv_call.out, [], None
    while True:
        if cur is trace.output:
            raise _refuse(path, "its output is the model's output; there is no next layer to shrink")
        users = trace.consumers.get(id(cur), [])
        places = {}
        for op in users:
            c = trace.call_of(op)
            places[id(c) if c is not None else id(op)] = (c, op)
        if not places:
            raise _refuse(path, "its output reaches no layer")
        if len(places) > 1:
            names = [repr(c.path) if c is not None else f"the {op.name} op outside any layer"
                     for c, op in places.values()]
            raise _refuse(path, f"its channels are used in {len(places)} places ({', '.join(names)}), a "
                                "branch such as a residual connection; only a plain chain to the next "
                                "Conv2d or Linear can be shrunk")
        c, op = next(iter(places.values()))
        if c is None:  # an op written in a forward() between layers, e.g. x.flatten(1)
            out = trace.output_of[id(op)]
            if hw is None and _flattens(op.name, cur, out, conv.out_channels):
                hw, cur = cur.shape[2] * cur.shape[3], out
                continue
            if hw is not None and op.name in _RESHAPES and tuple(out.shape) == tuple(cur.shape):
                cur = out
                continue
            raise _refuse(path, f"its channels reach a {op.name} op outside any layer, through which "
                                "they can't be followed")
        m = c.module
        if c.inp is not cur:
            raise _refuse(path, f"its channels reach layer {c.path!r} ({type(m).__name__}) other than as "
                                "its first input")
        if hw is None and isinstance(m, Conv2d):
            if m.groups != 1:
                raise _refuse(path, f"the next layer {c.path!r} is a grouped convolution (groups={m.groups})")
            return c, bns, None
        if hw is not None and isinstance(m, Linear):
            return c, bns, hw
        if hw is None and isinstance(m, BatchNorm2d):
            bns.append(c)
        elif hw is None and isinstance(m, Flatten) and _flattens("Flatten", cur, c.out, conv.out_channels):
            hw = cur.shape[2] * cur.shape[3]
        elif not isinstance(m, _ELEMENTWISE if hw is not None else _CHANNELWISE):
            what = "flattened " if hw is not None else ""
            raise _refuse(path, f"its {what}channels reach layer {c.path!r} ({type(m).__name__}), "
                                "through which they can't be followed (supported: BatchNorm2d, "
                                "ReLU-like activations, pooling, dropout, flatten, then Conv2d or Linear)")
        if hw is None and (cur.ndim != 4 or c.out.ndim != 4 or c.out.shape[1] != conv.out_channels):
            raise _refuse(path, f"layer {c.path!r} changes its channels {fmt_shape(cur.shape)} -> "
                                f"{fmt_shape(c.out.shape)}")
        cur = c.out


def _flattens(opname, x, out, channels) -> bool:
    """x (N, C, H, W) -> out (N, C*H*W), channel-major: what Flatten / x.flatten(1) / reshape do."""
    return (opname in _RESHAPES and x.ndim == 4 and out.ndim == 2 and x.shape[1] == channels
            and tuple(out.shape) == (x.shape[0], x.shape[1] * x.shape[2] * x.shape[3]))


# -- choosing channels ------------------------------------------------------------------------------


def filter_l1_norms(conv) -> np.ndarray:
    """The L1 norm of each output filter of a Conv2d (of the weight it uses: pruned weights
    count 0), as float64 of shape (out_channels,)."""
    if not isinstance(conv, Conv2d):
        raise ArgumentError(f"filter_l1_norms: expected a Conv2d, got {type(conv).__name__}")
    with no_grad():
        w = _host(conv.weight).astype(np.float64)
    return np.abs(w).reshape(w.shape[0], -1).sum(axis=1)


def select_channels(conv, amount, where: str = "select_channels") -> np.ndarray:
    """The sorted indices of the output channels of `conv` to keep when removing `amount` of
    them: a float in [0, 1) is a fraction (round(amount * out_channels) removed), an int >= 0 a
    count. The filters with the smallest L1 norm go first; equal norms: the lower index first.
    At least one channel must stay."""
    n = conv.out_channels
    if isinstance(amount, bool) or not isinstance(amount, (int, float, np.integer, np.floating)):
        raise ArgumentError(f"{where}: the amount must be a fraction (float) or a count (int), got {amount!r}")
    if isinstance(amount, (int, np.integer)):
        k = int(amount)
        if not 0 <= k < n:
            raise ArgumentError(f"{where}: can remove 0 to {n - 1} of the {n} channels, got a count of {k}")
    else:
        if not (math.isfinite(amount) and 0.0 <= amount < 1.0):
            raise ArgumentError(f"{where}: a fraction must be in [0, 1), got {amount!r}")
        k = math.floor(amount * n + 0.5)
        if k >= n:
            raise ArgumentError(f"{where}: removing {amount!r} of {n} channels leaves none")
    order = np.argsort(filter_l1_norms(conv), kind="stable")
    return np.sort(order[k:])


# -- shrinking tensors ---------------------------------------------------------------------------------


def _take(t: Tensor, index: np.ndarray, axis: int) -> Tensor:
    xp = t.device.xp
    return Tensor._make(xp.take(t.data, xp.asarray(index), axis=axis), t.device, False, None)


def _shrink(module, name, index, axis, path) -> None:
    """Keep `index` along `axis` of module.<name>: a parameter, a buffer, or a weight under a
    PruningMask (its original and mask alike). New Parameter objects: make the optimizer after."""
    d = module.__dict__
    if is_parametrized(module, name):
        pm = _find(module, name, PruningMask)
        plist = module.parametrizations[name]
        if pm is None or len(plist) != 1:
            raise ArgumentError(
                f"prune_channels: {name!r} of layer {path!r} has a parametrization other than a "
                "PruningMask (quantized?); prune channels before quantizing"
            )
        orig = plist.original
        plist.original = Parameter(_take(orig, index, axis), requires_grad=orig.requires_grad)
        pm.mask = _take(pm.mask, index, axis)
        return
    p = d["_parameters"].get(name)
    if p is not None:
        setattr(module, name, Parameter(_take(p, index, axis), requires_grad=p.requires_grad))
        return
    b = d["_buffers"].get(name)
    if b is not None:
        module.register_buffer(name, _take(b, index, axis))


def _linear_columns(kept, hw) -> np.ndarray:
    # a flattened (C, H, W) activation is channel-major: channel c is features c*hw .. c*hw+hw-1
    return (kept[:, None] * hw + np.arange(hw)[None, :]).reshape(-1)


# -- the entry point -------------------------------------------------------------------------------------


def prune_channels(model, amount, *, example_input, layers=None) -> list:
    """Remove output channels of Conv2d layers of `model` in place, shrinking what reads them.

    amount  a fraction in [0, 1) or a count (int) of the channels to remove from every layer in
            `layers`, or a dict {layer path: fraction or count} (then `layers` is its keys)
    layers  Conv2d layer paths (as in model.named_modules()); default: every Conv2d of the model
    example_input  a Tensor the model accepts, or its full shape, e.g. (1, 1, 28, 28): the model
            runs on it once (in eval mode) to find which layer reads each convolution's output

    Filters go by L1 norm (smallest first), each layer ranked on the original model. Each pruned
    Conv2d loses its filters and biases; the BatchNorm2d layers after it lose those features
    (weight, bias, running mean and variance); the next Conv2d loses those input channels, or the
    next Linear (after a flatten) the matching channel-major blocks of input features. A weight
    under a PruningMask is shrunk with its mask; quantized layers are refused. The layers get new
    Parameter objects: create the optimizer afterwards. A layer whose channels can't be followed
    through a plain chain (a residual connection, a concatenation, the model's output) raises
    ArgumentError naming it, before anything is changed. Returns a ChannelPruning per layer.
    """
    if not isinstance(model, Module):
        raise ArgumentError(f"prune_channels: expected a Module, got {type(model).__name__}")
    convs = {p: m for p, m in model.named_modules() if isinstance(m, Conv2d)}
    if isinstance(amount, dict):
        if layers is not None:
            raise ArgumentError("prune_channels: give layers= or a dict amount, not both")
        plan = dict(amount)
    else:
        names = list(convs) if layers is None else ([layers] if isinstance(layers, str) else list(layers))
        plan = dict.fromkeys(names, amount)
    if not plan:
        raise ArgumentError(f"prune_channels: {type(model).__name__} has no Conv2d layer to prune")
    unknown = [p for p in plan if p not in convs]
    if unknown:
        raise ArgumentError(
            f"prune_channels: no Conv2d layer {', '.join(map(repr, unknown))} (Conv2d layers: "
            f"{', '.join(convs) or 'none'})"
        )
    trace = _Trace(model, _example(example_input, model))

    # plan everything first, so a refusal leaves the model untouched
    steps = []
    for path, amt in plan.items():
        conv = convs[path]
        calls = trace.calls_of(conv)
        if len(calls) != 1:
            raise _refuse(path, "it is not used in the forward" if not calls else
                          f"it is called {len(calls)} times in one forward (shared weights)")
        if conv.groups != 1:
            raise _refuse(path, f"it is a grouped convolution (groups={conv.groups})")
        nxt, bns, hw = _follow(trace, calls[0])
        for c in [nxt, *bns]:
            if len(trace.calls_of(c.module)) != 1:
                raise _refuse(path, f"layer {c.path!r} after it is called more than once per forward")
        for c in bns:
            if is_parametrized(c.module):
                raise _refuse(path, f"its BatchNorm2d {c.path!r} is parametrized")
        for m, where in ((conv, path), (nxt.module, nxt.path)):
            if is_parametrized(m) and any(_find(m, n, PruningMask) is None
                                          for n in m.parametrizations):
                raise _refuse(path, f"layer {where!r} is quantized (or otherwise parametrized); "
                                    "prune channels before quantizing")
        kept = select_channels(conv, amt, where=f"prune_channels({path!r})")
        removed = np.setdiff1d(np.arange(conv.out_channels), kept)
        steps.append((path, conv, nxt, bns, hw, kept, removed))

    results = []
    with no_grad():
        for path, conv, nxt, bns, hw, kept, removed in steps:
            for name in ("weight", "bias"):
                _shrink(conv, name, kept, 0, path)
            conv.out_channels = int(kept.size)
            for c in bns:
                for name in ("weight", "bias", "running_mean", "running_var"):
                    _shrink(c.module, name, kept, 0, c.path)
                c.module.num_features = int(kept.size)
            m = nxt.module
            if hw is None:
                _shrink(m, "weight", kept, 1, nxt.path)
                m.in_channels = int(kept.size)
            else:
                _shrink(m, "weight", _linear_columns(kept, hw), 1, nxt.path)
                m.in_features = int(kept.size * hw)
            results.append(ChannelPruning(path, nxt.path, tuple(c.path for c in bns), kept, removed))
    return results


def count_macs(model, example_input) -> dict:
    """Multiply-accumulates of one forward on `example_input` (a Tensor or a full shape) per
    Conv2d and Linear layer ({path: MACs}); FLOPs are about twice as many. Counted with forward
    hooks, in eval mode, without gradients."""
    x = _example(example_input, model)
    macs, handles = {}, []
    modes = {m: m.training for m in model.modules()}

    def hook(mod, args, out, path):
        if isinstance(mod, Conv2d):
            kh, kw = mod.kernel_size
            n = int(np.prod(out.shape)) * (mod.in_channels // mod.groups) * kh * kw
        else:
            n = int(np.prod(out.shape)) * mod.in_features
        macs[path] = macs.get(path, 0) + n

    try:
        for path, m in model.named_modules():
            if isinstance(m, (Conv2d, Linear)):
                handles.append(m.register_forward_hook(lambda mod, a, o, p=path: hook(mod, a, o, p)))
        model.eval()
        with no_grad():
            model(x)
    finally:
        for h in handles:
            h.remove()
        for m, mode in modes.items():
            m.training = mode
    return macs
