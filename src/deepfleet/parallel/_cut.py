"""Pipeline stages of a model that is not an nn.Sequential, cut at module names (such as
"blocks.2"). The stage of every parameter follows from the names alone, before any worker
starts: a stage begins at its split point's module, and modules run in the order the model
defines them. The stages themselves come from torch.distributed.pipelining's tracer
(torch.export), which reads the model's own forward; the traced stages must hold exactly the
parameters the names gave them, otherwise the forward does not run the modules in that order
and the cut is refused. The traced stages share the model's parameter objects and keep their
original names, so the optimizer, the checkpoints and the exported weights see one model."""

from __future__ import annotations

import warnings
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from deepfleet.errors import UserError

# Modules without a forward of their own, or whose forward runs the children in order: a
# cut between two of their children leaves nothing of theirs running on both sides.
CONTAINERS = (nn.ModuleList, nn.ModuleDict, nn.Sequential)


@dataclass(frozen=True)
class NamedCut:
    """Where each stage begins (module names; stage 0 begins at the model's start) and the
    stage that holds each state-dict key."""

    points: list[str]
    stage_of: dict[str, int]

    @property
    def stages(self) -> int:
        return len(self.points) + 1

    def keys(self, stage: int) -> list[str]:
        return [k for k, s in self.stage_of.items() if s == stage]


def cut_candidates(model: nn.Module) -> list[str]:
    """Where an even cut may begin a stage: the top-level children, and the items of
    top-level containers (a transformer's blocks), in definition order."""
    found = []
    for name, child in model.named_children():
        if isinstance(child, CONTAINERS):
            found.extend(f"{name}.{item}" for item, _ in child.named_children())
        else:
            found.append(name)
    return found


def even_cuts(sizes: list[int], stages: int) -> list[int]:
    """Indices where stages 1, 2, ... begin so that each holds about as many parameters."""
    total, cuts, running = sum(sizes), [], 0
    for index, size in enumerate(sizes[:-1]):
        running += size
        left = len(sizes) - index - 1
        want = len(cuts) + 1
        if len(cuts) < stages - 1 and (
            running >= total * want / stages or left == stages - 1 - len(cuts)
        ):
            cuts.append(index + 1)
    return cuts


def block_names(model: nn.Module) -> list[str]:
    """The model's repeated blocks among the cut candidates (a transformer's blocks): those
    whose class occurs more than once; without repeats, every candidate with parameters."""
    found = [(name, model.get_submodule(name)) for name in cut_candidates(model)]
    counts = Counter(type(module) for _, module in found)
    repeated = [name for name, module in found if counts[type(module)] > 1]
    return repeated or [name for name, module in found if any(True for _ in module.parameters())]


def traced_blocks(model: nn.Module, traced: TracedStages) -> nn.Module:
    """The traced stages' modules of the model's blocks, in model order, as the children of
    one module: what the per-block wrappers (activation checkpointing) are applied to, since
    the tracer inlines the original blocks' forward methods."""
    view = nn.Module()
    for index, name in enumerate(block_names(model)):
        for stage in traced.stages:
            try:
                view.add_module(str(index), stage.get_submodule(name))
            except AttributeError:
                continue
    return view


def _check_point(model: nn.Module, point: str) -> None:
    try:
        module = model.get_submodule(point)
    except AttributeError:
        top = ", ".join(n for n, _ in model.named_children())
        raise UserError(
            f"train.pipeline.split_points: the model has no module {point!r} "
            f"(its top-level modules: {top})"
        ) from None
    if isinstance(module, (nn.ModuleList, nn.ModuleDict)):
        first = next(iter(module._modules), "0")
        raise UserError(
            f"train.pipeline.split_points: {point!r} is a {type(module).__name__}, which the "
            f"forward never calls itself; cut at one of its items ('{point}.{first}')"
        )
    parts = point.split(".")
    for depth in range(1, len(parts)):
        parent = ".".join(parts[:depth])
        inside = model.get_submodule(parent)
        if not isinstance(inside, CONTAINERS):
            raise UserError(
                f"train.pipeline.split_points: {point!r} cuts inside {parent!r} "
                f"({type(inside).__name__}), whose own forward would run on both sides of "
                f"the cut; cut at {parent!r} or at a module outside it"
            )


