"""prunus.nn: Module and Parameter, layers, losses, `functional` and `init`, in PyTorch's names.

Conv2d (conv.py), pooling layers (pooling.py), `nn.utils` and `nn.parametrize` live in their own
files; parametrize is also reachable as PyTorch's `nn.utils.parametrize`.
"""

import sys as _sys

from prunus.nn import functional, init, parametrize, utils
from prunus.nn.activation import ELU, GELU, LeakyReLU, LogSoftmax, ReLU, Sigmoid, Softmax, Tanh
from prunus.nn.conv import Conv2d
from prunus.nn.dropout import Dropout
from prunus.nn.linear import Embedding, Flatten, Identity, Linear
from prunus.nn.loss import (
    BCEWithLogitsLoss,
    CrossEntropyLoss,
    L1Loss,
    MSELoss,
    MultiMarginLoss,
    NLLLoss,
)
from prunus.nn.module import Module, ModuleDict, ModuleList, Parameter, RemovableHandle, Sequential
from prunus.nn.normalization import BatchNorm1d, BatchNorm2d, LayerNorm
from prunus.nn.pooling import AdaptiveAvgPool2d, AvgPool2d, MaxPool2d

# PyTorch's spelling, torch.nn.utils.parametrize: utils is a module, not a package, so bind the
# attribute and register the dotted name (then `import prunus.nn.utils.parametrize` works too)
utils.parametrize = parametrize
_sys.modules.setdefault("prunus.nn.utils.parametrize", parametrize)

__all__ = [
    "ELU",
    "GELU",
    "AdaptiveAvgPool2d",
    "AvgPool2d",
    "BCEWithLogitsLoss",
    "BatchNorm1d",
    "BatchNorm2d",
    "Conv2d",
    "CrossEntropyLoss",
    "Dropout",
    "Embedding",
    "Flatten",
    "Identity",
    "L1Loss",
    "LayerNorm",
    "LeakyReLU",
    "Linear",
    "LogSoftmax",
    "MSELoss",
    "MaxPool2d",
    "Module",
    "ModuleDict",
    "ModuleList",
    "MultiMarginLoss",
    "NLLLoss",
    "Parameter",
    "ReLU",
    "RemovableHandle",
    "Sequential",
    "Sigmoid",
    "Softmax",
    "Tanh",
    "functional",
    "init",
    "parametrize",
]
