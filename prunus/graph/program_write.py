"""Writing a program file: a captured Graph as JSON (closed vocabulary) plus its tensors in
safetensors (see program.py for the format)."""

from __future__ import annotations

import json
import math
import zlib

import numpy as np

from prunus import dtypes
from prunus.backend import Device
from prunus.errors import (
    ArgumentError,
    DTypeError,
)
from prunus.graph.ir import CONST, GRAD, INPUT, NODE, STATE, Graph, Ref
from prunus.graph.program_format import (
    _DTYPES,
    _KINDS,
    _MAX_DEPTH,
    FORMAT_VERSION,
    _geom_cls,
    op_registry,
)
from prunus.serialization import _crc32, _prunus_version, safetensors_bytes

FORMAT = "prunus.program"

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
        return safetensors_bytes(self.arrays, metadata)

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
            if label is None:  # optimizer state is named in the graph ("exp_avg of fc1.weight")
                label = f"{prefix}{v.name}" if v.kind == STATE and v.name else f"{prefix}%{v.index}"
            out["tensor"] = self.add_tensor(label, arr, f"{where} ({v.kind})")
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

