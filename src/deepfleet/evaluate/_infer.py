from __future__ import annotations

import torch
from torch import nn


@torch.no_grad()
def predict_proba(
    model: nn.Module, x: torch.Tensor, device: torch.device, batch_size: int = 512
) -> torch.Tensor:
    """Class probabilities (softmax of the logits) for every row of x, on the CPU."""
    model.eval()
    out = [
        torch.softmax(model(x[i : i + batch_size].to(device)).float(), dim=1).cpu()
        for i in range(0, len(x), batch_size)
    ]
    return torch.cat(out) if out else torch.empty(0)
