"""The pipeline strategy: the model cut into one stage per rank at named points, run by
torch.distributed.pipelining (GPipe, 1F1B or interleaved). An nn.Sequential is cut between
its top-level children; any other model at module names, through the tracer (_cut.py).
With dp_replicate > 1 the mesh holds several pipelines side by side: each stage is a DDP
replica over the ranks that run the same stage, and each pipeline reads its own
data-parallel share."""

from __future__ import annotations

import inspect
from collections.abc import Callable

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.tensor import DTensor
from torch.nn.parallel import DistributedDataParallel

from deepfleet.errors import UserError
from deepfleet.parallel._clip import grad_squares
from deepfleet.parallel._cut import (
    NamedCut,
    TracedStages,
    even_cuts,
    plan_cut,
    probe_stages,
    stage_holder,
    trace_stages,
    traced_blocks,
)
from deepfleet.parallel._strategy import Autocast, Objective, SingleStrategy
from deepfleet.parallel._topology import Topology


def _schedule_class(name: str):
    # Imported here: torch.distributed.pipelining takes seconds to import, and only
    # pipeline runs need it.
    from torch.distributed.pipelining import (
        Schedule1F1B,
        ScheduleGPipe,
        ScheduleInterleaved1F1B,
    )

    return {"gpipe": ScheduleGPipe, "1f1b": Schedule1F1B, "interleaved": ScheduleInterleaved1F1B}[
        name
    ]


class StagePart(nn.Module):
    """Consecutive top-level children of a model, under their original names (so the
    checkpoint keys of all stages fit together), applied in order."""

    def __init__(self, children: list[tuple[str, nn.Module]]) -> None:
        super().__init__()
        for name, child in children:
            self.add_module(name, child)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for child in self._modules.values():
            x = child(x)
        return x


def split_children(
    model: nn.Module, stages: int, split_points: list[str]
) -> list[list[tuple[str, nn.Module]]]:
    """The children of each stage. Without split points: an even cut by parameter count."""
    children = list(model.named_children())
    names = [n for n, _ in children]
    if split_points:
        missing = [p for p in split_points if p not in names]
        if missing:
            raise UserError(
                f"train.pipeline.split_points: no top-level child {missing[0]!r} "
                f"(children: {', '.join(names)})"
            )
        cuts = [names.index(p) for p in split_points]
        if cuts != sorted(set(cuts)) or cuts[0] == 0:
            raise UserError(
                "train.pipeline.split_points: must name distinct children in model "
                f"order, not the first one ({names[0]!r})"
            )
    else:
        if len(children) < stages:
            raise UserError(
                f"train.strategy: pipeline over {stages} stages needs at least {stages} "
                f"top-level children, the model has {len(children)}"
            )
        cuts = even_cuts([sum(p.numel() for p in c.parameters()) for _, c in children], stages)
    bounds = [0, *cuts, len(children)]
    return [children[a:b] for a, b in zip(bounds, bounds[1:], strict=False)]


def trace_in_train_mode(model: nn.Module, cut: NamedCut, example: tuple) -> TracedStages:
    """The stages traced as the model trains (dropout is part of the graph)."""
    was_training = model.training
    model.train()
    try:
        return trace_stages(model, cut, example)
    finally:
        model.train(was_training)


def cut_by_names(model: nn.Module, split_points: list[str]) -> bool:
    """Whether the model is cut by tracing its forward at module names, rather than between
    the top-level children of an nn.Sequential."""
    return not isinstance(model, nn.Sequential) or any("." in p for p in split_points)


def check_pipeline(
    train, model: nn.Module, topology: Topology, example: torch.Tensor | None = None
) -> None:
    """Refuse, in one line, a pipeline that cannot cut `model` as the job asks: split points
    that do not fit it, and what a cut at module names does not support yet. With an
    `example` input, a cut at module names is also traced, as each rank will trace it."""
    pipe = train.pipeline
    stages = topology.pp * pipe.interleave
    if not cut_by_names(model, pipe.split_points):
        split_children(model, stages, pipe.split_points)
        return
    cut = plan_cut(model, stages, pipe.split_points)
    # Blocks compiled one by one inside traced stages are untested; the tracer traces plain
    # tensors, not a tensor-parallel plan's.
    if train.compile and train.compile_scope == "blocks":
        raise UserError(
            "train.compile_scope: blocks is not supported yet with a pipeline cut at module "
            "names (a model that is not an nn.Sequential); use compile_scope = model"
        )
    if topology.tp > 1:
        raise UserError(
            "train.parallel.tp: not yet with a pipeline cut at module names (a model that is "
            "not an nn.Sequential); pipeline x tp needs an nn.Sequential such as the zoo gpt"
        )
    if example is not None:
        trace_in_train_mode(model, cut, (example,))


def _example(value: torch.Tensor, carries_grad: bool = True) -> torch.Tensor:
    return value.detach().requires_grad_(carries_grad and value.is_floating_point())


