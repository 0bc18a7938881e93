"""The ONNX converters, one module per family of prunus/ops/ and one `convert_<Op>` per op class;
importing this package fills the registry (`REGISTRY`: op class -> Converter)."""

from prunus.onnx.converters import (  # imported to register their converters
    activation,
    conv,
    convert,
    elementwise,
    indexing,
    linalg,
    loss,
    movement,
    reduce,
)
from prunus.onnx.converters._registry import REGISTRY, RESERVED, Converter, converts

# Control flow (prunus.cond -> ONNX If, prunus.while_loop -> ONNX Loop) is reserved: see RESERVED
# in _registry.py and add its family module (control) to the import above when the ops land.


def supported_ops() -> list:
    """The names of the op classes that export to ONNX, sorted."""
    return sorted({cls.__name__ for cls in REGISTRY})


__all__ = ["REGISTRY", "RESERVED", "Converter", "converts", "supported_ops"]
