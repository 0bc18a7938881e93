"""The ONNX converters, one module per family of prunus/ops/ (and control_flow.py for the ops of
prunus/graph/control_flow.py) and one `convert_<Op>` per op class; importing this package fills
the registry (`REGISTRY`: op class -> Converter)."""

from prunus.onnx.converters import (  # imported to register their converters
    activation,
    control_flow,
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


def supported_ops() -> list:
    """The names of the op classes that export to ONNX, sorted."""
    return sorted({cls.__name__ for cls in REGISTRY})


__all__ = ["REGISTRY", "RESERVED", "Converter", "converts", "supported_ops"]