class PipelineStrategy(SingleStrategy):
    """The ranks at pipeline coordinate r run stage r (and r + pp, ... when interleaved). Every
    rank of a pipeline reads the same batch: the first stage feeds the inputs, the last one the
    targets; the schedule moves activations and gradients between them."""

    name = "pipeline"

    def __init__(
        self,
        model: nn.Module,
        topology: Topology,
        rank: int,
        device: torch.device,
        compile_model: bool = False,
        *,
        split_points: list[str],
        schedule: str = "1f1b",
        microbatches: int = 4,
        interleave: int = 1,
        wrap_blocks: Callable[[nn.Module], None] = lambda model: None,
    ) -> None:
        super().__init__(model, topology, rank, device, compile_model)
        pp = topology.pp
        self.pp_group = self.dp_group = None
        if topology.dp > 1 or topology.tp > 1:
            mesh = topology.build_mesh(device)
            self.pp_group = mesh["pp"].get_group()
            if topology.dp > 1:
                self.dp_group = mesh["dp_replicate"].get_group()
            if topology.tp > 1:
                # The plan splits every layer before the cut (as torchtitan orders it: tensor
                # parallel, then checkpointing and compiling per block): each stage is then
                # a slice of the tensor-parallel model, and each rank holds the whole model's
                # shards for validation. Stages of one tensor-parallel group send each other
                # their own shards of the activations (the pp groups pair equal tp ranks).
                from deepfleet.models import tp_plan

                plan = tp_plan(model, topology.sequence_parallel)
                assert plan is not None, "build_topology checks that the model has a plan"
                plan.apply(model, mesh["tp"])
        self._wrap_blocks = wrap_blocks
        # Replicas of tensor-parallel stages average their gradients without DDP.
        self._sync_by_hand = topology.dp > 1 and topology.tp > 1
        self._skip_sync = False
        self.stage_index = topology.pp_rank(rank)
        # Interleaved: rank r runs stages r, r + pp, r + 2 pp, ... (virtual stages).
        self.my_stages = [self.stage_index + k * pp for k in range(interleave)]
        self.cut = None
        self.split: TracedStages | None = None  # a cut by module names, once traced
        if cut_by_names(model, split_points):
            # Traced at the first batch (the tracer needs an input); which parameters each
            # stage holds is known from the names now, before the optimizer is built.
            self.cut = plan_cut(model, pp * interleave, split_points)
            self.num_stages = self.cut.stages
            stage_of = self.cut.stage_of
            mine = [k for k, s in stage_of.items() if s in self.my_stages]
            self.module = stage_holder(model, mine)
        else:
            wrap_blocks(model)
            parts = split_children(model, pp * interleave, split_points)
            self.parts = [StagePart(part) for part in parts]
            self.num_stages = len(parts)
            stage_of = {k: s for s, part in enumerate(self.parts) for k in part.state_dict()}
            self.module = StagePart([c for i in self.my_stages for c in parts[i]])
        self.stage_of = stage_of
        # The first replica of each stage (mesh order: pp outermost) sends its weights.
        self.owner = {key: (s % pp) * topology.dp for key, s in stage_of.items()}
        self.is_first = self.stage_index == 0
        self.is_last = self.stage_index == topology.pp - 1
        # A tensor-parallel group's ranks compute the same loss: its first rank counts it.
        self.owns_outputs = self.is_last and topology.tp_rank(rank) == 0
        self.schedule_name, self.microbatches = schedule, microbatches
        self._scale = 1.0
        self._objective: Objective | None = None

    def setup_phase(self) -> None:
        # A new schedule per training phase: the set of parameters that need gradients
        # changes. It is built at the phase's first batch, whose shape it needs.
        self.schedule = None

    @torch.no_grad()
    def _shapes(
        self, x: torch.Tensor, autocast: Autocast
    ) -> dict[int, tuple[torch.Tensor, torch.Tensor]]:
        """Example input and output of this rank's stages for one micro-batch: the stages run
        in order in eval mode, which touches no BatchNorm statistics and draws no dropout
        mask. (Left to infer them, torch's stage runs itself once in train mode on the first
        micro-batch, or on empty tensors after the first stage, and BatchNorm would learn
        from that call, once more at every resume.)"""
        h = x[: x.shape[0] // self.microbatches]
        found = {}
        with autocast():
            for index, part in enumerate(self.parts):
                weights = next(part.parameters(), None)
                h = h.to(weights.device if weights is not None else h.device)
                part.eval()
                try:
                    out = part(h)
                finally:
                    part.train()
                if index in self.my_stages:
                    # Activations between stages carry gradients; the data does not.
                    found[index] = (
                        h.to(self.device).requires_grad_(index > 0),
                        out.to(self.device).requires_grad_(True),
                    )
                h = out
        return found

    def _stage_examples(self, x: torch.Tensor, autocast: Autocast) -> dict[int, tuple]:
        """This rank's stage modules with example inputs and output for one micro-batch."""
        if self.cut is None:
            shapes = self._shapes(x, autocast)
            return {i: (self.parts[i], *shapes[i]) for i in self.my_stages}
        micro = (x[: x.shape[0] // self.microbatches],)
        if self.split is None:
            self.split = trace_in_train_mode(self.full_model, self.cut, micro)
            # The tracer inlined the blocks' forward: checkpoint the traced blocks instead.
            self._wrap_blocks(traced_blocks(self.full_model, self.split))
        found = probe_stages(self.split, micro, self.my_stages, autocast)
        examples = {}
        for index, (args, out) in found.items():
            # Activations between stages carry gradients; the data does not. A stage may pass
            # on several tensors (all that the forward uses after the cut).
            inputs = tuple(_example(a, index > 0) for a in args)
            output = tuple(map(_example, out)) if isinstance(out, tuple) else _example(out)
            examples[index] = (self.split.stages[index], inputs, output)
        return examples

    def _build_schedule(self, x: torch.Tensor, autocast: Autocast):
        from torch.distributed.pipelining import PipelineStage

        examples = self._stage_examples(x, autocast)
        stages = []
        for index in self.my_stages:
            part, example_in, example_out = examples[index]
            submodule = self._maybe_compile(part)
            if self.dp_group is not None and not self._sync_by_hand:
                # The stage syncs DDP's gradients at a step's last micro-batch only; a fresh
                # wrapper per phase, since DDP records which parameters need gradients.
                ids = [self.device.index] if self.device.type == "cuda" else None
                submodule = DistributedDataParallel(
                    submodule, device_ids=ids, process_group=self.dp_group
                )
            stages.append(
                PipelineStage(
                    submodule,
                    index,
                    self.num_stages,
                    self.device,
                    input_args=example_in,
                    output_args=example_out,
                    group=self.pp_group,
                )
            )
        kwargs = {}
        cls = _schedule_class(self.schedule_name)
        if "scale_grads" in inspect.signature(cls.__init__).parameters:
            kwargs["scale_grads"] = False  # the objective is already scaled to the global batch
        # Interleaved schedules take the list of this rank's stages, the others its one stage.
        stage = stages if self.schedule_name == "interleaved" else stages[0]
        return cls(stage, n_microbatches=self.microbatches, loss_fn=self._scaled, **kwargs)

    def _scaled(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        # The schedule calls this once per micro-batch on the last stage and runs backward
        # from it; the objective itself is the trainer's (the task's), scaled here.
        assert self._objective is not None
        return self._objective(output, target) * self._scale

    def forward_backward(self, x, y, objective: Objective, scale: float, autocast, backward):
        self._objective, self._scale = objective, scale
        if self.schedule is None:
            self.schedule = self._build_schedule(x, autocast)
        with autocast():
            if self.is_first:
                self.schedule.step(x)
            elif self.is_last:
                output = self.schedule.step(target=y)
            else:
                self.schedule.step()
        skip, self._skip_sync = self._skip_sync, False  # set by no_sync for this call only
        if self._sync_by_hand and not skip:
            self._average_gradients()
        if not self.owns_outputs:
            return torch.zeros((), device=self.device), None
        output = output.detach()
        with torch.no_grad():
            total = objective(output, y)
        return total, output

    def no_sync(self, skip: bool):
        self._skip_sync = skip
        return super().no_sync(skip)

    @torch.no_grad()
    def _average_gradients(self) -> None:
        """The replicas' mean gradient (what DDP computes), here for tensor-parallel stages,
        whose DTensor parameters DDP does not take: each rank averages its own shards with
        the ranks of the same stage and tp coordinate."""
        for param in self.trainable():
            if param.grad is not None:
                grad = param.grad
                local = grad.to_local() if isinstance(grad, DTensor) else grad
                dist.all_reduce(local, group=self.dp_group)
                local.div_(self.topology.dp)

    def clip_grad_norm(self, max_norm: float) -> torch.Tensor:
        # The norm spans every stage: sum the squares here, then over the ranks, where each
        # stage's are counted once per replica and tensor-parallel rank.
        grads = [p.grad for p in self.trainable() if p.grad is not None]
        squares = grad_squares(grads).to(self.device)
        dist.all_reduce(squares)
        total = (squares / (self.topology.dp * self.topology.tp)).sqrt()
        factor = float(torch.clamp(max_norm / (total + 1e-6), max=1.0))
        if factor < 1.0:
            for g in grads:
                g.mul_(factor)
        return total

    def eval_module(self) -> nn.Module:
        """Every rank receives the other stages' current weights, then holds the whole model
        (under tensor parallelism: its shards, from the same tp rank of each stage)."""
        self.full_model.to(self.device)
        for name, tensor in self.full_model.state_dict().items():
            if self.topology.tp > 1:
                local = tensor.to_local() if isinstance(tensor, DTensor) else tensor
                stage = self.stage_of[name] % self.topology.pp
                dist.broadcast(local, group=self.pp_group, group_src=stage)
            else:
                dist.broadcast(tensor, src=self.owner[name])
        return self.full_model

    def full_state_dict(self) -> dict[str, torch.Tensor]:
        state = self.eval_module().state_dict()
        return {k: v.full_tensor() if isinstance(v, DTensor) else v for k, v in state.items()}
