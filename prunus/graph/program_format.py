"""The program file format's vocabulary: format name and version, limits, the JSON keys, and the
closed registry of op names a file may use (see program.py for the format)."""

from __future__ import annotations

import importlib
import inspect
import math
import pkgutil
import re

from prunus import dtypes
from prunus.autograd import Op
from prunus.graph.ir import CONST, INPUT, NODE, SAVED, STATE
from prunus.serialization import _ST_DTYPE

FORMAT = "prunus.program"
FORMAT_VERSION = 1


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


