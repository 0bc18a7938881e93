"""Static graphs: capture (capture.py) into an IR (ir.py), optimization passes (passes/), an
executor (executor.py), `prunus.compile` (compile.py)."""

from prunus.graph.capture import capture
from prunus.graph.compile import Compiled, CompiledModule, compile
from prunus.graph.executor import Executor
from prunus.graph.ir import Graph, Node, Value

__all__ = ["Compiled", "CompiledModule", "Executor", "Graph", "Node", "Value", "capture", "compile"]
