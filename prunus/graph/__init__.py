"""Static graphs: capture (capture.py) into an IR (ir.py), optimization passes (passes/), an
executor (executor.py), `prunus.compile` (compile.py), programs saved as files (program.py)."""

from prunus.graph.capture import capture
from prunus.graph.compile import Compiled, CompiledModule, compile
from prunus.graph.executor import Executor
from prunus.graph.ir import Graph, Node, Value
from prunus.graph.program import (
    Program,
    load_program,
    load_program_bytes,
    save_program,
    save_program_bytes,
)

__all__ = [
    "Compiled",
    "CompiledModule",
    "Executor",
    "Graph",
    "Node",
    "Program",
    "Value",
    "capture",
    "compile",
    "load_program",
    "load_program_bytes",
    "save_program",
    "save_program_bytes",
]
