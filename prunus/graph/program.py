"""Programs: a captured `Graph` saved as one file that runs without the model's Python code
(`save_program` / `load_program`, and `save_program_bytes` / `load_program_bytes` in memory), and
`Program`, the callable a loaded file becomes (it runs the graph through the Executor).

Files hold data, never code. Loading never unpickles, never evals and never imports a name read
from the file: op names map to classes through a closed registry of the primitives in
prunus/ops/ (and the control-flow ops), and every other field is one of the closed JSON forms
below, checked in full before anything is built. Any damage raises ModelFormatError (ChecksumError when a checksum fails).

File layout (format "prunus.program", version 1): a safetensors file. Its tensors are the graph's
STATE and CONST values and the arrays that op attributes hold; its metadata (all strings) is
    format          "prunus.program"
    format_version  "1"
    prunus_version  the prunus that wrote the file (informative only)
    program         the program as JSON (below)
    program_crc32   CRC32 of the program's UTF-8 bytes, 8 hex digits
The program JSON is one object with exactly these keys:
    device    "cpu" | "cuda:N" | null           where the graph was captured
    tensors   {name: {"dtype", "shape", "crc32"}}  every tensor in the file, with the CRC32 of its
                                                  little-endian bytes (as prunus.save writes it)
    values    [{"kind", "dtype", "shape", "requires_grad", "name", ...}]  value i is %i; by kind:
                input: "position" (int: the program's positional argument; str: its keyword)
                state, const: "tensor" (a name in `tensors`)
                node: "node" (the index of the node that computes it)
                saved: "node", "attr" (an array that node's op keeps as that attribute)
    nodes     [{"op", "inputs", "output", "attrs", "needs_input_grad", "grad_enabled", "mutates"}]
                in execution order; op: a prunus.ops class name; attrs: {name: attr}
    inputs    [value index]     outputs  [value index]
    out_tree  the return structure: {"out": k} (outputs[k]), {"lit": literal}, {"tuple": [...]},
              {"list": [...]}, {"dict": [[key, tree], ...]} (keys: str, int, bool, null or a float)
An attr is null, true/false, an integer, a finite float, a string, or one tagged object:
    {"float": "nan" | "inf" | "-inf"}   {"tuple": [attr...]}   {"list": [attr...]}
    {"slice": [start, stop, step]} (ints or null)   {"ellipsis": true}
    {"geom": {field: int, ..., "batched": bool}}   (prunus.ops.conv.Geom)
    {"dtype": name} (a prunus dtype)   {"np_dtype": name}   {"np_scalar": [dtype name, number]}
    {"device": "cpu" | "cuda:N"}       {"array": tensor name}
    {"ref": {"node": i}} (node i's op), {"ref": {"node": i, "attr": a}} (an array it keeps),
    {"ref": {"value": v}} (value v's array)
    {"graph": {"values", "nodes", "inputs", "outputs"}}  a branch or loop body of a control-flow
        op (prunus/graph/control_flow.py): a graph of its own, numbered from 0, laid out as the
        program's graph is, its tensors in the one `tensors` table

What a program is: one specialization of a compiled function, for the shapes, dtypes and Python
state it was captured with. Guards (Python callables checking train/eval mode, optimizer settings,
...) are not saved. A program takes the traced function's tensor arguments only, in their order
(non-tensor arguments were fixed when it was captured). Gradients the function leaves in
parameters' .grad (graph.grad_outputs, cleared_grads) are dropped: the parameters are not part of
the program; a saved training step still updates its own state tensors (weights, momentum) in
place on every call, and `Program.state` holds them. Graphs that read a gradient that existed
before the call (GRAD values) can't be saved. Tensor sharing between state tensors (views of one
buffer) is not preserved. Memory planning (Node.inplace) is not saved: a
loaded program runs every op out of place.
"""

from __future__ import annotations

import math
import os

import numpy as np

