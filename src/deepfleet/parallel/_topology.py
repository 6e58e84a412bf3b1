"""One object that checks the parallel degrees against the world size before anything starts."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from deepfleet.config import TrainSection
from deepfleet.errors import UserError

# Weights, gradients and two AdamW moments in fp32: 16 bytes per parameter.
_BYTES_PER_PARAM = 16
# Without a GPU to measure, replicas above this many parameters are sharded.
_CPU_FSDP_PARAMS = 100_000_000


@dataclass(frozen=True)
class Topology:
    """The strategy and its degrees: data-parallel (dp) x pipeline-parallel (pp) = world."""

    strategy: str
    world_size: int
    dp: int
    pp: int
    reason: str = ""

    def dp_rank(self, rank: int) -> int:
        return rank // self.pp

    def pp_rank(self, rank: int) -> int:
        return rank % self.pp

    def global_batch(self, batch_size: int, accumulation_steps: int) -> int:
        return batch_size * self.dp * accumulation_steps

    def describe(self) -> str:
        return f"{self.strategy} on {self.world_size} process(es): dp={self.dp} pp={self.pp}"


def choose_strategy(
    train: TrainSection, world_size: int, model: nn.Module, device: torch.device
) -> tuple[str, str]:
    """`auto`: the strategy for this many processes and this model size, and why."""
    if train.strategy != "auto":
        return train.strategy, "set in the job file"
    if world_size == 1:
        return "single", "one process"
    if train.pipeline.split_points:
        return "pipeline", "train.pipeline.split_points is set"
    params = sum(p.numel() for p in model.parameters())
    need = params * _BYTES_PER_PARAM
    if device.type == "cuda":
        budget = torch.cuda.get_device_properties(device).total_memory // 2
        if need > budget:
            return "fsdp", (
                f"{params:,} parameters need ~{need / 2**30:.1f} GiB for weights, "
                f"grads and optimizer state, over half of one GPU; sharding"
            )
        return "ddp", (
            f"{params:,} parameters ({need / 2**30:.2f} GiB of training state) fit "
            "on every GPU; replicating"
        )
    if params > _CPU_FSDP_PARAMS:
        return "fsdp", f"{params:,} parameters exceed {_CPU_FSDP_PARAMS:,}; sharding"
    return "ddp", f"{params:,} parameters fit in every process; replicating"


def build_topology(
    train: TrainSection, world_size: int, model: nn.Module, device: torch.device
) -> Topology:
    """Resolve `auto` and check every degree against the world size; UserError otherwise."""
    strategy, reason = choose_strategy(train, world_size, model, device)
    if strategy == "single":
        if world_size != 1:
            raise UserError(
                f"train.strategy: single runs one process, but the job has "
                f"{world_size}; use ddp, fsdp, pipeline or auto"
            )
        return Topology("single", 1, 1, 1, reason)
    if strategy in ("ddp", "fsdp"):
        return Topology(strategy, world_size, world_size, 1, reason)
    return _pipeline_topology(train, world_size, reason)


def _pipeline_topology(train: TrainSection, world_size: int, reason: str) -> Topology:
    pipe = train.pipeline
    stages = len(pipe.split_points) + 1 if pipe.split_points else world_size
    if world_size < 2:
        raise UserError("train.strategy: pipeline needs at least 2 processes (--nproc 2)")
    if stages != world_size:
        raise UserError(
            f"train.pipeline.split_points: {len(pipe.split_points)} split points make "
            f"{stages} stages, but the job has {world_size} processes (one stage "
            "per process)"
        )
    if train.batch_size % pipe.microbatches:
        raise UserError(
            f"train.pipeline.microbatches: {pipe.microbatches} does not divide "
            f"train.batch_size {train.batch_size}"
        )
    if pipe.schedule == "1f1b" and pipe.microbatches < stages:
        raise UserError(
            f"train.pipeline.microbatches: 1f1b needs at least one micro-batch per "
            f"stage ({stages}), got {pipe.microbatches}"
        )
    if train.precision == "fp16":
        raise UserError(
            "train.precision: fp16 is not supported with the pipeline strategy; "
            "use bf16 (no loss scaling needed) or fp32"
        )
    return Topology("pipeline", world_size, 1, world_size, reason)
