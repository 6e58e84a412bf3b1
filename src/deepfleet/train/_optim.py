"""Optimizers, LR schedules and layer freezing for one stage."""

from __future__ import annotations

import math

import torch
from torch import nn

from deepfleet.config import StageSection
from deepfleet.errors import UserError


def apply_freeze(model: nn.Module, prefixes: list[str]) -> int:
    """Freeze parameters whose names start with a prefix, unfreeze the rest; count frozen."""
    matched = {p: False for p in prefixes}
    frozen = 0
    for name, param in model.named_parameters():
        hit = [p for p in prefixes if name == p or name.startswith(p + ".")]
        for p in hit:
            matched[p] = True
        param.requires_grad_(not hit)
        frozen += bool(hit)
    missing = [p for p, ok in matched.items() if not ok]
    if missing:
        raise UserError(f"train.stages.freeze: no parameter named {missing[0]!r} in the model")
    return frozen


def build_optimizer(stage: StageSection, model: nn.Module) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise UserError(f"train.stages: stage {stage.name!r} freezes every parameter")
    if stage.optimizer == "sgd":
        return torch.optim.SGD(
            params, lr=stage.lr, momentum=stage.momentum, weight_decay=stage.weight_decay
        )
    return torch.optim.AdamW(params, lr=stage.lr, weight_decay=stage.weight_decay)


def lr_factor(stage: StageSection, step: int, steps_per_epoch: int) -> float:
    """Multiplier of the stage's peak LR at optimizer step `step` (0-based)."""
    total = max(stage.epochs * steps_per_epoch, 1)
    if step < stage.warmup_steps:
        return (step + 1) / stage.warmup_steps
    if stage.schedule == "cosine":
        span = max(total - stage.warmup_steps, 1)
        progress = min((step - stage.warmup_steps) / span, 1.0)
        return 0.5 * (1.0 + math.cos(math.pi * progress))
    if stage.schedule == "step":
        epoch = step // max(steps_per_epoch, 1)
        return stage.gamma ** (epoch // stage.step_epochs)
    return 1.0


def build_scheduler(
    stage: StageSection, optimizer: torch.optim.Optimizer, steps_per_epoch: int
) -> torch.optim.lr_scheduler.LambdaLR:
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: lr_factor(stage, step, steps_per_epoch)
    )
