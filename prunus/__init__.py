"""prunus: a readable, fast deep-learning framework.

The public surface: Tensor and the functions over it, factories, dtypes, grad modes, seeding.
Everything else lives in submodules (prunus.autograd, prunus.backend, ...).
"""

__version__ = "0.1.0"

from prunus import autograd, backend, dtypes, errors
from prunus.autograd import enable_grad, is_grad_enabled, no_grad, set_grad_enabled
from prunus.backend import Device, cuda_is_available
from prunus.backend import get_device as device
from prunus.creation import (
    arange,
    as_tensor,
    empty,
    empty_like,
    eye,
    from_numpy,
    full,
    full_like,
    linspace,
    ones,
    ones_like,
    rand,
    rand_like,
    randint,
    randn,
    randn_like,
    randperm,
    tensor,
    zeros,
    zeros_like,
)
from prunus.dtypes import (
    bfloat16,
    bool_,
    double,
    float16,
    float32,
    float64,
    get_default_dtype,
    half,
    int8,
    int16,
    int32,
    int64,
    long,
    promote_types,
    result_type,
    set_default_dtype,
    short,
    uint8,
)
from prunus.ops import *  # prunus.exp, prunus.cat, prunus.matmul, ...
from prunus.ops import abs_ as abs
from prunus.random import Generator, default_generator, initial_seed, manual_seed
from prunus.backend.threads import get_num_threads, set_num_threads
from prunus.tensor import Tensor

# Last: these import the core above (the tensor module binds its methods on first import).
from prunus import nn, serialization
from prunus.serialization import get_rng_state, load, save, set_rng_state
from prunus.graph import compile, load_program, save_program
from prunus.graph.control_flow import cond, fori_loop, while_loop

# PyTorch's spellings prunus.bool, prunus.float, prunus.int (they shadow builtins only here)
bool = bool_
float = float32
int = int32


def __getattr__(name):
    # prunus.onnx on first use: importing it doesn't import the onnx package either, but keeps
    # `import prunus` from loading the converters every time
    if name == "onnx":
        import importlib

        return importlib.import_module("prunus.onnx")
    raise AttributeError(f"module 'prunus' has no attribute {name!r}")
