"""The global gradient norm when parameters live on different meshes: tensor-parallel layers
are DTensors on the tp (or dp x tp) mesh, the layers a plan leaves whole are plain tensors or
DTensors on the data-parallel mesh alone, and torch's clip_grad_norm_ needs one kind."""

from __future__ import annotations

from collections import defaultdict

import torch
from torch import nn
from torch.distributed.tensor import DTensor


def _group_key(grad: torch.Tensor) -> object:
    return grad.device_mesh if isinstance(grad, DTensor) else None


def _by_mesh(grads: list[torch.Tensor]) -> dict[object, list[torch.Tensor]]:
    groups: dict[object, list[torch.Tensor]] = defaultdict(list)
    for grad in grads:
        groups[_group_key(grad)].append(grad)
    return groups


def grad_squares(grads: list[torch.Tensor]) -> torch.Tensor:
    """The sum of the squares of every gradient, over whole tensors (each mesh's DTensors
    reduced over that mesh: collective for its ranks)."""
    squares = []
    for group in _by_mesh(grads).values():
        norm = torch.nn.utils.get_total_norm(group, 2.0)
        if isinstance(norm, DTensor):
            norm = norm.full_tensor()  # reduced over the group's mesh: the whole tensors' norm
        squares.append(norm.float() ** 2)  # on the gradients' device: no host sync per mesh
    return torch.stack(squares).sum() if squares else torch.zeros(())


def clip_grad_norm(parameters: list[nn.Parameter], max_norm: float) -> torch.Tensor:
    """Scale every gradient so that their joint 2-norm is at most `max_norm`; returns the
    norm before clipping (the same number as one process computing it over whole tensors)."""
    grads = [p.grad for p in parameters if p.grad is not None]
    if not grads:
        return torch.zeros(())
    total = grad_squares(grads).sqrt()
    # A Python number: DTensor gradients refuse a plain tensor as the other operand. Reading
    # it back is one CPU-GPU sync per step.
    factor = float(torch.clamp(max_norm / (total + 1e-6), max=1.0))
    if factor < 1.0:
        for g in grads:
            g.mul_(factor)
    return total
