"""From a [train] table, a model and a topology to the strategy object the loop drives."""

from __future__ import annotations

import torch
from torch import nn

from deepfleet.config import TrainSection
from deepfleet.parallel._pipeline import PipelineStrategy
from deepfleet.parallel._strategy import DDPStrategy, FSDPStrategy, SingleStrategy
from deepfleet.parallel._topology import Topology


def make_strategy(
    train: TrainSection, model: nn.Module, topology: Topology, rank: int, device: torch.device
) -> SingleStrategy:
    """Wrap `model` (already on `device`) for this rank; the model itself is not changed."""
    if topology.strategy == "pipeline":
        pipe = train.pipeline
        return PipelineStrategy(
            model,
            topology,
            rank,
            device,
            train.compile,
            split_points=pipe.split_points,
            schedule=pipe.schedule,
            microbatches=pipe.microbatches,
        )
    cls = {"single": SingleStrategy, "ddp": DDPStrategy, "fsdp": FSDPStrategy}[topology.strategy]
    return cls(model, topology, rank, device, train.compile)
