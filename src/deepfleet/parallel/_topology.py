"""One object that checks the parallel degrees against the world size before anything starts
(in the manner of torchtitan's ParallelDims), and the device mesh built from them.

The mesh has four named dimensions, outermost first: pp, dp_replicate, dp_shard, tp. Rank r
sits at (pp, dp_replicate, dp_shard, tp) coordinates in that row-major order, so the ranks
of one tensor-parallel group are neighbours (one node's fast links) and a pipeline's stages
are furthest apart."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from deepfleet.config import TrainSection
from deepfleet.errors import UserError
from deepfleet.parallel._auto import choose_layout

MESH_DIMS = ("pp", "dp_replicate", "dp_shard", "tp")


@dataclass(frozen=True)
class Topology:
    """The layout's name and degrees: pp x dp_replicate x dp_shard x tp = world size."""

    strategy: str
    world_size: int
    dp_replicate: int = 1
    dp_shard: int = 1
    pp: int = 1
    tp: int = 1
    reason: str = ""
    sequence_parallel: bool = False  # the model's plan also cuts the sequence (tp > 1)

    @property
    def dp(self) -> int:
        """Data-parallel ranks: each reads its own share of every global batch."""
        return self.dp_replicate * self.dp_shard

    def dp_rank(self, rank: int) -> int:
        return (rank // self.tp) % self.dp

    def pp_rank(self, rank: int) -> int:
        return rank // (self.dp * self.tp)

    def tp_rank(self, rank: int) -> int:
        return rank % self.tp

    def global_batch(self, batch_size: int, accumulation_steps: int) -> int:
        return batch_size * self.dp * accumulation_steps

    @property
    def degrees(self) -> dict[str, int]:
        values = (self.pp, self.dp_replicate, self.dp_shard, self.tp)
        return dict(zip(MESH_DIMS, values, strict=True))

    def describe(self) -> str:
        shown = " ".join(f"{k}={v}" for k, v in self.degrees.items() if v > 1) or "one rank"
        return f"{self.strategy} on {self.world_size} process(es): {shown}"

    def build_mesh(self, device: torch.device):
        """The job's DeviceMesh with all four named dimensions (collective: every rank)."""
        from torch.distributed.device_mesh import init_device_mesh

        shape = (self.pp, self.dp_replicate, self.dp_shard, self.tp)
        return init_device_mesh(device.type, shape, mesh_dim_names=MESH_DIMS)


def choose_strategy(
    train: TrainSection, world_size: int, model: nn.Module, device: torch.device
) -> tuple[str, str]:
    """`auto`: the strategy for this many processes and this model size, and why."""
    if train.strategy != "auto":
        return train.strategy, "set in the job file"
    layout, reason = choose_layout(train, world_size, model, device)
    return layout["name"], reason


def build_topology(
    train: TrainSection, world_size: int, model: nn.Module, device: torch.device
) -> Topology:
    """Resolve `auto` and check every degree against the world size; UserError otherwise."""
    if not train.parallel.is_default():
        if train.strategy != "auto":
            raise UserError(
                f"train.strategy: {train.strategy} is the shorthand for a one-dimensional "
                "layout; with [train.parallel] degrees set, leave strategy = auto"
            )
        return _mesh_topology(train, world_size, model, "set in [train.parallel]")
    if train.strategy == "auto":
        layout, reason = choose_layout(train, world_size, model, device)
        if layout["name"] not in ("single", "ddp", "fsdp", "pipeline"):
            degrees = train.parallel.model_copy(update=layout["degrees"])
            return _mesh_topology(
                train.model_copy(update={"parallel": degrees}), world_size, model, reason
            )
        strategy = layout["name"]
    else:
        strategy, reason = train.strategy, "set in the job file"
    if strategy == "single":
        if world_size != 1:
            raise UserError(
                f"train.strategy: single runs one process, but the job has "
                f"{world_size}; use ddp, fsdp, pipeline or auto"
            )
        return Topology("single", 1, reason=reason)
    if strategy == "ddp":
        return Topology("ddp", world_size, dp_replicate=world_size, reason=reason)
    if strategy == "fsdp":
        return Topology("fsdp", world_size, dp_shard=world_size, reason=reason)
    return _pipeline_topology(train, world_size, reason)


def _layout_name(dp_replicate: int, dp_shard: int, tp: int) -> str:
    if dp_replicate > 1 and dp_shard > 1:
        data = "hsdp"
    elif dp_shard > 1:
        data = "fsdp"
    elif dp_replicate > 1:
        data = "ddp"
    else:
        data = ""
    if tp > 1:
        return f"{data}+tp" if data else "tp"
    return data or "single"


def _mesh_topology(train: TrainSection, world_size: int, model: nn.Module, reason: str) -> Topology:
    """The layout of [train.parallel]: degrees that multiply to the world size, a model
    whose plan can split it tp ways."""
    par = train.parallel
    fixed = par.pp * par.dp_replicate * par.tp
    shard = par.dp_shard
    if shard == -1:
        if world_size % fixed:
            raise UserError(
                f"train.parallel: pp {par.pp} x dp_replicate {par.dp_replicate} x tp "
                f"{par.tp} = {fixed} does not divide the {world_size} processes"
            )
        shard = world_size // fixed
    elif shard < 1:
        raise UserError(f"train.parallel.dp_shard: {shard} must be >= 1 or -1 (the rest)")
    if fixed * shard != world_size:
        raise UserError(
            f"train.parallel: pp {par.pp} x dp_replicate {par.dp_replicate} x dp_shard "
            f"{shard} x tp {par.tp} = {fixed * shard}, but the job has {world_size} processes"
        )
    if par.pp > 1 and shard > 1:
        raise UserError(
            f"train.parallel: pipeline stages combine with dp_replicate (replicas of each "
            f"stage) and tp (each stage split over a tensor-parallel group), not yet with "
            f"dp_shard (here {shard}); set dp_shard = 1"
        )
    if par.tp > 1:
        _check_tp_plan(train, model)
    sequence = par.sequence_parallel and par.tp > 1
    if par.pp > 1:
        return _pipeline_topology(
            train, world_size, reason, par.pp, par.dp_replicate, par.tp, sequence
        )
    name = _layout_name(par.dp_replicate, shard, par.tp)
    return Topology(name, world_size, par.dp_replicate, shard, 1, par.tp, reason, sequence)


def _check_tp_plan(train: TrainSection, model: nn.Module) -> None:
    """The model has a tensor-parallel plan that accepts the degree; no fp16."""
    from deepfleet.models import tp_plan

    par = train.parallel
    plan = tp_plan(model, par.sequence_parallel)
    if plan is None:
        raise UserError(
            f"train.parallel.tp: {type(model).__name__} has no tensor-parallel plan "
            "(the zoo gpt has one; a model's module may define parallelize(model, mesh))"
        )
    plan.check(model, par.tp)
    if train.precision == "fp16":
        raise UserError("train.precision: fp16 is not supported with tensor parallelism; use bf16")


def _pipeline_topology(
    train: TrainSection,
    world_size: int,
    reason: str,
    pp: int | None = None,
    replicas: int = 1,
    tp: int = 1,
    sequence_parallel: bool = False,
) -> Topology:
    """A pipeline of `pp` stages (the world size unless given), each stage replicated
    `replicas` times (data parallel over the replicas, DDP within each stage) and split over
    `tp` ranks by the model's tensor-parallel plan."""
    pipe = train.pipeline
    pp = pp or world_size
    want = pp * pipe.interleave
    stages = len(pipe.split_points) + 1 if pipe.split_points else want
    if world_size < 2:
        raise UserError("train.strategy: pipeline needs at least 2 processes (--nproc 2)")
    if stages != want:
        raise UserError(
            f"train.pipeline.split_points: {len(pipe.split_points)} split points make "
            f"{stages} stages, but the job has {pp} pipeline ranks x "
            f"{pipe.interleave} stage(s) per rank"
        )
    if (pipe.schedule == "interleaved") != (pipe.interleave > 1):
        raise UserError(
            "train.pipeline: the interleaved schedule, and only it, runs several stages per "
            f"rank (schedule {pipe.schedule}, interleave {pipe.interleave})"
        )
    rounds = max(1, pipe.microbatches // pp)
    if pipe.schedule == "interleaved" and pipe.microbatches % rounds:
        raise UserError(
            f"train.pipeline.microbatches: interleaved needs a multiple of {rounds} "
            f"(micro-batches // pp), got {pipe.microbatches}"
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
    name = "pipeline" + ("+ddp" if replicas > 1 else "") + ("+tp" if tp > 1 else "")
    return Topology(
        name,
        world_size,
        dp_replicate=replicas,
        pp=pp,
        tp=tp,
        reason=reason,
        sequence_parallel=sequence_parallel,
    )
