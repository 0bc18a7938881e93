"""A small VGG-style network for 32x32 RGB inputs (CIFAR-10-sized): conv3x3[-BN]-ReLU blocks with
2x2 max pooling, then a two-layer classifier. Module names follow torchvision's VGG (`features.i`,
`classifier.i`) so state_dict keys read like PyTorch's."""

from __future__ import annotations

from prunus import nn
from prunus.nn import init

# channel counts of the 3x3 convolutions, "M" for a 2x2 max pool: 32x32 -> 2x2 after four pools
SMALL_CFG = (32, "M", 64, "M", 128, 128, "M", 256, 256, "M")


class VGG(nn.Module):
    """VGG-style network: `features` (a Sequential of Conv2d(3x3, padding 1)[, BatchNorm2d], ReLU
    and MaxPool2d(2) as listed in `cfg`), flatten, then `classifier` = Linear(c*s*s, hidden) ->
    ReLU -> Dropout(dropout) -> Linear(hidden, num_classes).

    Input: (N, in_channels, image_size, image_size), by default (N, 3, 32, 32). Output:
    (N, num_classes) logits. As in torchvision, convolutions keep their bias even with batch norm
    and start kaiming_normal_(mode="fan_out", nonlinearity="relu") with zero bias; BatchNorm
    starts at weight 1, bias 0; the Linear layers keep their default initialisation. All draws
    (and the dropout masks) come from `generator` (the default generator when None)."""

    def __init__(self, cfg=SMALL_CFG, num_classes: int = 10, batch_norm: bool = True, in_channels: int = 3,
                 image_size: int = 32, hidden: int = 256, dropout: float = 0.5, generator=None):
        super().__init__()
        layers, c, size = [], in_channels, image_size
        for v in cfg:
            if v == "M":
                layers.append(nn.MaxPool2d(2))
                size //= 2
                continue
            layers.append(nn.Conv2d(c, v, 3, padding=1, generator=generator))
            if batch_norm:
                layers.append(nn.BatchNorm2d(v))
            layers.append(nn.ReLU())
            c = v
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(
            nn.Linear(c * size * size, hidden, generator=generator),
            nn.ReLU(),
            nn.Dropout(dropout, generator=generator),
            nn.Linear(hidden, num_classes, generator=generator),
        )
        for m in self.features:
            if isinstance(m, nn.Conv2d):
                init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu", generator=generator)
                init.zeros_(m.bias)

    def forward(self, x):
        x = self.features(x)
        return self.classifier(x.flatten(1))


def vgg_small(num_classes: int = 10, batch_norm: bool = True, generator=None) -> VGG:
    """A small VGG for (N, 3, 32, 32) inputs: conv 32-M-64-M-128-128-M-256-256-M (3x3, padding 1,
    BatchNorm when batch_norm, ReLU), then Linear(1024, 256)-ReLU-Dropout(0.5)-Linear(256,
    num_classes)."""
    return VGG(SMALL_CFG, num_classes=num_classes, batch_norm=batch_norm, generator=generator)
