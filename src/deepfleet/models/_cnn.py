from __future__ import annotations

from collections.abc import Sequence

from torch import nn


def cnn(
    input_shape: Sequence[int],
    num_classes: int,
    channels: Sequence[int] = (32, 64),
    hidden: int = 128,
    dropout: float = 0.2,
) -> nn.Module:
    """LeNet-style: conv blocks, then an adaptive pool so any input size works, then a head."""
    in_channels = input_shape[0] if len(input_shape) == 3 else 1
    blocks: list[nn.Module] = []
    for out_channels in channels:
        blocks += [
            nn.Conv2d(in_channels, out_channels, 3, padding=1),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(),
            nn.Conv2d(out_channels, out_channels, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2, ceil_mode=True),
        ]
        in_channels = out_channels
    return nn.Sequential(
        nn.Sequential(*blocks),
        nn.Sequential(
            nn.AdaptiveAvgPool2d(2),
            nn.Flatten(),
            nn.Linear(in_channels * 4, hidden),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Linear(hidden, num_classes),
        ),
    )
