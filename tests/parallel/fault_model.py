"""A model factory for the fault test: the zoo CNN (BatchNorm and dropout, so buffers and
masks differ between ranks) with a forward pass that takes a little time, so a test can kill
a worker between two checkpoints."""

from __future__ import annotations

import time

from torch import Tensor, nn

from deepfleet.models import cnn


class _Slow(nn.Module):
    def __init__(self, inner: nn.Module, delay: float) -> None:
        super().__init__()
        self.inner, self.delay = inner, delay

    def forward(self, x: Tensor) -> Tensor:
        time.sleep(self.delay)
        return self.inner(x)


def slow_cnn(input_shape, num_classes, delay: float = 0.02) -> nn.Module:
    return _Slow(cnn(input_shape, num_classes, channels=(8,), hidden=16, dropout=0.3), delay)
