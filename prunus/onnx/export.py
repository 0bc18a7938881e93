"""`prunus.onnx.export`: a Module or function captured into prunus's graph IR (eval mode, no_grad),
converted node by node to ONNX by the converters of prunus/onnx/converters/, and written atomically.

The onnx package is imported only when export runs. Dynamic axes are traced, not guessed: the
function is captured once more per dynamic axis with that axis one larger, and every shape and
shape-dependent attribute is compared across the captures (see converters/_context.py).
"""

from __future__ import annotations

import inspect
import os
from contextlib import contextmanager

import numpy as np

from prunus import __version__, autograd
from prunus._fileio import atomic_write
from prunus.errors import ArgumentError, MissingDependencyError, PrunusError, fmt_shape
from prunus.graph.capture import capture
from prunus.graph.ir import NODE
from prunus.onnx.converters._context import Context, signatures
from prunus.onnx.converters._fold import fold_constants
from prunus.tensor import Tensor

INSTALL_HINT = 'pip install "prunus[onnx]"'
MIN_OPSET = 13  # Squeeze/Unsqueeze/ReduceSum axes as inputs, Softmax over one axis


def _import_onnx():
    try:
        import onnx
        import onnx.helper
        import onnx.numpy_helper  # the submodules the context uses, loaded explicitly
    except ImportError as e:
        raise MissingDependencyError(
            f"ONNX export needs the onnx package ({e}); install it with: {INSTALL_HINT}"
        ) from None
    return onnx


def export(model, example_inputs, f, opset: int = 17, dynamic_axes=None, input_names=None,
           output_names=None):
    """Export `model` (a prunus.nn.Module or a function of tensors) to the ONNX file `f` (a path,
    or a binary file object) and return the onnx.ModelProto.

    The model runs once on `example_inputs` (a Tensor or a tuple of arguments; NumPy arrays are
    taken as tensors) in eval mode under no_grad, while prunus.graph.capture records it; modules'
    train/eval modes are restored afterwards. Parameters, buffers and constants become
    initializers, tensor arguments graph inputs, returned tensors graph outputs; prunus.cond
    becomes an ONNX If and prunus.while_loop a Loop (converters/control_flow.py).

    input_names / output_names: names for the graph's inputs and outputs (default: the forward's
    parameter names, and "output" or "output_0", "output_1", ...). dynamic_axes: as in
    torch.onnx.export, {name: {dim: "symbol"}} or {name: [dim, ...]}, for inputs and outputs (to
    name their dims). The model runs once more per input symbol with that axis one larger, and
    export refuses (ArgumentError) what would not hold at other sizes: a different graph, a size
    Python computed into an attribute or a constant. opset: 13 up to the newest the installed
    onnx knows (default 17). Errors: ArgumentError for what can't be exported (the op, its shapes
    and the ops that can are named), MissingDependencyError without the onnx package.
    """
    _check_opset_type(opset)
    onnx = _import_onnx()
    newest = onnx.defs.onnx_opset_version()
    if not MIN_OPSET <= opset <= newest:
        raise ArgumentError(
            f"onnx.export: opset {opset} is not supported; prunus exports opsets {MIN_OPSET} to "
            f"{newest} (the newest the installed onnx {onnx.__version__} knows)"
        )
    args = _example_args(example_inputs)
    fn, module = _callable(model)
    tensor_pos = [i for i, a in enumerate(args) if isinstance(a, Tensor)]
    in_names = _input_names(fn, module, tensor_pos, input_names)
    dyn_in, dyn_rest = _parse_dynamic_axes(dynamic_axes, in_names, [args[i] for i in tensor_pos])
    with _eval_mode(module), autograd.no_grad():
        graph, _, _ = capture(fn, *args)
        variants = [_capture_resized(fn, args, tensor_pos, in_names, dyn_in, sym, graph)
                    for sym in _symbols(dyn_in)]
    out_names = _output_names(graph, output_names)
    dyn_out = _output_axes(dyn_rest, out_names, in_names)
    proto = _build(onnx, graph, variants, opset, in_names, out_names, dyn_in, dyn_out,
                   _state_names(module), _name_of(model))
    data = proto.SerializeToString()
    if hasattr(f, "write"):
        f.write(data)
    else:
        atomic_write(os.fspath(f), data)
    return proto


