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

import importlib
import inspect
import json
import math
import os
import pkgutil
import re
import zlib
from dataclasses import dataclass

import ml_dtypes
import numpy as np

from prunus import dtypes
from prunus._fileio import atomic_write
from prunus.autograd import Op
from prunus.backend import Device, get_device
from prunus.errors import (
    ArgumentError,
    ChecksumError,
    DeviceError,
    DeviceUnavailableError,
    DTypeError,
    ModelFormatError,
    ShapeError,
)
from prunus.graph.executor import Executor
from prunus.graph.ir import CONST, GRAD, INPUT, NODE, SAVED, STATE, Graph, Node, Ref
from prunus.serialization import _ST_DTYPE, _crc32, _prunus_version
from prunus.tensor import Tensor

FORMAT = "prunus.program"
FORMAT_VERSION = 1

__all__ = ["Program", "load_program", "load_program_bytes", "save_program", "save_program_bytes"]

_MAX_DEPTH = 64  # attrs and out trees nest a few levels; deeper is a damaged or hostile file
_MAX_NESTING = 16  # control flow inside control flow, bounded so checks never hit the stack limit
_MAX_HEADER = 100 << 20  # the safetensors library's own limit on its JSON header
_DTYPES = {d.name: d for d in dtypes.ALL}  # the value and tensor dtypes a file may name
_ST_NAME = {code: name for name, code in _ST_DTYPE.items()}  # "F32" -> "float32"
_DEVICE_RE = re.compile(r"cpu|cuda:[0-9]{1,4}")
_CRC_RE = re.compile(r"[0-9a-f]{8}")
_KINDS = (INPUT, STATE, CONST, NODE, SAVED)
_VALUE_KEYS = {"kind", "dtype", "shape", "requires_grad", "name"}
_KIND_KEYS = {INPUT: {"position"}, STATE: {"tensor"}, CONST: {"tensor"}, NODE: {"node"},
              SAVED: {"node", "attr"}}
_NODE_KEYS = {"op", "inputs", "output", "attrs", "needs_input_grad", "grad_enabled", "mutates"}
_PROGRAM_KEYS = {"device", "tensors", "values", "nodes", "inputs", "outputs", "out_tree"}
_FLOATS = {"nan": math.nan, "inf": math.inf, "-inf": -math.inf}


# -- the op registry -----------------------------------------------------------------------------

_REGISTRY: dict | None = None


# Op classes that live outside prunus/ops/ (they run subgraphs, so they belong with the graph)
_EXTRA_OP_MODULES = ("prunus.graph.control_flow",)


def op_registry() -> dict:
    """name -> class for every public Op subclass defined in a prunus.ops module (and the
    control-flow ops): the closed vocabulary of op names a program file may use. Built once, from
    prunus's own modules."""
    global _REGISTRY
    if _REGISTRY is None:
        import prunus.ops as ops_pkg

        reg: dict = {}
        modules = [f"prunus.ops.{m.name}" for m in pkgutil.iter_modules(ops_pkg.__path__)]
        for modname in sorted(modules) + list(_EXTRA_OP_MODULES):
            mod = importlib.import_module(modname)
            for name, cls in vars(mod).items():
                # public, defined in that module, with a forward of its own (not an abstract base)
                if (isinstance(cls, type) and issubclass(cls, Op) and cls.__module__ == mod.__name__
                        and not name.startswith("_") and cls.forward is not Op.forward):
                    if name in reg and reg[name] is not cls:  # a file could not tell them apart
                        raise RuntimeError(f"two prunus ops are named {name}: {reg[name]} and {cls}")
                    reg[name] = cls
        _REGISTRY = reg
    return _REGISTRY


_SIGNATURES: dict = {}


def _forward_signature(cls):
    sig = _SIGNATURES.get(cls)
    if sig is None:
        sig = _SIGNATURES[cls] = inspect.signature(cls.forward)
    return sig


def _geom_cls():
    from prunus.ops.conv import Geom

    return Geom


# -- save ----------------------------------------------------------------------------------------


