"""A user's model module with its own tensor-parallel plan (found by deepfleet through the
module that defines the model's class)."""

from __future__ import annotations

import torch
from torch import nn


class TwoLayer(nn.Module):
    def __init__(self, width: int = 6) -> None:
        super().__init__()
        self.up = nn.Linear(4, width)
        self.down = nn.Linear(width, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down(torch.relu(self.up(x)))


def two_layer(input_shape, num_classes, width: int = 6) -> nn.Module:
    return TwoLayer(width)


def check_tp(model: TwoLayer, tp: int) -> str | None:
    width = model.up.out_features
    return None if width % tp == 0 else f"tp {tp} does not divide the hidden width {width}"


def parallelize(model: TwoLayer, mesh) -> None:
    from torch.distributed.tensor.parallel import (
        ColwiseParallel,
        RowwiseParallel,
        parallelize_module,
    )

    parallelize_module(model, mesh, {"up": ColwiseParallel(), "down": RowwiseParallel()})