from prunus._fileio import atomic_write
from prunus.backend import Device, get_device
from prunus.errors import (
    ArgumentError,
    ChecksumError,
    DeviceError,
    DeviceUnavailableError,
    DTypeError,
    ShapeError,
)
from prunus.graph.executor import Executor
from prunus.graph.ir import CONST, INPUT, NODE, STATE, Graph, Node
from prunus.graph.program_format import _DTYPES
from prunus.graph.program_read import (
    _Array,
    _Checker,
    _DeviceName,
    _GraphSpec,
    _read_header,
    _read_metadata,
    _Spec,
)
from prunus.graph.program_write import _Writer
from prunus.serialization import _crc32
from prunus.tensor import Tensor

__all__ = ["Program", "load_program", "load_program_bytes", "save_program", "save_program_bytes"]

FORMAT = "prunus.program"

# -- save ----------------------------------------------------------------------------------------


def save_program(compiled_or_graph, path, *example_inputs, module=None) -> None:
    """Write a compiled function's graph to `path` as one program file, atomically (an interrupted
    save leaves the old file intact). See the module docstring for the format.

    compiled_or_graph: a `prunus.compile` result, a Graph, or a loaded Program. For a compiled
    function, `example_inputs` pick the graph: the cached one for them (in the current grad mode,
    else the other), or the one a call with them traces (the call runs the function, once);
    without them the compiled function must hold exactly one cached graph.
    module: a Module whose parameter and buffer names label the state tensors in the file (a
    CompiledModule's own module by default); optimizer state keeps its graph name ("exp_avg of
    fc1.weight"), other state tensors are named %<value index>.
    """
    data = save_program_bytes(compiled_or_graph, *example_inputs, module=module)
    atomic_write(os.fspath(path), data)


def save_program_bytes(compiled_or_graph, *example_inputs, module=None) -> bytes:
    """The bytes `save_program` writes."""
    graph, names = _select_graph(compiled_or_graph, example_inputs, module)
    return _Writer(graph, names).to_bytes()


def _select_graph(obj, example_inputs, module):
    from prunus.graph.compile import Compiled, CompiledModule

    names: dict = {}  # id(state tensor) -> readable name
    if example_inputs and not isinstance(obj, Compiled):
        raise ArgumentError("save_program: example inputs pick one of a compiled function's graphs; "
                            f"a {type(obj).__name__} is one graph already")
    if isinstance(obj, Program):
        graph = obj.graph
        names = {id(t): k for k, t in obj.state.items()}
    elif isinstance(obj, Graph):
        graph = obj
    elif isinstance(obj, Compiled):
        graph = _graph_of(obj, example_inputs)
        if module is None and isinstance(obj, CompiledModule):
            module = obj.module
    else:
        raise ArgumentError(
            f"save_program: expected a prunus.compile result, a Graph or a Program, got "
            f"{type(obj).__name__}"
        )
    if graph.backward is not None:
        raise ArgumentError(
            "save_program: this graph is a differentiable call (traced with grad on, its result "
            "keeps autograd history), which runs only inside prunus's autograd; save the graph "
            "traced under prunus.no_grad() (inference) or a compiled whole training step"
        )
    if module is not None:
        for name, t in [*module.named_parameters(), *module.named_buffers()]:
            names.setdefault(id(t), name)
    return graph, names


