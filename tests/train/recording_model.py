"""A model for resume tests that writes down which samples each training step saw: the data
set's first feature is the sample's id / 1000, and every training forward appends the ids of
its batch as one line to $DEEPFLEET_TEST_RECORD/rank-$RANK.txt. Its module also holds a
tensor-parallel plan (the hidden layer's columns, the output layer's rows)."""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import Tensor, nn

RECORD = "DEEPFLEET_TEST_RECORD"


class Recording(nn.Module):
    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x: Tensor) -> Tensor:
        if self.training and torch.is_grad_enabled() and RECORD in os.environ:
            ids = (x[:, 0] * 1000).round().long().tolist()
            out = Path(os.environ[RECORD]) / f"rank-{os.environ.get('RANK', '0')}.txt"
            with out.open("a") as f:
                f.write(" ".join(map(str, ids)) + "\n")
        return self.inner(x)


def recording_mlp(input_shape, num_classes, hidden: int = 16) -> nn.Module:
    return Recording(
        nn.Sequential(nn.Linear(input_shape[0], hidden), nn.Tanh(), nn.Linear(hidden, num_classes))
    )


def parallelize(model: Recording, mesh) -> None:
    from torch.distributed.tensor.parallel import (
        ColwiseParallel,
        RowwiseParallel,
        parallelize_module,
    )

    parallelize_module(model.inner, mesh, {"0": ColwiseParallel(), "2": RowwiseParallel()})