def save_program(compiled_or_graph, path, *example_inputs, module=None) -> None:
    """Write a compiled function's graph to `path` as one program file, atomically (an interrupted
    save leaves the old file intact). See the module docstring for the format.

    compiled_or_graph: a `prunus.compile` result, a Graph, or a loaded Program. For a compiled
    function, `example_inputs` pick the graph: the cached one for them (in the current grad mode,
    else the other), or the one a call with them traces (the call runs the function, once);
    without them the compiled function must hold exactly one cached graph.
    module: a Module whose parameter and buffer names label the state tensors in the file (a
    CompiledModule's own module by default); other state tensors are named %<value index>.
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


def _is_array(a) -> bool:
    return hasattr(a, "__array_interface__") or hasattr(a, "__cuda_array_interface__")


class _Writer:
    """Encodes one Graph (and the subgraphs its control-flow ops run) into the program JSON and
    the tensors beside it."""

    def __init__(self, graph: Graph, names: dict):
        self.g = graph
        self.names = names
        self.arrays: dict = {}  # tensor name -> little-endian, C-ordered numpy array
        self.table: dict = {}  # tensor name -> {"dtype", "shape", "crc32"}
        self.attr_arrays: dict = {}  # id(array) -> tensor name (an array two attrs share)
        self.keep: list = []  # arrays whose ids are keys above
        self.subgraphs = 0

    def to_bytes(self) -> bytes:
        g = self.g
        program = {
            "device": None if getattr(g, "device", None) is None else str(g.device),
            "tensors": self.table,
            **self.graph(g, ""),
            # a graph captured without a return structure (a branch's) returns its outputs as a list
            "out_tree": self.tree(g.out_tree if g.out_tree is not None
                                  else ("list", [("t", k) for k in range(len(g.outputs))])),
        }
        text = json.dumps(program, allow_nan=False, separators=(",", ":"))
        metadata = {
            "format": FORMAT,
            "format_version": str(FORMAT_VERSION),
            "prunus_version": _prunus_version(),
            "program": text,
            "program_crc32": f"{zlib.crc32(text.encode()):08x}",
        }
        return _safetensors_bytes(self.arrays, metadata)

    def graph(self, g: Graph, prefix: str) -> dict:
        """values, nodes, inputs, outputs of `g`; `prefix` names its tensors apart from other
        graphs' ("" for the program's graph, "g1/" for the first subgraph, ...)."""
        for i, v in enumerate(g.values):
            if v.index != i:
                raise ArgumentError(f"save_program: the graph's value {i} is numbered %{v.index}")
        for k, n in enumerate(g.nodes):
            if n.index != k:
                raise ArgumentError(f"save_program: the graph's node {k} is numbered {n.index}")
        values = [self.value(v, prefix) for v in g.values]
        nodes = [self.node(n, prefix) for n in g.nodes]
        ints = sorted(g.values[vi].position for vi in g.inputs if isinstance(g.values[vi].position, int))
        rank = {pos: i for i, pos in enumerate(ints)}
        for vi in g.inputs:  # the program's arguments: the tensor arguments only, renumbered
            pos = g.values[vi].position
            values[vi]["position"] = rank[pos] if isinstance(pos, int) else pos
        return {"values": values, "nodes": nodes, "inputs": [int(i) for i in g.inputs],
                "outputs": [int(i) for i in g.outputs]}

    # -- tensors ---------------------------------------------------------------------------

    def add_tensor(self, name, arr, what) -> str:
        arr = np.asarray(arr, order="C")  # not ascontiguousarray: that turns 0-d into 1-d
        if arr.dtype.name not in _DTYPES:
            raise DTypeError(
                f"save_program: {what} has dtype {arr.dtype}, which prunus does not have; expected "
                f"one of {', '.join(_DTYPES)}"
            )
        if arr.dtype.byteorder == ">":
            arr = arr.astype(arr.dtype.newbyteorder("<"))
        base, n = name, 2
        while name in self.table:  # a module's name that looks like another value's %<index>
            name, n = f"{base}#{n}", n + 1
        self.arrays[name] = arr
        self.table[name] = {"dtype": arr.dtype.name, "shape": [int(s) for s in arr.shape],
                            "crc32": _crc32(arr)}
        return name

    def to_numpy(self, a):
        dev = getattr(self.g, "device", None)
        return dev.kernels.to_numpy(a) if dev is not None else np.asarray(a)

    # -- values and nodes ------------------------------------------------------------------

    def value(self, v, prefix) -> dict:
        where = f"value {prefix}%{v.index} {v.dtype}{list(v.shape)}"
        if v.kind == GRAD:
            raise ArgumentError(
                f"save_program: {where} is a gradient the graph reads live from a parameter's "
                ".grad, which a program does not have. Compile a step that makes its gradients "
                "itself (opt.zero_grad() with set_to_none=True at its start) or an inference "
                "function (under prunus.no_grad())"
            )
        if v.kind not in _KINDS:
            raise ArgumentError(f"save_program: {where} has unknown kind {v.kind!r}")
        out = {"kind": v.kind, "dtype": str(v.dtype), "shape": [int(s) for s in v.shape],
               "requires_grad": bool(v.requires_grad),
               "name": None if v.name is None else str(v.name)}
        if out["dtype"] not in _DTYPES:
            raise DTypeError(f"save_program: {where} has a dtype prunus does not have")
        if v.kind in (STATE, CONST):
            t = v.tensor
            label = self.names.get(id(t))
            if label is not None:
                out["name"] = label
            arr = t.device.kernels.to_numpy(t.data)
            out["tensor"] = self.add_tensor(label or f"{prefix}%{v.index}", arr, f"{where} ({v.kind})")
        elif v.kind == INPUT:
            if not (isinstance(v.position, str) or type(v.position) is int):
                raise ArgumentError(f"save_program: input {where} has position {v.position!r}")
            out["position"] = v.position
        elif v.kind == NODE:
            out["node"] = int(v.node)
        else:
            out["node"], out["attr"] = int(v.node), str(v.attr)
        return out

    def node(self, n, prefix) -> dict:
        cls = n.op
        if op_registry().get(cls.__name__) is not cls:
            raise ArgumentError(
                f"save_program: node {prefix}{n.index} runs {cls.__module__}.{cls.__qualname__}, "
                "which is not one of prunus's ops (prunus/ops/, prunus/graph/control_flow.py): a "
                "program file can name only those, since loading imports no code"
            )
        where = f"node {prefix}{n.index} ({cls.__name__})"
        attrs = {}
        for k, a in n.attrs.items():
            attrs[str(k)] = self.attr(a, f"{where} attribute {k!r}", 0)
        return {
            "op": cls.__name__,
            "inputs": [int(i) for i in n.inputs],
            "output": int(n.output),
            "attrs": attrs,
            "needs_input_grad": [bool(b) for b in n.needs_input_grad],
            "grad_enabled": bool(n.grad_enabled),
            "mutates": [int(i) for i in n.mutates],
        }

    def attr(self, a, where, depth):
        if depth > _MAX_DEPTH:
            raise ArgumentError(f"save_program: {where} nests deeper than {_MAX_DEPTH} levels")
        t = type(a)
        if a is None or t is bool or t is str or t is int:
            return a
        if t is float:
            return _float(a)
        if t is Ref:
            if a.value is not None:
                return {"ref": {"value": int(a.value)}}
            return {"ref": {"node": int(a.node)} | ({} if a.attr is None else {"attr": str(a.attr)})}
        if t is _geom_cls():
            fields = {}
            for k, x in zip(a._fields, a):
                if type(x) is not (bool if k == "batched" else int):
                    raise ArgumentError(f"save_program: {where}: Geom field {k} is {x!r}")
                fields[k] = x
            return {"geom": fields}
        if t is tuple or t is list:
            return {t.__name__: [self.attr(x, where, depth + 1) for x in a]}
        if t is slice:
            parts = [a.start, a.stop, a.step]
            if not all(p is None or type(p) is int for p in parts):
                raise ArgumentError(f"save_program: {where}: slice {a} has bounds that are not ints")
            return {"slice": parts}
        if a is Ellipsis:
            return {"ellipsis": True}
        if isinstance(a, dtypes.DType):
            return {"dtype": a.name}
        if isinstance(a, np.dtype) and a.name in _DTYPES:
            return {"np_dtype": a.name}
        if isinstance(a, np.generic) and a.dtype.name in _DTYPES:
            x = a.item()
            return {"np_scalar": [a.dtype.name, _float(x) if type(x) is float else x]}
        if isinstance(a, Device):
            return {"device": str(a)}
        if _is_array(a):
            name = self.attr_arrays.get(id(a))
            if name is None:
                name = self.add_tensor(f"#{len(self.attr_arrays)}", self.to_numpy(a), where)
                self.attr_arrays[id(a)] = name
                self.keep.append(a)
            return {"array": name}
        if t is Graph:
            self.subgraphs += 1
            return {"graph": self.graph(a, f"g{self.subgraphs}/")}
        raise ArgumentError(
            f"save_program: {where} is a {t.__name__} ({a!r:.80}), which a program file can't hold: "
            "attributes may be None, bool, int, float, str, tuples and lists, slices, Ellipsis, "
            "conv geometry, dtypes, devices, arrays and subgraphs (files hold data, never code)"
            + ("; a Dropout with its own generator= can't be saved, use generator=None"
               if "generator" in where else "")
        )

    def tree(self, tree, depth=0):
        if depth > _MAX_DEPTH:
            raise ArgumentError(f"save_program: the return value nests deeper than {_MAX_DEPTH} levels")
        kind, x = tree
        if kind == "t":
            return {"out": int(x)}
        if kind == "lit":
            if type(x) is float:
                x = _float(x)
            return {"lit": x}
        if kind == "dict":
            items = []
            for k, v in x:
                if not (k is None or type(k) in (bool, int, str) or (type(k) is float and math.isfinite(k))):
                    raise ArgumentError(
                        f"save_program: the function returns a dict with key {k!r:.60}; a program "
                        "keeps keys that are str, int, bool, None or finite floats"
                    )
                items.append([k, self.tree(v, depth + 1)])
            return {"dict": items}
        if kind in ("tuple", "list"):
            return {kind: [self.tree(i, depth + 1) for i in x]}
        raise ArgumentError(f"save_program: the graph's return structure has an unknown part {kind!r}")


def _float(x: float):
    if math.isfinite(x):
        return x
    return {"float": "nan" if math.isnan(x) else ("inf" if x > 0 else "-inf")}


def _safetensors_bytes(arrays: dict, metadata: dict) -> bytes:
    """The safetensors serialization of `arrays` (as prunus.serialization.save writes it)."""
    import safetensors

    if hasattr(safetensors, "TensorSpec"):  # newer safetensors: pointers, no copy
        specs = {
            k: safetensors.TensorSpec(dtype=a.dtype.name, shape=list(a.shape),
                                      data_ptr=a.ctypes.data, data_len=a.nbytes)
            for k, a in arrays.items()
        }
    else:  # older safetensors took the bytes themselves
        specs = {
            k: {"dtype": _ST_DTYPE[a.dtype.name], "shape": list(a.shape), "data": a.tobytes()}
            for k, a in arrays.items()
        }
    return bytes(safetensors.serialize(specs, metadata=metadata))  # `arrays` keeps pointers valid


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


def _read_header(data: bytes, c):
    """The safetensors header of `data` as {name: (dtype, shape, begin, end)} plus
    "__metadata__", and where the data buffer starts; offsets checked against the buffer."""
    if len(data) < 8:
        raise c.bad(None, f"the file is {len(data)} bytes long, too short for a safetensors header")
    n = int.from_bytes(data[:8], "little")
    if n > _MAX_HEADER or 8 + n > len(data):
        raise c.bad(None, f"the safetensors header claims {n} bytes; the file has {len(data) - 8} "
                          "after the length (truncated or not a safetensors file)")
    try:
        header = json.loads(data[8 : 8 + n].decode("utf-8"), parse_constant=_reject_constant)
    except (ValueError, RecursionError) as e:  # UnicodeDecodeError is a ValueError
        raise c.bad(None, f"the safetensors header is not valid JSON: {e}") from None
    if not isinstance(header, dict):
        raise c.bad(None, "the safetensors header is not a JSON object")
    size = len(data) - 8 - n
    out: dict = {}
    spans = []
    for name, entry in header.items():
        if name == "__metadata__":
            out[name] = entry
            continue
        where = f"safetensors entry {name!r:.60}"
        c.keys(entry, {"dtype", "shape", "data_offsets"}, where)
        code = entry["dtype"]
        if not isinstance(code, str) or code not in _ST_NAME:
            raise c.bad(None, f"{where} has dtype {code!r:.40}, which prunus does not have")
        shape = c.shape(entry["shape"], where)
        offs = entry["data_offsets"]
        if not (isinstance(offs, list) and len(offs) == 2 and all(_is_int(o) for o in offs)
                and 0 <= offs[0] <= offs[1] <= size):
            raise c.bad(None, f"{where} has data_offsets {offs!r:.60} outside the {size}-byte "
                          "data buffer (a truncated file?)")
        dtype = _ST_NAME[code]
        if offs[1] - offs[0] != math.prod(shape) * np.dtype(_DTYPES[dtype].np).itemsize:
            raise c.bad(None, f"{where}: {offs[1] - offs[0]} bytes do not hold a {dtype} {shape}")
        out[name] = (dtype, shape, offs[0], offs[1])
        spans.append((offs[0], offs[1]))
    end = 0
    for b, e in sorted(spans):  # as the safetensors library demands: no gaps, no overlaps
        if b != end:
            raise c.bad(None, f"the tensors' data_offsets leave a gap or overlap at byte {min(b, end)}")
        end = e
    if end != size:
        raise c.bad(None, f"the data buffer has {size} bytes, the tensors use {end}")
    return out, 8 + n


def _reject_constant(name):
    raise ValueError(f"non-standard JSON constant {name}")


def _read_metadata(meta, c):
    if not isinstance(meta, dict) or not all(isinstance(v, str) for v in meta.values()):
        raise c.bad(None, "the safetensors metadata is missing or not all strings; not a prunus program")
    fmt = meta.get("format")
    if fmt != FORMAT:
        raise c.bad(None, f"not a prunus program (format is {fmt!r:.60}, expected {FORMAT!r})"
                          + ("; it is a checkpoint: read it with prunus.load" if fmt == "prunus.checkpoint" else ""))
    version = meta.get("format_version")
    if version != str(FORMAT_VERSION):
        newer = version is not None and re.fullmatch(r"[0-9]{1,6}", version) is not None \
            and int(version) > FORMAT_VERSION
        raise c.bad(None, f"format version {version!r:.20}, this prunus reads version {FORMAT_VERSION}"
                          + (f"; the file was written by prunus {meta.get('prunus_version')!r:.40}, "
                             "upgrade prunus" if newer else ""))
    text, crc = meta.get("program"), meta.get("program_crc32")
    if text is None or crc is None:
        raise c.bad(None, "the metadata has no 'program' or no 'program_crc32'")
    got = f"{zlib.crc32(text.encode('utf-8', 'surrogatepass')):08x}"
    if got != crc:
        raise ChecksumError(f"{c.label}: the program does not match its checksum (recorded crc32 "
                            f"{crc!r:.20}, computed {got}): the file is corrupted")
    try:
        return json.loads(text, parse_constant=_reject_constant)
    except (ValueError, RecursionError) as e:
        raise c.bad(None, f"the program is not valid JSON: {e}") from None


def _is_int(x) -> bool:
    return type(x) is int  # JSON true/false load as bool, a subclass of int


@dataclass(frozen=True)
class _Array:
    """An attr's array, by tensor name, until the tensors are read."""

    name: str