def plan_cut(model: nn.Module, stages: int, split_points: list[str]) -> NamedCut:
    """Check the split points (or choose an even cut by parameter count) and give every
    parameter and buffer its stage; UserError in one line when the cut cannot work."""
    if split_points:
        for point in split_points:
            _check_point(model, point)
        points = list(split_points)
    else:
        candidates = cut_candidates(model)
        sizes = [sum(p.numel() for p in model.get_submodule(c).parameters()) for c in candidates]
        if len(candidates) < stages:
            raise UserError(
                f"train.strategy: pipeline over {stages} stages needs at least {stages} "
                f"modules to cut between; {type(model).__name__} has {len(candidates)} "
                f"({', '.join(candidates)})"
            )
        points = [candidates[i] for i in even_cuts(sizes, stages)]
    order = {name: i for i, (name, _) in enumerate(model.named_modules())}
    begins = [order[p] for p in points]
    if begins != sorted(set(begins)) or begins[0] == 0:
        raise UserError(
            "train.pipeline.split_points: must name distinct modules in the order the model "
            "defines them"
        )
    stage_of: dict[str, int] = {}
    for name, module in model.named_modules():
        stage = sum(order[name] >= b for b in begins)
        prefix = f"{name}." if name else ""
        for key in [*module._parameters, *module._buffers]:
            if getattr(module, key) is not None:
                stage_of[prefix + key] = stage
    held = {stage_of[k] for k, _ in model.named_parameters()}
    empty = [s for s in range(len(points) + 1) if s not in held]
    if empty:
        raise UserError(
            f"train.pipeline.split_points: stage {empty[0]} of {', '.join(points)} would hold "
            "no parameters; cut where each stage has a layer to train"
        )
    return NamedCut(points, stage_of)


def stage_holder(model: nn.Module, keys: list[str]) -> nn.Module:
    """A module holding the model's own parameters and buffers named `keys`, under the same
    names: the optimizer's and the checkpoint's view of some stages."""
    holder = nn.Module()
    wanted = set(keys)
    for name, module in model.named_modules():
        prefix = f"{name}." if name else ""
        mine = [k for k in [*module._parameters, *module._buffers] if prefix + k in wanted]
        if not mine:
            continue
        target = holder
        for part in name.split(".") if name else []:
            if part not in target._modules:
                target.add_module(part, nn.Module())
            target = target._modules[part]
        for key in mine:
            if key in module._parameters:
                target.register_parameter(key, module._parameters[key])
            else:
                persistent = key not in module._non_persistent_buffers_set
                target.register_buffer(key, module._buffers[key], persistent=persistent)
    return holder


@dataclass(frozen=True)
class TracedStages:
    """The traced model (it runs the stages in order) and each stage's module."""

    whole: nn.Module
    stages: list[nn.Module]


def trace_stages(model: nn.Module, cut: NamedCut, example: tuple) -> TracedStages:
    """The model traced and split at the cut's points, each stage checked to hold the
    parameters the cut gave it. `example` is one micro-batch of the model's inputs."""
    from torch.distributed.pipelining import SplitPoint, pipeline

    spec = {point: SplitPoint.BEGINNING for point in cut.points}
    try:
        with warnings.catch_warnings():
            # torch.export's own deprecation notices, once per rank: nothing a user can act on
            warnings.simplefilter("ignore", FutureWarning)
            pipe = pipeline(model, mb_args=example, split_spec=spec)
    except Exception as err:  # the tracer's failures have many types; all mean: cannot cut
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise UserError(
            f"train.pipeline.split_points: the model's forward cannot be cut at "
            f"{', '.join(cut.points)} by torch.export: {first}"
        ) from None
    if pipe.num_stages != cut.stages:
        raise UserError(
            f"train.pipeline.split_points: the traced forward gives {pipe.num_stages} stage(s), "
            f"not {cut.stages}: each split point's module must run once, in definition order"
        )
    stages = [pipe.get_stage_module(stage) for stage in range(cut.stages)]
    for stage, module in enumerate(stages):
        got = set(module.state_dict())
        want = set(cut.keys(stage))
        if got != want:
            stray = sorted(got ^ want)[0]
            raise UserError(
                f"train.pipeline.split_points: the model's forward does not run its modules in "
                f"the order it defines them ({stray!r} would change stage {stage}); cut "
                "elsewhere or define the modules in the order forward uses them"
            )
    return TracedStages(pipe, stages)


@torch.no_grad()
def probe_stages(
    traced: TracedStages, example: tuple, wanted: list[int], run: Callable
) -> dict[int, tuple[tuple, object]]:
    """Each wanted stage's inputs and output for one micro-batch (PipelineStage's examples),
    from one run of the traced model under `run` (the autocast context). Random draws and
    buffers are restored afterwards, so probing changes nothing the training will see."""
    found: dict[int, tuple[tuple, object]] = {}
    hooks = []
    for index in wanted:

        def keep(module, args, output, index=index):
            found[index] = (args, output)

        hooks.append(traced.stages[index].register_forward_hook(keep))
    split = traced.whole
    saved = {k: v.clone() for k, v in split.named_buffers()}
    devices = [t.device.index or 0 for t in example if t.device.type == "cuda"]
    try:
        with torch.random.fork_rng(devices=devices), run():
            split(*example)
    finally:
        for hook in hooks:
            hook.remove()
        for key, value in split.named_buffers():
            value.copy_(saved[key])
    return found
