"""The export context every converter gets: ONNX names for the graph's values (state and constants
become initializers on first use), node and constant emission, opset-dependent helpers, what is
known about dynamic axes, and the node-by-node conversion of a graph (`convert_nodes`), also of the
subgraphs of control flow (`child`). The export driver is prunus/onnx/export.py.

Dynamic axes are known by their sizes: export captures the function once with the example inputs
and once more per dynamic axis with that axis one larger, so every dimension of every value has a
*signature*, its sizes across the captures. A dimension is dynamic when its signature is not
constant; two dimensions with equal signatures are taken to be the same size at run time.
"""

from __future__ import annotations

import itertools
import math

import numpy as np

from prunus import dtypes
from prunus.errors import ArgumentError, fmt_shape
from prunus.graph.ir import CONST, GRAD, NODE, SAVED, STATE
from prunus.onnx.converters._registry import REFUSED, REGISTRY, RESERVED
from prunus.ops.conv import Geom

INT64_MAX = 2**63 - 1
INT64_MIN = -(2**63)


class Context:
    """One export's state: the graph being converted, the ONNX nodes and initializers so far."""

    def __init__(self, onnx, graph, opset: int, sigs: dict, variants: list, state_names: dict,
                 to_numpy, folded=None, symbols=()):
        self.onnx, self.helper = onnx, onnx.helper
        self.graph, self.opset = graph, opset
        self.sigs = sigs  # value index -> tuple (one per dim) of sizes across the captures
        self.variants = variants  # the other captures' graphs, value for value like `graph`
        self.symbols = tuple(symbols)  # the dynamic axis each variant grew, variant for variant
        self.state_names = state_names  # id(Tensor) -> a readable name ("fc1.weight")
        self.to_numpy = to_numpy
        self.folded = folded or {}  # value index -> (Tensor, name hint): see _fold.py
        self.nodes: list = []
        self.initializers: list = []
        self.node = None  # the IR node being converted, for messages
        self._names: dict = {}  # value index -> ONNX name
        self._taken: set = set()
        self._small: dict = {}  # (dtype, shape, bytes) -> name: small constants are shared
        self._serial = itertools.count(1)  # ONNX node names
        self.scope = ""  # where a subgraph sits (" in the true branch of op Cond ..."), for messages
        self.memo: dict = {}  # converters' own notes about this graph (see control_flow.py)

    def child(self, graph, variants, nodes=None, where: str = "") -> Context:
        """A context for a subgraph of this one (a branch or loop body, `graph`, with its captures
        at the other sizes `variants`): its own value names, and this context's name space (ONNX
        names are unique across a model and its subgraphs) and initializers (a subgraph reads
        the outer scope by name). `nodes`: emit into that list instead of a new one (to inline
        the subgraph here). Set `folded` if any, bind the subgraph's inputs, then
        `convert_nodes()`."""
        c = Context(self.onnx, graph, self.opset, signatures(graph, variants), variants,
                    self.state_names, self.to_numpy, None, self.symbols)
        c._taken, c._small, c._serial = self._taken, self._small, self._serial
        c.initializers = self.initializers
        if nodes is not None:
            c.nodes = nodes
        c.scope = (f" in {where}" if where else "") + self.scope
        return c

    # -- names ------------------------------------------------------------------------------

    def fresh(self, hint: str) -> str:
        name, i = hint, 0
        while name in self._taken:
            i += 1
            name = f"{hint}_{i}"
        self._taken.add(name)
        return name

    def reserve(self, name: str) -> bool:
        """Claim `name` for the graph (an output written by an Identity); False if taken."""
        if name in self._taken:
            return False
        self._taken.add(name)
        return True

    def bound(self, vi: int) -> bool:
        return vi in self._names

    def bind(self, vi: int, name: str) -> None:
        """Value `vi` gets the ONNX name `name` (graph inputs and outputs)."""
        self._names[vi] = name
        self._taken.add(name)

    def outer_constants(self) -> dict:
        """value index -> name of the values named so far that are initializers (state,
        constants, folded values), which any subgraph of the model may read."""
        return {vi: n for vi, n in self._names.items()
                if vi in self.folded or self.graph.values[vi].kind in (STATE, CONST)}

    def name(self, vi: int) -> str:
        n = self._names.get(vi)
        if n is not None:
            return n
        v = self.graph.values[vi]
        if vi in self.folded:
            t, hint = self.folded[vi]
            n = self.const(self.to_numpy(t.data), hint, share=False)
        elif v.kind in (STATE, CONST):
            self._check_constant(v)
            n = self.const(self.to_numpy(v.tensor.data),
                           self.state_names.get(id(v.tensor)) or f"{v.kind}_{vi}", share=False)
        elif v.kind == NODE:
            n = self.fresh(f"{self.graph.nodes[v.node].name.lower()}_{vi}")
        elif v.kind == GRAD:
            raise self.fail(f"it reads the .grad of a parameter {fmt_shape(v.shape)} (value "
                            f"%{vi}); export a forward computation")
        elif v.kind == SAVED:
            raise self.fail(f"it reads an array saved by an earlier op's forward (value %{vi}), as "
                            "a backward pass does; export a forward computation")
        else:  # INPUT values are bound by the driver
            raise self.fail(f"value %{vi} ({v.kind}) has no ONNX name")
        self._names[vi] = n
        return n

    def inp(self, node, k: int) -> str:
        return self.name(node.inputs[k])

    def out(self, node) -> str:
        return self.name(node.output)

    # -- emitting ---------------------------------------------------------------------------

    def emit(self, op_type: str, inputs, out=None, n_out: int = 1, **attrs):
        """Append one ONNX node; returns its output name (a list when n_out > 1). `out` names the
        output (default: a fresh name); inputs may be '' for an omitted optional input."""
        if out is None:
            outs = [self.fresh(op_type.lower()) for _ in range(n_out)]
        else:
            outs = [out] if isinstance(out, str) else list(out)
        attrs = {k: v for k, v in attrs.items() if v is not None}
        self.nodes.append(self.helper.make_node(op_type, list(inputs), outs,
                                                name=f"{op_type}_{next(self._serial)}", **attrs))
        return outs[0] if len(outs) == 1 else outs

    def const(self, array, hint: str = "const", share: bool = True) -> str:
        """An initializer holding `array`; small ones are shared when `share`."""
        arr = np.asarray(array)
        if not arr.flags.c_contiguous:  # (not ascontiguousarray: it makes 0-d arrays 1-d)
            arr = arr.copy()
        key = None
        if share and arr.size <= 64:
            key = (arr.dtype.str, arr.shape, arr.tobytes())
            if key in self._small:
                return self._small[key]
        name = self.fresh(hint)
        self.initializers.append(self.onnx.numpy_helper.from_array(arr, name))
        if key is not None:
            self._small[key] = name
        return name

    def ints(self, values) -> str:
        return self.const(np.asarray(values, dtype=np.int64), "ints")

    def scalar(self, value, np_dtype) -> str:
        return self.const(np.asarray(value, dtype=np_dtype), "scalar")

    def cast(self, x: str, np_dtype, out=None) -> str:
        return self.emit("Cast", [x], out, to=self.onnx_type(np_dtype))

    def reduce(self, op_type: str, x: str, axes, keepdims: bool, out=None) -> str:
        """A Reduce* node over `axes`: an input from opset 18 (ReduceSum: 13), before that an
        attribute."""
        axes = [int(a) for a in axes]
        if op_type == "ReduceSum" or self.opset >= 18:
            return self.emit(op_type, [x, self.ints(axes)], out, keepdims=int(keepdims))
        return self.emit(op_type, [x], out, axes=axes, keepdims=int(keepdims))

    def squeeze(self, x: str, axes, out=None) -> str:
        return self.emit("Squeeze", [x, self.ints(list(axes))], out)

    def unsqueeze(self, x: str, axes, out=None) -> str:
        return self.emit("Unsqueeze", [x, self.ints(list(axes))], out)

    # -- converting a graph -----------------------------------------------------------------

    def convert_nodes(self) -> None:
        """Convert every node of the graph (those not folded to constants), in order, with its
        converter from the registry; inputs must be bound already."""
        for node in self.graph.nodes:
            if node.output in self.folded:
                continue
            self.node = node
            if node.mutates:
                written = ", ".join(f"%{node.inputs[i]}" for i in node.mutates)
                raise self.fail(
                    f"it updates {written} in place, and an ONNX graph can't: export an inference "
                    "function (eval mode, no optimizer steps or running-statistics updates)"
                )
            conv = REGISTRY.get(node.op)
            if conv is None:
                raise self._unsupported(node)
            if self.opset < conv.min_opset:
                raise self.fail(f"it needs opset >= {conv.min_opset}, exporting opset {self.opset}")
            self.check_attrs(node, conv.varying)
            conv.fn(self, node)
        self.node = None

    def _unsupported(self, node) -> ArgumentError:
        if node.name in RESERVED:
            why = f"it is reserved for ONNX {RESERVED[node.name]} and does not export yet"
        elif node.name in REFUSED:
            why = REFUSED[node.name]
        else:
            why = "it has no ONNX converter"
        ops = ", ".join(sorted({cls.__name__ for cls in REGISTRY}))
        return self.fail(f"{why}. Ops that export: {ops}")

    def check_attrs(self, node, varying) -> None:
        """Every attribute not in `varying` must be the same in every capture."""
        for name, a in node.attrs.items():
            if name in varying:
                continue
            for sym, g in zip(self.symbols, self.variants):
                b = g.nodes[node.index].attrs[name]
                if not _same_attr(a, b):
                    raise self.fail(
                        f"its attribute {name}={_short(a)} becomes {_short(b)} when dynamic axis "
                        f"{sym!r} grows: Python computed it from that size while tracing, so ONNX "
                        "would keep the traced value; export that axis static"
                    )

    def value_info(self, vi: int, name: str, dim_names=None):
        """A ValueInfoProto for value `vi` named `name`: static dims as sizes, dynamic ones by
        `dim_names` (dim -> symbol), else unnamed."""
        v = self.graph.values[vi]
        dim_names = dim_names or {}
        dims = [dim_names.get(d) if self.is_dynamic(vi, d) else v.shape[d]
                for d in range(len(v.shape))]
        return self.helper.make_tensor_value_info(name, self.onnx_type(self.np_dtype(vi)), dims)

    # -- dtypes -----------------------------------------------------------------------------

    def np_dtype(self, vi: int):
        return dtypes.from_name(self.graph.values[vi].dtype).np

    def onnx_type(self, np_dtype) -> int:
        return self.helper.np_dtype_to_tensor_dtype(np.dtype(np_dtype))

    # -- shapes and dynamic axes ------------------------------------------------------------

    def attr_variants(self, node, name: str) -> list:
        """Attribute `name` of `node` in every capture, the example inputs' first."""
        return [node.attrs[name]] + [g.nodes[node.index].attrs[name] for g in self.variants]

    def shape(self, vi: int) -> tuple:
        """The shape in the capture with the example inputs."""
        return self.graph.values[vi].shape

    def sig(self, vi: int) -> tuple:
        return self.sigs[vi]

    def is_dynamic(self, vi: int, dim: int) -> bool:
        return len(set(self.sigs[vi][dim])) > 1

    def static_shape(self, vi: int, what: str) -> tuple:
        """The shape of `vi`, which the converter bakes into the model as `what`: an error when
        one of its dims is dynamic."""
        for d in range(len(self.shape(vi))):
            if self.is_dynamic(vi, d):
                raise self.fail(
                    f"{what} depends on dim {d} of a {self._describe_value(vi)}, which changes "
                    "with a dynamic axis; export with that axis static"
                )
        return self.shape(vi)

    def shape_operand(self, out_sigs, src: str, src_sigs, what: str):
        """An int64 shape for Reshape that gives `out_sigs` from the tensor `src` (dims `src_sigs`)
        at any size of the dynamic axes: static dims literally, a dynamic dim as 0 (copy) when the
        source has it at the same position, as -1 when it is the only one left, else read at run
        time from Shape(src) (a dim of the source elsewhere) or inferred (-1, once). Returns
        (name, allowzero)."""
        dims, unresolved = [], []
        for d, s in enumerate(out_sigs):
            if len(set(s)) == 1:
                dims.append(s[0])
            elif d < len(src_sigs) and src_sigs[d] == s:
                dims.append(0)
            else:
                dims.append(None)
                unresolved.append(d)
        literal_zero = any(len(set(s)) == 1 and s[0] == 0 for s in out_sigs)
        if literal_zero:  # an empty dim: 0 must mean 0, so nothing may be copied or inferred
            if len(dims) != sum(len(set(s)) == 1 for s in out_sigs):
                raise self.fail(f"{what}: an empty dim next to a dynamic one can't be expressed")
            if self.opset < 14:
                raise self.fail(f"{what}: a shape with an empty dim needs opset >= 14 (allowzero)")
            return self.ints(dims), 1
        if len(unresolved) <= 1:
            return self.ints([-1 if x is None else x for x in dims]), 0
        found = {d: next((j for j, s in enumerate(src_sigs) if s == out_sigs[d]), None)
                 for d in unresolved}
        if sum(j is None for j in found.values()) > 1:
            raise self.fail(
                f"{what}: dims {[d for d, j in found.items() if j is None]} of the result follow "
                f"the dynamic axes (sizes {[out_sigs[d] for d in unresolved]} across the traced "
                "sizes) but are no dims of the input, and ONNX Reshape can infer only one (-1)"
            )
        shape = self.emit("Shape", [src])
        parts = []
        for d, x in enumerate(dims):
            j = found.get(d)
            if x is not None or j is None:  # a literal, or the one dim left to infer
                parts.append(self.ints([-1 if x is None else x]))
            else:
                parts.append(self.emit("Slice", [shape, self.ints([j]), self.ints([j + 1])]))
        return self.emit("Concat", parts, axis=0), 0

    # -- messages ---------------------------------------------------------------------------

    def _describe_value(self, vi: int) -> str:
        v = self.graph.values[vi]
        return f"{v.dtype} {fmt_shape(v.shape)} value %{vi}"

    def describe(self, node) -> str:
        out = self.graph.values[node.output]
        args = ", ".join(f"%{i}" for i in node.inputs)
        return (f"op {node.name} (node %{node.output} = {node.name}({args}) -> {out.dtype} "
                f"{fmt_shape(out.shape)})")

    def fail(self, msg: str) -> ArgumentError:
        where = self.describe(self.node) if self.node is not None else "the graph"
        return ArgumentError(f"ONNX export of {where}{self.scope}: {msg}")

    def _check_constant(self, v) -> None:
        """A constant made while tracing (or a tensor made there and read as state) must be the
        same in every capture: one that differs was computed from the size of a dynamic axis,
        and baking it in would be wrong at other sizes."""
        if not same_in_captures(v, self.variants, self.to_numpy):
            a = v.tensor
            raise self.fail(
                f"a tensor {v.dtype} {fmt_shape(a.shape)} made while tracing (value %{v.index}) "
                "changes with the size of a dynamic axis; make it from the input (e.g. "
                "zeros_like) or export that axis static"
            )