@dataclass(frozen=True)
class _DeviceName:
    """A device attr, resolved when the program is built (it may be the load target)."""

    name: str


@dataclass
class _GraphSpec:
    """One checked graph, still free of tensors and objects. nodes: (op class, inputs, output,
    attrs, needs_input_grad, grad_enabled, mutates, refs) each; values: dicts as in the file."""

    values: list
    nodes: list
    inputs: list
    outputs: list


@dataclass
class _Spec:
    device: str | None
    tensors: dict  # name -> (dtype, shape, crc32)
    graph: _GraphSpec
    out_tree: tuple


class _Checker:
    """Checks the program JSON against the closed format, raising ModelFormatError at the first
    thing that is wrong, named by its place (values[3].shape, nodes[7] (Conv2d).attrs['geo'])."""

    def __init__(self, label: str):
        self.label = label
        self.tensors: dict = {}  # name -> (dtype, shape, crc32)
        self.owner: dict = {}  # tensor name -> the state/const value that holds it
        self.attr_uses: dict = {}  # tensor name -> an attr that holds it
        self.nesting = 0  # subgraphs (of control-flow ops) around the graph being checked

    def bad(self, where, what) -> ModelFormatError:
        return ModelFormatError(f"{self.label}: " + (f"bad program at {where}: " if where else "") + what)

    def keys(self, x, keys, where):
        if not isinstance(x, dict):
            raise self.bad(where, f"expected a JSON object, got {_jtype(x)}")
        if x.keys() != keys:
            missing, extra = sorted(keys - x.keys()), sorted(x.keys() - keys)
            raise self.bad(where, (f"missing {missing} " if missing else "")
                           + (f"unexpected {[k[:40] for k in extra][:5]}" if extra else ""))

    def list(self, x, where) -> list:
        if not isinstance(x, list):
            raise self.bad(where, f"expected a JSON list, got {_jtype(x)}")
        return x

    def int(self, x, where, lo=0, hi=None) -> int:
        if not _is_int(x) or x < lo or (hi is not None and x >= hi):
            rng = f"in [{lo}, {hi})" if hi is not None else f">= {lo}"
            raise self.bad(where, f"expected an integer {rng}, got {_show(x)}")
        return x

    def bool(self, x, where) -> bool:
        if type(x) is not bool:
            raise self.bad(where, f"expected true or false, got {_show(x)}")
        return x

    def str(self, x, where) -> str:
        if not isinstance(x, str):
            raise self.bad(where, f"expected a string, got {_show(x)}")
        return x

    def shape(self, x, where) -> tuple:
        return tuple(self.int(s, f"{where}.shape[{i}]") for i, s in enumerate(self.list(x, f"{where}.shape")))

    def dtype(self, x, where) -> str:
        if not isinstance(x, str) or x not in _DTYPES:
            raise self.bad(where, f"unknown dtype {_show(x)}")
        return x

    # -- the program -----------------------------------------------------------------------

    def program(self, p, header) -> _Spec:
        self.keys(p, _PROGRAM_KEYS, "the top level")
        device = p["device"]
        if device is not None and not (isinstance(device, str) and _DEVICE_RE.fullmatch(device)):
            raise self.bad("device", f"expected 'cpu', 'cuda:N' or null, got {_show(device)}")
        self.tensors = self.tensor_table(p["tensors"], header)
        graph = self.graph(p, "")
        out_tree = self.tree(p["out_tree"], "out_tree", len(graph.outputs), 0)
        unused = self.tensors.keys() - self.owner.keys() - self.attr_uses.keys()
        if unused:
            raise self.bad("tensors", f"tensors nothing refers to: {sorted(u[:40] for u in unused)[:5]}")
        return _Spec(device, self.tensors, graph, out_tree)

    def tensor_table(self, t, header) -> dict:
        if not isinstance(t, dict):
            raise self.bad("tensors", f"expected a JSON object, got {_jtype(t)}")
        out = {}
        for name, entry in t.items():
            where = f"tensors[{name[:60]!r}]"
            self.keys(entry, {"dtype", "shape", "crc32"}, where)
            dtype = self.dtype(entry["dtype"], f"{where}.dtype")
            shape = self.shape(entry["shape"], where)
            crc = entry["crc32"]
            if not (isinstance(crc, str) and _CRC_RE.fullmatch(crc)):
                raise self.bad(f"{where}.crc32", f"expected 8 hex digits, got {_show(crc)}")
            stored = header.get(name)
            if stored is None:
                raise self.bad(where, "the file does not store this tensor")
            if stored[:2] != (dtype, shape):
                raise self.bad(where, f"the program says {dtype}{list(shape)}, the file stores "
                                      f"{stored[0]}{list(stored[1])}")
            out[name] = (dtype, shape, crc)
        extra = header.keys() - out.keys()
        if extra:
            raise self.bad("tensors", f"the file stores tensors the program does not list: "
                                      f"{sorted(k[:40] for k in extra)[:5]}")
        return out

    def graph(self, p, where) -> _GraphSpec:
        """The values, nodes, inputs and outputs of the program's graph or of a subgraph (`where`
        is the prefix that names its place)."""
        values = self.list(p["values"], f"{where}values")
        nv = len(values)
        for i, v in enumerate(values):
            self.value(v, f"{where}values[{i}]")
        nodes_in = self.list(p["nodes"], f"{where}nodes")
        nodes = [self.node(n, f"{where}nodes[{k}]", k, nv) for k, n in enumerate(nodes_in)]
        self.links(values, nodes, where)
        inputs = self.inputs(p["inputs"], values, where)
        outputs = [self.int(o, f"{where}outputs[{k}]", 0, nv)
                   for k, o in enumerate(self.list(p["outputs"], f"{where}outputs"))]
        return _GraphSpec(values, nodes, inputs, outputs)

    def value(self, v, where) -> None:
        if not isinstance(v, dict):
            raise self.bad(where, f"expected a JSON object, got {_jtype(v)}")
        kind = v.get("kind")
        if not isinstance(kind, str) or kind not in _KIND_KEYS:
            raise self.bad(f"{where}.kind", f"expected one of {list(_KINDS)}, got {_show(kind)}")
        self.keys(v, _VALUE_KEYS | _KIND_KEYS[kind], where)
        self.dtype(v["dtype"], f"{where}.dtype")
        self.shape(v["shape"], where)
        self.bool(v["requires_grad"], f"{where}.requires_grad")
        if v["name"] is not None:
            self.str(v["name"], f"{where}.name")
        if kind == INPUT:
            pos = v["position"]
            if not (isinstance(pos, str) or _is_int(pos) and pos >= 0):
                raise self.bad(f"{where}.position", f"expected an integer >= 0 or a string, got {_show(pos)}")
        elif kind in (STATE, CONST):
            name = v["tensor"]
            if not isinstance(name, str) or name not in self.tensors:
                raise self.bad(f"{where}.tensor", f"{_show(name)} is not a tensor the file lists")
            dtype, shape, _ = self.tensors[name]
            if (dtype, shape) != (v["dtype"], tuple(v["shape"])):
                raise self.bad(where, f"a {v['dtype']}{v['shape']} value stored as a {dtype}{list(shape)} tensor")
            if name in self.owner or name in self.attr_uses:
                raise self.bad(f"{where}.tensor", f"tensor {name[:60]!r} also belongs to "
                                                  f"{self.owner.get(name) or self.attr_uses[name]}")
            self.owner[name] = where
        else:
            self.int(v["node"], f"{where}.node", 0, None)
            if kind == SAVED:
                self.str(v["attr"], f"{where}.attr")

    def node(self, n, where, k, nv) -> tuple:
        self.keys(n, _NODE_KEYS, where)
        name = n["op"]
        cls = op_registry().get(name) if isinstance(name, str) else None
        if cls is None:
            raise self.bad(f"{where}.op", f"unknown op {_show(name)}: not one of prunus's ops")
        where = f"{where} ({name})"
        inputs = [self.int(x, f"{where}.inputs[{j}]", 0, nv)
                  for j, x in enumerate(self.list(n["inputs"], f"{where}.inputs"))]
        output = self.int(n["output"], f"{where}.output", 0, nv)
        attrs_in = n["attrs"]
        if not isinstance(attrs_in, dict):
            raise self.bad(f"{where}.attrs", f"expected a JSON object, got {_jtype(attrs_in)}")
        refs: list = []
        ctx = (nv, k, refs)
        attrs = {a: self.attr(x, f"{where}.attrs[{a[:40]!r}]", 0, ctx) for a, x in attrs_in.items()}
        needs = [self.bool(b, f"{where}.needs_input_grad[{j}]")
                 for j, b in enumerate(self.list(n["needs_input_grad"], f"{where}.needs_input_grad"))]
        if len(needs) != len(inputs):
            raise self.bad(f"{where}.needs_input_grad", f"{len(needs)} flags for {len(inputs)} inputs")
        grad_enabled = self.bool(n["grad_enabled"], f"{where}.grad_enabled")
        mutates = [self.int(m, f"{where}.mutates[{j}]", 0, len(inputs))
                   for j, m in enumerate(self.list(n["mutates"], f"{where}.mutates"))]
        try:  # the call the executor will make must fit the op's forward
            _forward_signature(cls).bind(None, *inputs, **attrs)
        except TypeError as e:
            raise self.bad(where, f"its inputs and attrs don't fit {name}.forward: {e}") from None
        return (cls, inputs, output, attrs, tuple(needs), grad_enabled, tuple(mutates), refs)

    def attr(self, a, where, depth, ctx):
        """An attr as the Python value the op gets (arrays, devices and subgraphs as
        placeholders until the build); ctx: (values in this graph, this node's index, refs)."""
        if depth > _MAX_DEPTH:
            raise self.bad(where, f"nested deeper than {_MAX_DEPTH} levels")
        if a is None or isinstance(a, (bool, int, str)):
            return a
        if isinstance(a, float):
            if not math.isfinite(a):
                raise self.bad(where, "a non-finite float must be written {\"float\": ...}")
            return a
        if not isinstance(a, dict) or len(a) != 1:
            raise self.bad(where, f"expected a literal or a one-key tagged object, got {_show(a)}")
        tag, body = next(iter(a.items()))
        if tag == "float" and isinstance(body, str) and body in _FLOATS:
            return _FLOATS[body]
        if tag in ("tuple", "list") and isinstance(body, list):
            items = [self.attr(x, f"{where}[{j}]", depth + 1, ctx) for j, x in enumerate(body)]
            return tuple(items) if tag == "tuple" else items
        if tag == "slice" and isinstance(body, list) and len(body) == 3 \
                and all(p is None or _is_int(p) for p in body):
            if body[2] == 0:
                raise self.bad(where, "a slice step of 0")
            return slice(*body)
        if tag == "ellipsis" and body is True:
            return Ellipsis
        if tag == "geom":
            return self.geom(body, where)
        if tag == "dtype" and isinstance(body, str) and body in _DTYPES:
            return _DTYPES[body]
        if tag == "np_dtype" and isinstance(body, str) and body in _DTYPES:
            return np.dtype(_DTYPES[body].np)
        if tag == "np_scalar":
            return self.np_scalar(body, where)
        if tag == "device" and isinstance(body, str) and _DEVICE_RE.fullmatch(body):
            return _DeviceName(body)
        if tag == "array" and isinstance(body, str):
            if body not in self.tensors:
                raise self.bad(where, f"array {body[:60]!r} is not a tensor the file lists")
            if body in self.owner:
                raise self.bad(where, f"array {body[:60]!r} belongs to {self.owner[body]}")
            self.attr_uses.setdefault(body, where)
            return _Array(body)
        if tag == "ref":
            return self.ref(body, where, ctx)
        if tag == "graph":
            sub = f"{where}.graph"
            self.keys(body, {"values", "nodes", "inputs", "outputs"}, sub)
            if self.nesting >= _MAX_NESTING:
                raise self.bad(sub, f"subgraphs nest deeper than {_MAX_NESTING} levels")
            self.nesting += 1
            try:
                return self.graph(body, f"{sub}.")
            finally:
                self.nesting -= 1
        raise self.bad(where, f"unknown or malformed attribute {_show(a)}")

    def geom(self, body, where):
        Geom = _geom_cls()
        self.keys(body, set(Geom._fields), f"{where}.geom")
        for k in Geom._fields:
            if k == "batched":
                self.bool(body[k], f"{where}.geom.{k}")
            else:
                self.int(body[k], f"{where}.geom.{k}", 0, None)
        return Geom(**body)

    def np_scalar(self, body, where):
        if not (isinstance(body, list) and len(body) == 2 and isinstance(body[0], str) and body[0] in _DTYPES):
            raise self.bad(where, f"np_scalar must be [dtype, number], got {_show(body)}")
        name, x = body
        dt = np.dtype(_DTYPES[name].np)
        if _nonfinite(x) and dt.kind == "f":
            return dt.type(_FLOATS[x["float"]])
        if dt.kind == "b":
            ok = type(x) is bool
        elif dt.kind in "iu":
            ok = _is_int(x) and int(np.iinfo(dt).min) <= x <= int(np.iinfo(dt).max)
        else:  # a number the dtype holds (a bigger one would overflow to inf, warning); NaN fails
            ok = type(x) in (int, float) and abs(x) <= _float_max(dt)
        if not ok:
            raise self.bad(where, f"{_show(x)} is not a {name} number")
        return dt.type(x)

    def ref(self, body, where, ctx):
        nv, node, refs = ctx
        if isinstance(body, dict) and body.keys() == {"value"}:
            r = Ref(value=self.int(body["value"], f"{where}.ref.value", 0, nv))
        elif isinstance(body, dict) and body.keys() in ({"node"}, {"node", "attr"}):
            k = self.int(body["node"], f"{where}.ref.node", 0, node)  # an earlier node only
            attr = self.str(body["attr"], f"{where}.ref.attr") if "attr" in body else None
            r = Ref(node=k, attr=attr)
        else:
            raise self.bad(where, "a ref is {'value': v}, {'node': i} or {'node': i, 'attr': a}, "
                                  f"got {_show(body)}")
        refs.append((r, where))
        return r

    def links(self, values, nodes, where) -> None:
        """Each node value is its node's output, and everything a node reads exists before it."""
        nn = len(nodes)
        ready = []  # the node after which each value holds its array (-1: before any)
        for i, v in enumerate(values):
            if v["kind"] in (NODE, SAVED):
                k = v["node"]
                if k >= nn:
                    raise self.bad(f"{where}values[{i}].node", f"{k} is out of range for {nn} nodes")
                if v["kind"] == NODE and nodes[k][2] != i:
                    raise self.bad(f"{where}values[{i}]", f"a node value whose node {k} outputs %{nodes[k][2]}")
                ready.append(k)
            else:
                ready.append(-1)
        for k, (cls, inputs, output, _, _, _, _, refs) in enumerate(nodes):
            at = f"{where}nodes[{k}] ({cls.__name__})"
            if values[output]["kind"] != NODE or values[output]["node"] != k:
                raise self.bad(f"{at}.output", f"%{output} is not a node value of this node")
            for j, vi in enumerate(inputs):
                if ready[vi] >= k:
                    raise self.bad(f"{at}.inputs[{j}]", f"%{vi} is computed by node {ready[vi]}, not before")
            for r, rwhere in refs:
                if r.value is not None and ready[r.value] >= k:
                    raise self.bad(rwhere, f"%{r.value} is computed by node {ready[r.value]}, not before")

    def inputs(self, x, values, where) -> list:
        inputs = [self.int(i, f"{where}inputs[{k}]", 0, len(values))
                  for k, i in enumerate(self.list(x, f"{where}inputs"))]
        declared = [i for i, v in enumerate(values) if v["kind"] == INPUT]
        if sorted(inputs) != declared:
            raise self.bad(f"{where}inputs", f"lists {inputs[:10]}, but the input values are {declared[:10]}")
        positions = [values[i]["position"] for i in inputs]
        ints = sorted(p for p in positions if isinstance(p, int))
        strs = [p for p in positions if isinstance(p, str)]
        if ints != list(range(len(ints))) or len(set(strs)) != len(strs):
            raise self.bad(f"{where}inputs", f"argument positions {positions[:10]} are not 0..n-1 "
                                             "and distinct keywords")
        return inputs

    def tree(self, t, where, nout, depth):
        if depth > _MAX_DEPTH:
            raise self.bad(where, f"nested deeper than {_MAX_DEPTH} levels")
        if not isinstance(t, dict) or len(t) != 1:
            raise self.bad(where, f"expected a one-key tagged object, got {_show(t)}")
        tag, body = next(iter(t.items()))
        if tag == "out":
            return ("t", self.int(body, f"{where}.out", 0, nout))
        if tag == "lit":
            if body is None or isinstance(body, (bool, int, str)) or isinstance(body, float) and math.isfinite(body):
                return ("lit", body)
            if _nonfinite(body):
                return ("lit", _FLOATS[body["float"]])
            raise self.bad(f"{where}.lit", f"expected a literal, got {_show(body)}")
        if tag in ("tuple", "list") and isinstance(body, list):
            return (tag, [self.tree(x, f"{where}[{k}]", nout, depth + 1) for k, x in enumerate(body)])
        if tag == "dict" and isinstance(body, list):
            items = []
            for k, item in enumerate(body):
                if not (isinstance(item, list) and len(item) == 2):
                    raise self.bad(f"{where}.dict[{k}]", "expected a [key, tree] pair")
                key = item[0]
                if not (key is None or isinstance(key, (bool, int, str))
                        or isinstance(key, float) and math.isfinite(key)):
                    raise self.bad(f"{where}.dict[{k}]", f"a key of JSON type {_jtype(key)}")
                items.append((key, self.tree(item[1], f"{where}.dict[{k}]", nout, depth + 1)))
            return ("dict", items)
        raise self.bad(where, f"unknown or malformed return structure {_show(t)}")


def _nonfinite(x) -> bool:
    """Whether x is the JSON form of a non-finite float, {"float": "nan" | "inf" | "-inf"}."""
    return isinstance(x, dict) and len(x) == 1 and isinstance(x.get("float"), str) and x["float"] in _FLOATS


def _float_max(dt) -> float:
    return float(ml_dtypes.finfo(dt).max)  # NumPy's finfo does not know bfloat16


def _jtype(x) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean", int: "an integer",
            float: "a number", type(None): "null"}.get(type(x), type(x).__name__)


def _show(x) -> str:
    r = repr(x) if isinstance(x, str) else json.dumps(x, allow_nan=True, default=str)
    return r if len(r) <= 60 else r[:57] + "..."


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
