"""Model weights as safetensors, written atomically; loading never unpickles. Training and
deployment both use it, so a server loads weights without the training stack."""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import load as load_bytes
from safetensors.torch import save as save_bytes
from torch import nn

from deepfleet._atomic import write_bytes_atomic
from deepfleet.errors import UserError


def cpu_tensors(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A CPU, contiguous copy of every tensor (safetensors refuses shared storage)."""
    return {k: v.detach().to("cpu").contiguous().clone() for k, v in state.items()}


def save_weights(model: nn.Module, path: Path, metadata: dict[str, str] | None = None) -> None:
    save_tensors(model.state_dict(), path, metadata)


def save_tensors(
    tensors: dict[str, torch.Tensor], path: Path, metadata: dict[str, str] | None = None
) -> None:
    write_bytes_atomic(Path(path), save_bytes(cpu_tensors(tensors), metadata=metadata))


def load_weights(model: nn.Module, path: Path) -> nn.Module:
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: weights file not found")
    try:
        tensors = load_bytes(path.read_bytes())
    except Exception as err:  # safetensors raises its own error types
        raise UserError(f"{path}: not a valid safetensors file ({err})") from None
    try:
        model.load_state_dict(tensors, strict=True)
    except RuntimeError as err:
        first = str(err).splitlines()[0]
        raise UserError(f"{path}: weights do not fit the model ({first})") from None
    return model
