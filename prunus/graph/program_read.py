"""Reading a program file: the safetensors header parsed strictly, then the whole JSON structure
checked before anything is built (see program.py for the format). Every failure is a
ModelFormatError or ChecksumError."""

from __future__ import annotations

import json
import math
import re
import zlib
from dataclasses import dataclass

import ml_dtypes
import numpy as np

from prunus.errors import (
    ChecksumError,
    ModelFormatError,
)
from prunus.graph.ir import CONST, INPUT, NODE, SAVED, STATE, Ref
from prunus.graph.program_format import (
    _CRC_RE,
    _DEVICE_RE,
    _DTYPES,
    _FLOATS,
    _KIND_KEYS,
    _KINDS,
    _MAX_DEPTH,
    _MAX_HEADER,
    _MAX_NESTING,
    _NODE_KEYS,
    _PROGRAM_KEYS,
    _ST_NAME,
    _VALUE_KEYS,
    FORMAT_VERSION,
    _forward_signature,
    _geom_cls,
    op_registry,
)

FORMAT = "prunus.program"

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