# -- arguments ------------------------------------------------------------------------------------


def _check_opset_type(opset) -> None:
    if isinstance(opset, bool) or not isinstance(opset, (int, np.integer)):
        raise ArgumentError(
            f"onnx.export: opset must be an int, got {type(opset).__name__} {opset!r}"
        )


def _example_args(example_inputs) -> tuple:
    items = example_inputs if isinstance(example_inputs, (tuple, list)) else (example_inputs,)
    out = []
    for a in items:
        if isinstance(a, np.ndarray):
            from prunus.creation import tensor

            a = tensor(a)
        out.append(a)
    if not any(isinstance(a, Tensor) for a in out):
        raise ArgumentError(
            "onnx.export: example_inputs must hold at least one Tensor, got "
            f"{type(example_inputs).__name__}"
        )
    return tuple(out)


def _callable(model):
    from prunus.nn.module import Module

    if isinstance(model, Module):
        return model, model
    if not callable(model):
        raise ArgumentError(
            f"onnx.export: expected a Module or a function, got {type(model).__name__}"
        )
    return model, None


def _name_of(model) -> str:
    return type(model).__name__ if not inspect.isfunction(model) else model.__name__


def _input_names(fn, module, tensor_pos, given):
    if given is not None:
        given = list(given)
        if len(given) != len(tensor_pos) or not all(isinstance(n, str) and n for n in given):
            raise ArgumentError(
                f"onnx.export: input_names must be {len(tensor_pos)} non-empty strings, one per "
                f"tensor input, got {given!r}"
            )
        names = given
    else:
        try:
            sig = inspect.signature(module.forward if module else fn)
            params = [p for p in sig.parameters.values()
                      if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
        except (TypeError, ValueError):
            params = []
        names = [params[i].name if i < len(params) else f"input_{i}" for i in tensor_pos]
    if len(set(names)) != len(names):
        raise ArgumentError(f"onnx.export: input names must be distinct, got {names}")
    return names


def _output_names(graph, given):
    n = len(graph.outputs)
    if n == 0:
        raise ArgumentError("onnx.export: the model returned no tensors to export")
    if given is None:
        return ["output"] if n == 1 else [f"output_{k}" for k in range(n)]
    given = list(given)
    if len(given) != n or not all(isinstance(x, str) and x for x in given):
        raise ArgumentError(
            f"onnx.export: output_names must be {n} non-empty strings, one per returned tensor, "
            f"got {given!r}"
        )
    if len(set(given)) != n:
        raise ArgumentError(f"onnx.export: output names must be distinct, got {given}")
    return given


def _axes_spec(name, spec, ndim=None):
    """{dim: symbol} from a dict or a list of dims (symbols then default to name_dimD)."""
    if isinstance(spec, dict):
        items = spec.items()
    elif isinstance(spec, (list, tuple)):
        items = [(d, f"{name}_dim{d}") for d in spec]
    else:
        raise ArgumentError(
            f"onnx.export: dynamic_axes[{name!r}] must be a dict {{dim: name}} or a list of dims, "
            f"got {type(spec).__name__}"
        )
    out = {}
    for d, sym in items:
        if isinstance(d, bool) or not isinstance(d, int) or not isinstance(sym, str) or not sym:
            raise ArgumentError(
                f"onnx.export: dynamic_axes[{name!r}] maps dims (ints) to names (strings), got "
                f"{d!r}: {sym!r}"
            )
        if ndim is not None:
            if not -ndim <= d < ndim:
                raise ArgumentError(
                    f"onnx.export: dynamic_axes[{name!r}] names dim {d}, out of range for "
                    f"{ndim} dims"
                )
            d %= ndim
        out[d] = sym
    return out


def _parse_dynamic_axes(dynamic_axes, in_names, tensors):
    """({input index: {dim: symbol}}, {other name: spec}) from torch-style dynamic_axes."""
    if dynamic_axes is None:
        return {}, {}
    if not isinstance(dynamic_axes, dict):
        raise ArgumentError(
            f"onnx.export: dynamic_axes must be a dict, got {type(dynamic_axes).__name__}"
        )
    dyn_in, rest = {}, {}
    for name, spec in dynamic_axes.items():
        if name in in_names:
            k = in_names.index(name)
            axes = _axes_spec(name, spec, tensors[k].ndim)
            for d in axes:
                if tensors[k].shape[d] == 0:
                    raise ArgumentError(
                        f"onnx.export: dynamic axis {d} of input {name!r} has size 0 in the "
                        "example; give an example with a nonzero size"
                    )
            dyn_in[k] = axes
        else:
            rest[name] = spec
    sizes = {}
    for k, axes in dyn_in.items():
        for d, sym in axes.items():
            n = tensors[k].shape[d]
            if sizes.setdefault(sym, (n, in_names[k], d))[0] != n:
                m, other, od = sizes[sym]
                raise ArgumentError(
                    f"onnx.export: dynamic axis {sym!r} has size {m} at dim {od} of {other!r} but "
                    f"{n} at dim {d} of {in_names[k]!r} in the example inputs"
                )
    return dyn_in, rest


def _symbols(dyn_in) -> list:
    seen = []
    for axes in dyn_in.values():
        for sym in axes.values():
            if sym not in seen:
                seen.append(sym)
    return seen


def _output_axes(rest, out_names, in_names):
    out = {}
    for name, spec in rest.items():
        if name not in out_names:
            raise ArgumentError(
                f"onnx.export: dynamic_axes names {name!r}, which is neither an input "
                f"({', '.join(in_names)}) nor an output ({', '.join(out_names)})"
            )
        out[out_names.index(name)] = spec  # checked against the output's dims in _build
    return out


def _state_names(module) -> dict:
    if module is None:
        return {}
    names = {}
    for name, t in list(module.named_parameters()) + list(module.named_buffers()):
        names.setdefault(id(t), name)
    return names


@contextmanager
def _eval_mode(module):
    """Every module in eval mode for the capture, then each back in its own mode (train(mode)
    on the root would give every submodule the root's)."""
    modes = [(m, m.training) for m in module.modules()] if module is not None else []
    for m, _ in modes:
        m.__dict__["training"] = False  # as Module.train sets it
    try:
        yield
    finally:
        for m, mode in modes:
            m.__dict__["training"] = mode


# -- dynamic axes: one more capture per symbol ---------------------------------------------------


def _capture_resized(fn, args, tensor_pos, in_names, dyn_in, sym, graph):
    """Capture fn again with every dim named `sym` one larger (its data repeated cyclically)."""
    from prunus.creation import tensor

    new, where = list(args), []
    for k, axes in dyn_in.items():
        dims = [d for d, s in axes.items() if s == sym]
        if not dims:
            continue
        t = args[tensor_pos[k]]
        arr = t.device.kernels.to_numpy(t.data)
        for d in dims:
            n = arr.shape[d]
            arr = np.take(arr, np.arange(n + 1) % n, axis=d)
            where.append(f"dim {d} of {in_names[k]!r}, size {n} -> {n + 1}")
        new[tensor_pos[k]] = tensor(arr, dtype=t.dtype, device=t.device)
    what = f"dynamic axis {sym!r} ({'; '.join(where)})"
    try:
        g, _, _ = capture(fn, *new)
    except PrunusError as e:
        raise ArgumentError(
            f"onnx.export: to trace {what}, the model ran again at the larger size and failed: "
            f"{e}. It can't take other sizes on that axis; export it static"
        ) from e
    _same_structure(graph, g, what)
    return g


def _same_structure(a, b, what) -> None:
    problem = None
    for x, y in zip(a.nodes, b.nodes):
        if x.op is not y.op or x.inputs != y.inputs:
            problem = (f"node {x.index} is {x.name}{tuple(x.inputs)} at one size, "
                       f"{y.name}{tuple(y.inputs)} at the other")
            break
    if problem is None and (len(a.nodes) != len(b.nodes) or len(a.values) != len(b.values)
                            or a.outputs != b.outputs):
        problem = f"{len(a.nodes)} nodes at one size, {len(b.nodes)} at the other"
    if problem is None:
        for x, y in zip(a.values, b.values):
            if x.kind != y.kind or len(x.shape) != len(y.shape):
                problem = (f"value %{x.index} is {x.kind} {fmt_shape(x.shape)} at one size, "
                           f"{y.kind} {fmt_shape(y.shape)} at the other")
                break
    if problem is not None:
        raise ArgumentError(
            f"onnx.export: the model records a different graph when {what} changes ({problem}), "
            "so that axis can't be dynamic in one ONNX graph. Export it static, or trace with "
            "another example size (size 1 often takes other paths, e.g. squeeze)"
        )


# -- building the model ---------------------------------------------------------------------------


def _to_numpy_for(graph):
    dev = getattr(graph, "device", None)

    def to_numpy(a):
        if isinstance(a, np.ndarray):
            return a
        return dev.kernels.to_numpy(a) if dev is not None else np.asarray(a)

    return to_numpy


def _build(onnx, graph, variants, opset, in_names, out_names, dyn_in, dyn_out, state_names,
           title):
    helper = onnx.helper
    symbols = _symbols(dyn_in)
    sigs = signatures(graph, variants)
    to_numpy = _to_numpy_for(graph)
    folded = fold_constants(graph, variants, sigs, to_numpy, state_names)
    ctx = Context(onnx, graph, opset, sigs, variants, state_names, to_numpy, folded, symbols)
    for vi, name in zip(graph.inputs, in_names):
        ctx.bind(vi, name)
    pending = []  # outputs that need an Identity: inputs, state, repeats
    for vi, name in zip(graph.outputs, out_names):
        if not ctx.reserve(name):
            raise ArgumentError(f"onnx.export: output name {name!r} is also an input name")
        if graph.values[vi].kind == NODE and not ctx.bound(vi) and vi not in folded:
            ctx.bind(vi, name)
        else:
            pending.append((vi, name))
    ctx.convert_nodes()
    for vi, name in pending:
        ctx.emit("Identity", [ctx.name(vi)], name)

    inputs = [ctx.value_info(vi, name, dyn_in.get(k, {}))
              for k, (vi, name) in enumerate(zip(graph.inputs, in_names))]
    outputs = [ctx.value_info(vi, name,
                              _output_dim_names(graph, sigs, vi, name, dyn_out.get(k, {}), dyn_in))
               for k, (vi, name) in enumerate(zip(graph.outputs, out_names))]
    g = helper.make_graph(ctx.nodes, title, inputs, outputs, initializer=ctx.initializers)
    opsets = [helper.make_opsetid("", opset)]
    proto = helper.make_model(g, opset_imports=opsets, producer_name="prunus",
                              producer_version=__version__)
    proto.ir_version = helper.find_min_ir_version_for(opsets)
    return proto


def _output_dim_names(graph, sigs, vi, name, spec, dyn_in):
    """Names for the dynamic dims of output `vi`: the user's, else the input axis it follows,
    else name_dimD. A named dim that is not dynamic is an error."""
    given = _axes_spec(name, spec, len(sigs[vi])) if spec else {}
    if isinstance(spec, (list, tuple)):  # dims listed without names: name them as they follow
        given = dict.fromkeys(given)
    out = {}
    for d, sig in enumerate(sigs[vi]):
        if len(set(sig)) == 1:
            if d in given:
                raise ArgumentError(
                    f"onnx.export: dynamic_axes names dim {d} of output {name!r}, but it has "
                    f"size {sig[0]} whatever the size of the dynamic input axes"
                )
            continue
        follows = next((sym for k, axes in dyn_in.items() for j, sym in axes.items()
                        if sigs[graph.inputs[k]][j] == sig), None)
        out[d] = given.get(d) or follows or f"{name}_dim{d}"
    return out
