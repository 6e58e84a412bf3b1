"""Optimizers, LR schedules and layer freezing for one phase."""

from __future__ import annotations

import math

import torch
from torch import nn

from deepfleet.config import PhaseSection
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
        raise UserError(f"train.phases.freeze: no parameter named {missing[0]!r} in the model")
    return frozen


def build_optimizer(phase: PhaseSection, model: nn.Module) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise UserError(f"train.phases: phase {phase.name!r} freezes every parameter")
    if phase.optimizer == "sgd":
        return torch.optim.SGD(
            params, lr=phase.lr, momentum=phase.momentum, weight_decay=phase.weight_decay
        )
    return torch.optim.AdamW(params, lr=phase.lr, weight_decay=phase.weight_decay)


def lr_factor(phase: PhaseSection, step: int, steps_per_epoch: int) -> float:
    """Multiplier of the phase's peak LR at optimizer step `step` (0-based)."""
    total = max(phase.epochs * steps_per_epoch, 1)
    if step < phase.warmup_steps:
        return (step + 1) / phase.warmup_steps
    if phase.schedule == "cosine":
        span = max(total - phase.warmup_steps, 1)
        progress = min((step - phase.warmup_steps) / span, 1.0)
        return 0.5 * (1.0 + math.cos(math.pi * progress))
    if phase.schedule == "step":
        epoch = step // max(steps_per_epoch, 1)
        return phase.gamma ** (epoch // phase.step_epochs)
    return 1.0


def build_scheduler(
    phase: PhaseSection, optimizer: torch.optim.Optimizer, steps_per_epoch: int
) -> torch.optim.lr_scheduler.LambdaLR:
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: lr_factor(phase, step, steps_per_epoch)
    )
