"""A GPT-style decoder: token ids in, next-token logits out.

The zoo signature is kept: input_shape is (context_length,) and num_classes is the vocabulary.
Pre-norm blocks with causal scaled-dot-product attention (fused kernels where torch has them).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn
from torch.nn import functional as F


class TokenEmbedding(nn.Module):
    """Token plus learned position embedding."""

    def __init__(self, vocab: int, context: int, dim: int) -> None:
        super().__init__()
        self.tokens = nn.Embedding(vocab, dim)
        self.positions = nn.Embedding(context, dim)

    def forward(self, ids: Tensor) -> Tensor:
        positions = torch.arange(ids.shape[1], device=ids.device)
        return self.tokens(ids) + self.positions(positions)


class CausalSelfAttention(nn.Module):
    """Separate q, k and v projections: a plan can split each one by heads (a fused qkv
    matrix cut into contiguous slices would hand one rank all of q and part of k).
    `heads` is the number of heads this module computes; widths follow from the layers'
    outputs, so a plan that splits the projections only has to set it."""

    def __init__(self, dim: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.heads = heads
        self.q = nn.Linear(dim, dim)
        self.k = nn.Linear(dim, dim)
        self.v = nn.Linear(dim, dim)
        self.proj = nn.Linear(dim, dim)
        self.dropout = dropout

    def project(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """q, k, v as [batch, heads, length, head_dim]."""
        batch, length, _ = x.shape
        return tuple(
            layer(x).view(batch, length, self.heads, -1).transpose(1, 2)
            for layer in (self.q, self.k, self.v)
        )

    def forward(self, x: Tensor) -> Tensor:
        batch, length, _ = x.shape
        q, k, v = self.project(x)
        out = F.scaled_dot_product_attention(
            q, k, v, is_causal=True, dropout_p=self.dropout if self.training else 0.0
        )
        return self.proj(out.transpose(1, 2).reshape(batch, length, -1))


class DecoderBlock(nn.Module):
    def __init__(self, dim: int, heads: int, mlp_ratio: int, dropout: float) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = CausalSelfAttention(dim, heads, dropout)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(
            nn.Linear(dim, mlp_ratio * dim),
            nn.GELU(),
            nn.Linear(mlp_ratio * dim, dim),
            nn.Dropout(dropout),
        )

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


def gpt(
    input_shape: Sequence[int],
    num_classes: int,
    dim: int = 256,
    layers: int = 4,
    heads: int = 4,
    mlp_ratio: int = 4,
    dropout: float = 0.0,
) -> nn.Module:
    """A decoder over (context_length,) token ids with a vocabulary of num_classes."""
    if len(input_shape) != 1:
        raise ValueError(f"gpt takes input_shape (context_length,), got {tuple(input_shape)}")
    if dim % heads:
        raise ValueError(f"dim {dim} is not divisible by heads {heads}")
    context = int(input_shape[0])
    return nn.Sequential(
        TokenEmbedding(num_classes, context, dim),
        *[DecoderBlock(dim, heads, mlp_ratio, dropout) for _ in range(layers)],
        nn.LayerNorm(dim),
        nn.Linear(dim, num_classes, bias=False),
    )


def is_gpt(model: nn.Module) -> bool:
    """The zoo gpt's shape: embedding, decoder blocks, final norm, vocabulary head."""
    return (
        isinstance(model, nn.Sequential)
        and len(model) >= 3
        and isinstance(model[0], TokenEmbedding)
        and all(isinstance(block, DecoderBlock) for block in list(model)[1:-2])
        and isinstance(model[-2], nn.LayerNorm)
        and isinstance(model[-1], nn.Linear)
    )
