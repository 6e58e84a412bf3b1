"""Per-block wrappers applied from outside the model, before sharding: activation
checkpointing (recompute a block's activations in the backward pass instead of keeping them)
and compiling each block on its own. Both keep the parameters' names, so checkpoints and
exported weights look the same with or without them."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import Any

from torch import nn
from torch.utils.checkpoint import checkpoint


def repeated_blocks(model: nn.Module) -> list[nn.Module]:
    """The model's repeated layers: top-level children whose class occurs more than once (a
    transformer's decoder blocks, a ResNet's residual blocks). A model without repeats:
    every top-level child that holds parameters."""
    children = [c for c in model.children() if any(True for _ in c.parameters())]
    counts = Counter(type(c) for c in children)
    repeated = [c for c in children if counts[type(c)] > 1]
    return repeated or children


def _checkpointed(forward: Callable[..., Any]) -> Callable[..., Any]:
    def run(*args: Any, **kwargs: Any) -> Any:
        # Non-reentrant: works with FSDP2's hooks and with inputs that need no gradient.
        return checkpoint(forward, *args, use_reentrant=False, **kwargs)

    return run


def checkpoint_blocks(model: nn.Module, setting: str | int) -> int:
    """Apply `train.activation_checkpointing` ("none", "full" or every N-th block) in place;
    returns how many blocks recompute. The block's forward is replaced on the instance (not
    wrapped in another module), so parameter names do not change."""
    if setting == "none":
        return 0
    every = 1 if setting == "full" else int(setting)
    chosen = [b for i, b in enumerate(repeated_blocks(model)) if i % every == 0]
    for block in chosen:
        block.forward = _checkpointed(block.forward)
    return len(chosen)


def compile_blocks(model: nn.Module) -> None:
    """torch.compile each repeated block in place (nn.Module.compile keeps its names)."""
    for block in repeated_blocks(model):
        block.compile()


def wrap_blocks(model: nn.Module, activation_checkpointing: str | int, compile_each: bool) -> None:
    """Activation checkpointing, then compiling, as torchtitan orders them (compile sees the
    checkpointed forward and keeps the recomputation)."""
    checkpoint_blocks(model, activation_checkpointing)
    if compile_each:
        compile_blocks(model)
