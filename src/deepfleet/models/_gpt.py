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
    def __init__(self, dim: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.dropout = dropout

    def forward(self, x: Tensor) -> Tensor:
        batch, length, dim = x.shape
        q, k, v = self.qkv(x).view(batch, length, 3, self.heads, dim // self.heads).unbind(2)
        out = F.scaled_dot_product_attention(
            q.transpose(1, 2),
            k.transpose(1, 2),
            v.transpose(1, 2),
            is_causal=True,
            dropout_p=self.dropout if self.training else 0.0,
        )
        return self.proj(out.transpose(1, 2).reshape(batch, length, dim))


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
