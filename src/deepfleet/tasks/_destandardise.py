"""The regression bundle's head: outputs back in the targets' units (its own module, so the
tasks package loads without torch)."""

from __future__ import annotations

import torch
from torch import nn


class Destandardise(nn.Module):
    """model output x std + mean: the exported bundle answers in the targets' units."""

    def __init__(self, model: nn.Module, mean: list[float], std: list[float]) -> None:
        super().__init__()
        self.model = model
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x).float() * self.std + self.mean
