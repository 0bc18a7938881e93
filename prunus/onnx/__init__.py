"""prunus.onnx: export a Module or function to ONNX (`export`), through the graph IR and one
converter per op (prunus/onnx/converters/). The onnx package is imported only inside `export`."""

from prunus.onnx.converters import supported_ops
from prunus.onnx.export import INSTALL_HINT, MIN_OPSET, export

__all__ = ["INSTALL_HINT", "MIN_OPSET", "export", "supported_ops"]
