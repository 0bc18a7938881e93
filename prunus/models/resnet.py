"""A small ResNet for 32x32 RGB inputs: the CIFAR ResNet-20 of He et al. 2016 (section 4.2) with
BasicBlocks, BatchNorm and projection (1x1 conv + BN) shortcuts where the shape changes. Module
names follow torchvision's ResNet (`conv1`, `bn1`, `layerK.i.conv1`, `downsample`, `fc`)."""

from __future__ import annotations

from prunus import nn
from prunus.nn import init


def conv3x3(in_planes: int, out_planes: int, stride: int = 1, generator=None) -> nn.Conv2d:
    """3x3 convolution with padding 1 and no bias (a BatchNorm follows)."""
    return nn.Conv2d(in_planes, out_planes, 3, stride=stride, padding=1, bias=False, generator=generator)


class BasicBlock(nn.Module):
    """conv3x3-BN-ReLU-conv3x3-BN, plus the shortcut, then ReLU. The shortcut is the identity when
    stride is 1 and the channel count is unchanged, else `downsample` = Sequential(1x1 conv with
    `stride`, BatchNorm2d) (He et al.'s option B)."""

    expansion = 1

    def __init__(self, in_planes: int, planes: int, stride: int = 1, generator=None):
        super().__init__()
        self.conv1 = conv3x3(in_planes, planes, stride, generator=generator)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU()
        self.conv2 = conv3x3(planes, planes, generator=generator)
        self.bn2 = nn.BatchNorm2d(planes)
        if stride != 1 or in_planes != planes:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False, generator=generator),
                nn.BatchNorm2d(planes),
            )
        else:
            self.downsample = None
        self.stride = stride

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class ResNet(nn.Module):
    """A CIFAR-style ResNet: conv3x3(in_channels -> widths[0])-BN-ReLU, then one stage per entry of
    `blocks` (stage k has blocks[k] BasicBlocks of widths[k] channels; every stage after the first
    starts with stride 2), global average pooling and a Linear classifier.

    Input: (N, in_channels, H, W), by default (N, 3, 32, 32) (any H, W >= 4*2**(stages-1) works).
    Output: (N, num_classes) logits. As in torchvision, convolutions start
    kaiming_normal_(mode="fan_out", nonlinearity="relu"), BatchNorm at weight 1, bias 0, and the
    Linear layer keeps its default initialisation, all drawn from `generator` (the default generator
    when None)."""

    def __init__(self, blocks=(3, 3, 3), widths=(16, 32, 64), num_classes: int = 10, in_channels: int = 3,
                 generator=None):
        super().__init__()
        self.conv1 = conv3x3(in_channels, widths[0], generator=generator)
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.relu = nn.ReLU()
        in_planes = widths[0]
        for k, (n, planes) in enumerate(zip(blocks, widths)):
            stride = 1 if k == 0 else 2
            layer = []
            for i in range(n):
                layer.append(BasicBlock(in_planes, planes, stride if i == 0 else 1, generator=generator))
                in_planes = planes
            self.add_module(f"layer{k + 1}", nn.Sequential(*layer))
        self.num_stages = len(blocks)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(in_planes, num_classes, generator=generator)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu", generator=generator)

    def forward(self, x):
        x = self.relu(self.bn1(self.conv1(x)))
        for k in range(self.num_stages):
            x = getattr(self, f"layer{k + 1}")(x)
        x = self.avgpool(x)
        return self.fc(x.flatten(1))


def resnet_small(num_classes: int = 10, generator=None) -> ResNet:
    """ResNet-20 for (N, 3, 32, 32) inputs: 3 stages of 3 BasicBlocks with 16, 32 and 64 channels,
    projection shortcuts where the shape changes, global average pooling, Linear(64, num_classes)."""
    return ResNet((3, 3, 3), (16, 32, 64), num_classes=num_classes, generator=generator)