def signatures(graph, variants) -> dict:
    """value index -> each dim's sizes across the captures (the example inputs' first)."""
    return {v.index: tuple(tuple([v.shape[d]] + [g.values[v.index].shape[d] for g in variants])
                           for d in range(len(v.shape)))
            for v in graph.values}


def _same_attr(a, b) -> bool:
    if isinstance(a, Geom) and isinstance(b, Geom):  # the batch size and the layout it picks
        return a._replace(n=0, batched=False) == b._replace(n=0, batched=False)
    if hasattr(a, "shape") and hasattr(a, "dtype"):  # arrays and NumPy scalars (NaN equals NaN)
        if not (hasattr(b, "shape") and tuple(a.shape) == tuple(b.shape)):
            return False
        x, y = np.asarray(a), np.asarray(b)
        return bool(np.array_equal(x, y, equal_nan=x.dtype.kind in "fc" and y.dtype.kind in "fc"))
    if type(a) in (tuple, list):
        return type(a) is type(b) and len(a) == len(b) and all(map(_same_attr, a, b))
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    try:
        return bool(a == b)
    except Exception:  # noqa: BLE001  (an object whose == doesn't give a bool: not the same)
        return a is b


def _short(v) -> str:
    r = repr(v)
    return r if len(r) <= 80 else r[:77] + "..."


def same_in_captures(v, variants, to_numpy) -> bool:
    """Whether STATE/CONST value `v` holds the same tensor, or equal data, in every capture."""
    if v.kind not in (STATE, CONST):
        return True
    a = None
    for g in variants:
        other = g.values[v.index].tensor
        if other is v.tensor:  # the same parameter or buffer
            continue
        a = to_numpy(v.tensor.data) if a is None else a
        b = to_numpy(other.data)
        if a.shape != b.shape or not np.array_equal(a, b, equal_nan=a.dtype.kind in "fc"):
            return False
    return True
