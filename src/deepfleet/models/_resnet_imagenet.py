"""ImageNet-style ResNet-18 and ResNet-50 (He et al., 2016; stride on the 3x3 conv, "v1.5").

Written here because torchvision is not a dependency. Like the CIFAR ResNet, each model is a
flat Sequential (stem, blocks..., head) so strategies can split or wrap it by block.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

from torch import Tensor, nn

from deepfleet.models._resnet import BasicBlock, shortcut

STAGE_WIDTHS = (64, 128, 256, 512)


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3 (carries the stride), 1x1 expand by 4, with a projection shortcut."""

    expansion = 4

    def __init__(self, in_channels: int, width: int, stride: int) -> None:
        super().__init__()
        out_channels = width * self.expansion
        self.conv1 = nn.Conv2d(in_channels, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, out_channels, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU(inplace=True)
        self.shortcut = shortcut(in_channels, out_channels, stride)

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + self.shortcut(x))


def _stem(in_channels: int, kind: str) -> nn.Module:
    if kind == "cifar":  # small inputs (32x32): keep the resolution, as CIFAR ResNets do
        return nn.Sequential(
            nn.Conv2d(in_channels, 64, 3, 1, 1, bias=False),
            nn.BatchNorm2d(64),
            nn.ReLU(inplace=True),
        )
    return nn.Sequential(
        nn.Conv2d(in_channels, 64, 7, 2, 3, bias=False),
        nn.BatchNorm2d(64),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(3, 2, 1),
    )


def _build(
    input_shape: Sequence[int],
    num_classes: int,
    block: type[nn.Module],
    blocks: Sequence[int],
    stem: str,
) -> nn.Module:
    if stem not in ("imagenet", "cifar"):
        raise ValueError(f"stem must be 'imagenet' or 'cifar', got {stem!r}")
    in_channels = input_shape[0] if len(input_shape) == 3 else 1
    expansion = getattr(block, "expansion", 1)
    layers: list[nn.Module] = [_stem(in_channels, stem)]
    channels = 64
    for stage, (width, count) in enumerate(zip(STAGE_WIDTHS, blocks, strict=True)):
        for index in range(count):
            stride = 2 if stage > 0 and index == 0 else 1
            layers.append(block(channels, width, stride))  # both take (in, width, stride)
            channels = width * expansion
    layers.append(
        nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(channels, num_classes))
    )
    return nn.Sequential(*layers)


def resnet18(
    input_shape: Sequence[int], num_classes: int, stem: Literal["imagenet", "cifar"] = "imagenet"
) -> nn.Module:
    """ResNet-18: BasicBlocks [2, 2, 2, 2]; 11.7 M parameters with 1000 classes."""
    return _build(input_shape, num_classes, BasicBlock, (2, 2, 2, 2), stem)


def resnet50(
    input_shape: Sequence[int], num_classes: int, stem: Literal["imagenet", "cifar"] = "imagenet"
) -> nn.Module:
    """ResNet-50: Bottlenecks [3, 4, 6, 3]; 25.6 M parameters with 1000 classes."""
    return _build(input_shape, num_classes, Bottleneck, (3, 4, 6, 3), stem)
