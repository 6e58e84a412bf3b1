"""The zoo gpt's tensor-parallel plan, applied from outside the model (as torchtitan's
parallelize.py does): in every block, q, k, v and the MLP's first layer are split by output
columns (whole heads per rank), attention's output projection and the MLP's second layer by
input rows, so each block needs one all-reduce forward and one backward per half. The
vocabulary head is split by columns and gathered; embeddings stay replicated.

With sequence parallelism (torchtitan's plan, Megatron's "sequence parallel") the residual
stream between the linear layers is cut along the sequence instead of repeated on every rank:
the embedding's output is sliced (no communication), the norms run on their rank's positions
(SequenceParallel), each attention and MLP input is all-gathered (PrepareModuleInput), and
each row-wise output is reduce-scattered back to the sequence shards instead of all-reduced.
The same bytes move as without it; the norms' and the residual stream's activations are tp
times smaller."""

from __future__ import annotations

from torch import nn


def check_tp(model: nn.Module, tp: int, sequence_parallel: bool = False) -> str | None:
    """Why the gpt cannot be split `tp` ways, or None."""
    blocks = list(model)[1:-2]
    heads = blocks[0].attn.heads if blocks else 0
    if heads % tp:
        return f"tp {tp} does not divide the gpt's {heads} attention heads"
    hidden = blocks[0].mlp[0].out_features if blocks else 0
    if hidden % tp:
        return f"tp {tp} does not divide the gpt's MLP width {hidden}"
    context = model[0].positions.num_embeddings
    if sequence_parallel and context % tp:
        return (
            f"tp {tp} does not divide the gpt's context length {context}, which sequence "
            "parallelism cuts; set train.parallel.sequence_parallel = false"
        )
    return None


def parallelize(model: nn.Module, mesh, sequence_parallel: bool = False) -> None:
    """Split the gpt in place over the one-dimensional tensor-parallel `mesh`."""
    from torch.distributed.tensor import Replicate, Shard
    from torch.distributed.tensor.parallel import (
        ColwiseParallel,
        PrepareModuleInput,
        PrepareModuleOutput,
        RowwiseParallel,
        SequenceParallel,
        parallelize_module,
    )

    tp = mesh.size()
    # The residual stream's layout between the layers: sequence shards, or whole on every rank.
    stream = Shard(1) if sequence_parallel else Replicate()
    gather = PrepareModuleInput(input_layouts=(stream,), desired_input_layouts=(Replicate(),))
    if sequence_parallel:
        # Every rank computes the whole (replicated) embedding and keeps its positions.
        parallelize_module(
            model[0],
            mesh,
            PrepareModuleOutput(output_layouts=Replicate(), desired_output_layouts=stream),
        )
    for block in list(model)[1:-2]:
        layers = {
            "attn.q": ColwiseParallel(),
            "attn.k": ColwiseParallel(),
            "attn.v": ColwiseParallel(),
            "attn.proj": RowwiseParallel(output_layouts=stream),
            "mlp.0": ColwiseParallel(),
            "mlp.2": RowwiseParallel(output_layouts=stream),
        }
        if sequence_parallel:
            sequence = {"norm1": SequenceParallel(), "norm2": SequenceParallel()}
            layers.update(sequence, attn=gather, mlp=gather)
        parallelize_module(block, mesh, layers)
        # Each rank now computes heads / tp whole heads; the widths follow from the layers.
        block.attn.heads //= tp
    if sequence_parallel:
        parallelize_module(model[-2], mesh, SequenceParallel())
    head = model[-1]
    if head.out_features % tp == 0:
        parallelize_module(
            head, mesh, ColwiseParallel(input_layouts=stream, output_layouts=Replicate())
        )
    elif sequence_parallel:  # a replicated head reads every position
        parallelize_module(
            head,
            mesh,
            PrepareModuleInput(
                input_layouts=(stream,), desired_input_layouts=(Replicate(),), use_local_output=True
            ),
        )