def _graph_of(compiled, example_inputs):
    from prunus.autograd import is_grad_enabled, set_grad_enabled

    if not example_inputs:
        entries = [e for es in compiled.cache.values() for e in es]
        if len(entries) != 1:
            raise ArgumentError(
                f"save_program: the compiled function holds {len(entries)} cached graphs; call it "
                "once with the inputs to save the graph for (under prunus.no_grad() for inference), "
                "or pass example inputs: save_program(compiled, path, *example_inputs)"
            )
        return entries[0].graph
    mode = is_grad_enabled()
    for m in (mode, not mode):  # a Module compiled for inference was called under no_grad
        with set_grad_enabled(m):  # the grad mode is part of a graph's cache key
            graph = compiled.graph_for(*example_inputs)
        if graph is not None:
            return graph
    compiled(*example_inputs)
    graph = compiled.graph_for(*example_inputs)
    if graph is None:
        why = "; ".join(compiled.not_cached) or "its guards did not hold after the call"
        raise ArgumentError(
            f"save_program: calling the compiled function with the example inputs did not leave a "
            f"reusable graph ({why}); call it again (a first optimizer step creates its state) "
            "and save then"
        )
    return graph



# -- load ----------------------------------------------------------------------------------------


def load_program(path, map_location=None) -> Program:
    """Read a program file written by `save_program` and return it as a callable `Program`.

    map_location: None runs it on the device it was captured on; 'cpu', 'cuda:N' or a Device runs
    it there. Nothing read from the file is executed or imported; a damaged file raises
    ModelFormatError (ChecksumError when a tensor or the program fails its checksum).
    """
    file = os.fspath(path)
    try:
        with open(file, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        raise FileNotFoundError(f"prunus.load_program: no such file: {file!r}") from None
    return load_program_bytes(data, map_location, _label=f"prunus.load_program({file!r})")


def load_program_bytes(data, map_location=None, *, _label="prunus.load_program_bytes") -> Program:
    """`load_program` for the bytes of a program file."""
    target = None
    if map_location is not None:
        if not isinstance(map_location, (str, Device)):
            raise ArgumentError(
                f"load_program: map_location must be None, a device name ('cpu', 'cuda:0') or a "
                f"Device, got {type(map_location).__name__}"
            )
        target = get_device(map_location)
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise ArgumentError(f"load_program_bytes: expected bytes, got {type(data).__name__}")
    data = bytes(data)
    c = _Checker(_label)
    header, base = _read_header(data, c)
    meta = header.pop("__metadata__", None)
    program = _read_metadata(meta, c)
    spec = c.program(program, header)
    arrays = {}
    for name, (dtype, shape, begin, end) in header.items():  # verified before anything is built
        arr = np.frombuffer(data, dtype=_DTYPES[dtype].np, count=math.prod(shape),
                            offset=base + begin).reshape(shape)
        got = _crc32(arr)
        if got != spec.tensors[name][2]:
            raise ChecksumError(
                f"{_label}: tensor {name!r} does not match its checksum (recorded crc32 "
                f"{spec.tensors[name][2]}, computed {got}): the file is corrupted"
            )
        arrays[name] = arr
    return _build(spec, arrays, target, c)



# -- build ---------------------------------------------------------------------------------------


def _build(spec: _Spec, arrays: dict, target, c) -> Program:
    """The Graph (and subgraphs) of a checked spec, on the target device, with tensors of its own."""
    saved_on = spec.device or "cpu"
    if target is None:
        try:
            target = get_device(saved_on)
        except DeviceUnavailableError as e:
            raise DeviceUnavailableError(
                f"{c.label}: the program was saved on {saved_on!r}: {e}; pass map_location='cpu' "
                "to run it on the CPU"
            ) from None
    dev = target
    state: dict = {}
    attr_arrays: dict = {}

    def resolve(a):
        t = type(a)
        if t is _Array:
            arr = attr_arrays.get(a.name)
            if arr is None:
                arr = attr_arrays[a.name] = dev.kernels.from_numpy(arrays[a.name].copy())
            return arr
        if t is _DeviceName:
            if a.name == saved_on:  # the program's own device follows map_location
                return dev
            try:
                return get_device(a.name)
            except DeviceError as e:
                raise type(e)(f"{c.label}: an op moves data to {a.name!r}: {e}") from None
        if t is _GraphSpec:
            return build(a)
        if t is tuple or t is list:
            return t(resolve(x) for x in a)
        return a

    def build(gs: _GraphSpec) -> Graph:
        g = Graph()
        g.device = dev
        for v in gs.values:
            kind = v["kind"]
            kw = {"requires_grad": v["requires_grad"], "name": v["name"]}
            if kind in (STATE, CONST):  # a copy: the program owns it and may update it in place
                t = Tensor._make(dev.kernels.from_numpy(arrays[v["tensor"]].copy()), dev, False, None)
                kw["tensor"] = state[v["tensor"]] = t
            elif kind == INPUT:
                kw["position"] = v["position"]
            elif kind == NODE:
                kw["node"] = v["node"]
            else:
                kw["node"], kw["attr"] = v["node"], v["attr"]
            g.add_value(kind, v["shape"], v["dtype"], **kw)
        for k, (cls, inputs, output, attrs, needs, grad_enabled, mutates, refs) in enumerate(gs.nodes):
            attrs = {name: resolve(a) for name, a in attrs.items()}
            g.nodes.append(Node(k, cls, list(inputs), output, attrs, needs_input_grad=needs,
                                grad_enabled=grad_enabled, mutates=mutates, has_refs=bool(refs)))
        g.inputs = list(gs.inputs)
        g.outputs = list(gs.outputs)
        return g

    g = build(spec.graph)
    g.out_tree = spec.out_tree
    return Program(g, state)


class Program:
    """A loaded program: `program(*tensors, **tensors)` runs its graph and returns what the
    traced function returned. It takes the function's tensor arguments, in order, with the shapes
    and dtypes they had when it was captured (one specialization; see the module docstring).

    state: the tensors the program owns (weights, buffers, optimizer state, constants) by their
    name in the file; a saved training step updates them in place on every call.
    """

    def __init__(self, graph: Graph, state: dict):
        self.graph = graph
        self.state = state
        self.device = graph.device
        self._executor = Executor(graph)
        vals = graph.values
        self._positional = sorted((vals[i] for i in graph.inputs if isinstance(vals[i].position, int)),
                                  key=lambda v: v.position)
        self._keywords = {vals[i].position: vals[i] for i in graph.inputs if isinstance(vals[i].position, str)}

    def __call__(self, *args, **kwargs):
        if len(args) != len(self._positional) or kwargs.keys() != self._keywords.keys():
            raise ArgumentError(
                f"program: expected {len(self._positional)} positional tensor argument(s)"
                + (f" and keywords {sorted(self._keywords)}" if self._keywords else "")
                + f", got {len(args)}" + (f" and keywords {sorted(kwargs)}" if kwargs else "")
            )
        args = tuple(self._check(a, v, f"argument {v.position}") for a, v in zip(args, self._positional))
        kwargs = {k: self._check(a, self._keywords[k], f"argument {k!r}") for k, a in kwargs.items()}
        return self._executor.run(args, kwargs)

    def _check(self, a, v, what):
        if isinstance(a, np.ndarray):
            a = Tensor(a, device=self.device)
        if not isinstance(a, Tensor):
            raise ArgumentError(f"program: {what} must be a Tensor, got {type(a).__name__}")
        if a.device is not self.device:
            raise DeviceError(f"program: {what} is on {a.device}, the program runs on {self.device}")
        if tuple(a.shape) != tuple(v.shape):
            raise ShapeError(f"program: {what} has shape {tuple(a.shape)}, the program was captured "
                             f"for {tuple(v.shape)}")
        if a.data.dtype.name != v.dtype:
            raise DTypeError(f"program: {what} has dtype {a.data.dtype.name}, the program was "
                             f"captured for {v.dtype}")
        return a

    def __repr__(self) -> str:
        ins = ", ".join(f"{v.dtype}{list(v.shape)}" for v in self._positional)
        return f"Program({ins}; {len(self.graph.nodes)} nodes, {len(self.state)} state tensors, {self.device})"

