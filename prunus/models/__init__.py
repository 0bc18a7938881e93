"""prunus.models: reference models -- LeNet-300-100 and LeNet-5 (lenet.py), a small VGG (vgg.py) and
ResNet-20 (resnet.py) -- and the name registry the CLI uses (`MODELS`, `get_model`)."""

from __future__ import annotations

from prunus.errors import ArgumentError
from prunus.models.lenet import LeNet5, LeNet300100, lenet5, lenet_300_100
from prunus.models.resnet import BasicBlock, ResNet, resnet_small
from prunus.models.vgg import VGG, vgg_small

MODELS = {
    "lenet_300_100": lenet_300_100,
    "lenet5": lenet5,
    "vgg_small": vgg_small,
    "resnet_small": resnet_small,
}


def get_model(name: str, **kwargs):
    """Build the model registered as `name` in MODELS, passing kwargs (num_classes=, generator=,
    ...) to its constructor; an unknown name raises ArgumentError listing the known ones."""
    if not isinstance(name, str) or name not in MODELS:
        raise ArgumentError(f"unknown model {name!r}; known models: {', '.join(sorted(MODELS))}")
    return MODELS[name](**kwargs)


__all__ = [
    "MODELS",
    "VGG",
    "BasicBlock",
    "LeNet5",
    "LeNet300100",
    "ResNet",
    "get_model",
    "lenet5",
    "lenet_300_100",
    "resnet_small",
    "vgg_small",
]
