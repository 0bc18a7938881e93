"""prunus.nn: Module and Parameter, layers, losses, `functional` and `init`, in PyTorch's names.

Conv2d and pooling layers, and `nn.utils`, live in their own files (added separately).
"""

from prunus.nn import functional, init, utils
from prunus.nn.activation import ELU, GELU, LeakyReLU, LogSoftmax, ReLU, Sigmoid, Softmax, Tanh
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

__all__ = [
    "ELU",
    "GELU",
    "BCEWithLogitsLoss",
    "BatchNorm1d",
    "BatchNorm2d",
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
]
