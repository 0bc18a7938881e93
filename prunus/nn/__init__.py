"""prunus.nn: Module and Parameter, layers, losses, `functional` and `init`, in PyTorch's names.

Conv2d (conv.py), pooling layers (pooling.py) and the rest live in their own files; `nn.utils` is
a package as in PyTorch, holding `nn.utils.parametrize`, which `nn.parametrize` re-exports.
"""

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
