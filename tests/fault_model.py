"""A model factory for the fault test: an MLP whose forward pass takes a little time, so a
test can kill a worker between two checkpoints."""

from __future__ import annotations

import math
import time

from torch import Tensor, nn


class SlowMLP(nn.Sequential):
    delay = 0.0

    def forward(self, x: Tensor) -> Tensor:
        time.sleep(self.delay)
        return super().forward(x)


def slow_mlp(input_shape, num_classes, hidden: int = 32, delay: float = 0.02) -> nn.Module:
    model = SlowMLP(nn.Flatten(), nn.Linear(math.prod(input_shape), hidden), nn.ReLU(),
                    nn.Linear(hidden, num_classes))
    model.delay = delay
    return model
