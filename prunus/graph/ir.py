"""The graph IR: values (what flows), nodes (one op application each), and the graph that holds
them, with its readable text form (`print`) and Graphviz source (`to_dot`).

A node names its op class (a primitive of prunus/ops/); nothing here re-implements an op's math.
Values are the graph's inputs, its state (tensors that live outside it and are read live on every
run: parameters, buffers, optimizer state, gradients that existed before the call), constants
(tensors made while tracing that don't depend on the inputs), node outputs, and arrays an earlier
node's op saved for a later one (a forward op's saved activations used by its backward op).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

# value kinds
INPUT, STATE, GRAD, CONST, NODE, SAVED = "input", "state", "grad", "const", "node", "saved"


@dataclass(eq=False)
class Value:
    index: int
    kind: str
    shape: tuple
    dtype: str  # NumPy's dtype name ("float32"); prunus dtypes map one to one
    tensor: Any = None  # STATE/CONST: the Tensor; GRAD: the parameter whose .grad is read
    node: int | None = None  # NODE: the producing node; SAVED: the node whose op saved it
    attr: str | None = None  # SAVED: the op attribute
    requires_grad: bool = False
    name: str | None = None  # a readable name when one is known (a parameter's)
    position: Any = None  # INPUT: the argument's position (int) or keyword (str)
    initial: Any = None  # CONST: its array as it was when the trace first read it

    def label(self) -> str:
        return f"%{self.index}"


@dataclass(eq=False)
class Backward:
    """The backward half of a graph that a compiled call runs as one autograd op (see
    prunus/graph/differentiable.py): nodes from the first one that reads one of `grad_inputs`
    (the gradients arriving at values `outputs`, in order) on compute `grads`, the gradients of
    `targets`: ("input", position) for an argument, ("tensor", t) for a tensor the graph reads
    live (a parameter). A grad is None where no output depends on its target."""

    outputs: list
    grad_inputs: list
    targets: list
    grads: list


@dataclass(frozen=True)
class Ref:
    """An attribute that refers into the graph: the op of node `node` itself (attr None), one of
    its saved attributes, or the array of value `value`."""

    node: int | None = None
    attr: str | None = None
    value: int | None = None


def iter_refs(a):
    """The Refs in an attribute (or a dict/list of them), nested tuples and lists included."""
    if isinstance(a, Ref):
        yield a
    elif type(a) in (tuple, list):
        for x in a:
            yield from iter_refs(x)
    elif type(a) is dict:
        for x in a.values():
            yield from iter_refs(x)


@dataclass(eq=False)
class Node:
    index: int
    op: type  # an Op subclass
    inputs: list  # value indices
    output: int  # value index
    attrs: dict = field(default_factory=dict)  # literals and Refs (also inside tuples/lists)
    needs_input_grad: tuple = ()
    grad_enabled: bool = False  # grad mode while it ran (some forwards keep saved values by it)
    mutates: tuple = ()  # positions of inputs it writes in place
    has_refs: bool = False
    inplace: int | None = None  # set by memory planning: write the result over this input

    @property
    def name(self) -> str:
        return self.op.__name__


def _fmt_attr(v) -> str:
    if isinstance(v, Ref):
        if v.value is not None:
            return f"%{v.value}"
        return f"@{v.node}" + (f".{v.attr}" if v.attr else "")
    if isinstance(v, (tuple, list)) and type(v) in (tuple, list):
        inner = ", ".join(_fmt_attr(x) for x in v)
        return f"({inner})" if isinstance(v, tuple) else f"[{inner}]"
    if hasattr(v, "shape") and hasattr(v, "dtype") and not isinstance(v, (int, float)):
        return f"array{tuple(v.shape)}:{v.dtype}"
    r = repr(v)
    return r if len(r) <= 60 else r[:57] + "..."


class Graph:
    """Values and nodes in execution order; `inputs`/`outputs` are value indices, `out_tree`
    rebuilds the function's return structure, `grad_outputs` maps a parameter to the value its
    .grad gets, `cleared_grads` lists parameters whose .grad the function leaves None."""

    def __init__(self):
        self.values: list[Value] = []
        self.nodes: list[Node] = []
        self.inputs: list[int] = []
        self.outputs: list[int] = []
        self.out_tree: Any = None
        self.grad_outputs: list[tuple] = []  # (parameter Tensor, value index)
        self.cleared_grads: list = []  # parameters whose .grad ends None
        self.cleared_grads_first: list = []  # parameters the function's zero_grad cleared
        self.guards: list[tuple] = []  # (description, fn, expected)
        self.backward: Backward | None = None  # set when a call's result stays differentiable
        self.device = None  # set by capture: the one device the graph runs on

    # -- building -----------------------------------------------------------------------------

    def add_value(self, kind, shape, dtype, **kw) -> Value:
        v = Value(len(self.values), kind, tuple(shape), str(dtype), **kw)
        self.values.append(v)
        return v

    # -- reading ------------------------------------------------------------------------------

    def consumers(self) -> dict:
        """value index -> the nodes that read it (in order)."""
        out: dict = {}
        for n in self.nodes:
            for i in n.inputs:
                out.setdefault(i, []).append(n.index)
        return out

    def summary(self) -> dict:
        kinds: dict = {}
        for v in self.values:
            kinds[v.kind] = kinds.get(v.kind, 0) + 1
        return {"nodes": len(self.nodes), "values": kinds}

    def _value_text(self, v: Value) -> str:
        t = f"{v.dtype}{list(v.shape)}"
        return f"{v.label()}: {t}" + (f" ({v.name})" if v.name else "")

    def print(self, file=None) -> str:
        """The graph as text, one line per value or node; printed (to `file`) and returned."""
        lines = []
        ins = ", ".join(self._value_text(self.values[i]) for i in self.inputs)
        lines.append(f"graph({ins}):")
        for v in self.values:
            if v.kind in (STATE, GRAD, CONST):
                lines.append(f"  {self._value_text(v)} = {v.kind}")
            elif v.kind == SAVED:
                lines.append(f"  {self._value_text(v)} = saved @{v.node}.{v.attr}")
        for n in self.nodes:
            args = ", ".join(f"%{i}" for i in n.inputs)
            attrs = ", ".join(f"{k}={_fmt_attr(a)}" for k, a in n.attrs.items())
            mut = f"  # writes {', '.join(f'%{n.inputs[i]}' for i in n.mutates)}" if n.mutates else ""
            out = self.values[n.output]
            lines.append(
                f"  {out.label()}: {out.dtype}{list(out.shape)} = {n.name}({args}"
                + (f"; {attrs}" if attrs else "") + f"){mut}"
            )
        names = {id(v.tensor): f"{v.name} (%{v.index})" if v.name else f"%{v.index}"
                 for v in self.values if v.kind == STATE}
        for target, vi in self.grad_outputs:
            who = f"input {target[1]}" if target[0] == "input" else names.get(id(target[1]), "a tensor")
            lines.append(f"  .grad of {who} <- %{vi}")
        lines.append("  return " + ", ".join(f"%{i}" for i in self.outputs))
        b = self.backward
        if b is not None:
            for target, vi in zip(b.targets, b.grads):
                who = f"input {target[1]}" if target[0] == "input" else names.get(id(target[1]), "a tensor")
                lines.append(f"  backward: grad of {who} <- {'none' if vi is None else f'%{vi}'}")
            for vo, vg in zip(b.outputs, b.grad_inputs):
                lines.append(f"  backward: %{vg} is the gradient arriving at %{vo}")
        text = "\n".join(lines)
        print(text, file=file)
        return text

    def to_dot(self, title: str = "prunus graph") -> str:
        """Graphviz source: values as ellipses (inputs and state shaded), ops as boxes."""
        esc = lambda s: str(s).replace('"', '\\"')
        lines = [f'digraph "{esc(title)}" {{', "  rankdir=TB;", '  node [fontname="Helvetica"];']
        used = {i for n in self.nodes for i in n.inputs} | set(self.outputs) | set(self.inputs)
        for v in self.values:
            if v.kind == NODE or v.index not in used:
                continue
            color = {INPUT: "lightblue", STATE: "khaki", GRAD: "khaki", CONST: "gray90",
                     SAVED: "white"}[v.kind]
            label = f"{v.name or v.kind} {v.label()}\\n{v.dtype}{list(v.shape)}"
            lines.append(f'  v{v.index} [shape=ellipse, style=filled, fillcolor={color}, label="{esc(label)}"];')
        for n in self.nodes:
            out = self.values[n.output]
            lines.append(f'  n{n.index} [shape=box, label="{esc(n.name)}\\n{out.dtype}{list(out.shape)}"];')
            for i in n.inputs:
                src = self.values[i]
                a = f"n{src.node}" if src.kind == NODE else f"v{i}"
                lines.append(f"  {a} -> n{n.index};")
        for k, i in enumerate(self.outputs):
            lines.append(f'  out{k} [shape=plaintext, label="output {k}"];')
            src = self.values[i]
            lines.append(f"  {'n' + str(src.node) if src.kind == NODE else 'v' + str(i)} -> out{k};")
        lines.append("}")
        return "\n".join(lines)

    def render(self, path: str, title: str = "prunus graph") -> str:
        """Draw the graph to `path` (.png, .svg or .pdf) with Graphviz's `dot` program, written
        atomically; needs Graphviz installed (apt install graphviz, brew install graphviz)."""
        import os
        import shutil
        import subprocess

        from prunus._fileio import atomic_write
        from prunus.errors import ArgumentError, MissingDependencyError

        fmt = os.path.splitext(path)[1].lstrip(".").lower()
        if fmt not in ("png", "svg", "pdf"):
            raise ArgumentError(f"Graph.render: {path!r}: name the file .png, .svg or .pdf")
        dot = shutil.which("dot")
        if dot is None:
            raise MissingDependencyError(
                "Graph.render needs Graphviz's dot program (apt install graphviz); "
                "Graph.to_dot() gives the source without it"
            )
        out = subprocess.run([dot, f"-T{fmt}"], input=self.to_dot(title).encode(),
                             capture_output=True, check=False, timeout=120)
        if out.returncode != 0:
            raise ArgumentError(f"Graph.render: dot failed: {out.stderr.decode(errors='replace').strip()}")
        atomic_write(path, out.stdout)
        return path
