"""The zoo gpt's tensor-parallel plan, applied from outside the model (as torchtitan's
parallelize.py does): in every block, q, k, v and the MLP's first layer are split by output
columns (whole heads per rank), attention's output projection and the MLP's second layer by
input rows, so each block needs one all-reduce forward and one backward per half. Norms and
embeddings stay replicated; the vocabulary head is split by columns and gathered."""

from __future__ import annotations

from torch import nn


def check_tp(model: nn.Module, tp: int) -> str | None:
    """Why the gpt cannot be split `tp` ways, or None."""
    blocks = list(model)[1:-2]
    heads = blocks[0].attn.heads if blocks else 0
    if heads % tp:
        return f"tp {tp} does not divide the gpt's {heads} attention heads"
    hidden = blocks[0].mlp[0].out_features if blocks else 0
    if hidden % tp:
        return f"tp {tp} does not divide the gpt's MLP width {hidden}"
    return None


def parallelize(model: nn.Module, mesh) -> None:
    """Split the gpt in place over the one-dimensional tensor-parallel `mesh`."""
    from torch.distributed.tensor import Replicate
    from torch.distributed.tensor.parallel import (
        ColwiseParallel,
        RowwiseParallel,
        parallelize_module,
    )

    tp = mesh.size()
    for block in list(model)[1:-2]:
        parallelize_module(
            block,
            mesh,
            {
                "attn.q": ColwiseParallel(),
                "attn.k": ColwiseParallel(),
                "attn.v": ColwiseParallel(),
                "attn.proj": RowwiseParallel(),
                "mlp.0": ColwiseParallel(),
                "mlp.2": RowwiseParallel(),
            },
        )
        # Each rank now computes heads / tp whole heads; the widths follow from the layers.
        block.attn.heads //= tp
    head = model[-1]
    if head.out_features % tp == 0:
        parallelize_module(head, mesh, ColwiseParallel(output_layouts=Replicate()))
