"""From a [train] table, a model and a topology to the strategy object the loop drives."""

from __future__ import annotations

from functools import partial

import torch
from torch import nn

from deepfleet.config import TrainSection
from deepfleet.parallel._blocks import wrap_blocks
from deepfleet.parallel._mesh import MeshStrategy
from deepfleet.parallel._pipeline import PipelineStrategy, check_pipeline
from deepfleet.parallel._strategy import DDPStrategy, FSDPStrategy, SingleStrategy
from deepfleet.parallel._topology import Topology


def make_strategy(
    train: TrainSection, model: nn.Module, topology: Topology, rank: int, device: torch.device
) -> SingleStrategy:
    """Wrap `model` (already on `device`) for this rank; the model's code is not changed,
    its layers may be (split by a tensor-parallel plan, checkpointed, compiled)."""
    whole = train.compile and train.compile_scope == "model"
    blocks = partial(
        wrap_blocks,
        activation_checkpointing=train.activation_checkpointing,
        compile_each=train.compile and train.compile_scope == "blocks",
    )
    if topology.pp > 1:
        pipe = train.pipeline
        check_pipeline(train, model, topology)
        return PipelineStrategy(
            model,
            topology,
            rank,
            device,
            whole,
            split_points=pipe.split_points,
            schedule=pipe.schedule,
            microbatches=pipe.microbatches,
            interleave=pipe.interleave,
            wrap_blocks=blocks,
        )
    simple = {"single": SingleStrategy, "ddp": DDPStrategy, "fsdp": FSDPStrategy}
    if topology.strategy in simple:  # one dimension: the plain wrappers
        blocks(model)  # before DDP or FSDP wrap the blocks
        return simple[topology.strategy](model, topology, rank, device, whole)
    return MeshStrategy(model, topology, rank, device, whole, wrap_blocks=blocks)
