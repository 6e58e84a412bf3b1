"""User models that are not an nn.Sequential, for pipelines cut at module names: a gpt-like
decoder written as a plain module (embedding, a ModuleList of blocks, final norm, head and
its own forward), and a residual MLP for the digits job."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from deepfleet.models._gpt import DecoderBlock, TokenEmbedding


class NamedGPT(nn.Module):
    def __init__(self, vocab: int, context: int, dim: int, layers: int, heads: int) -> None:
        super().__init__()
        self.embed = TokenEmbedding(vocab, context, dim)
        self.blocks = nn.ModuleList(DecoderBlock(dim, heads, 2, 0.0) for _ in range(layers))
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, vocab, bias=False)

    def forward(self, ids: Tensor) -> Tensor:
        h = self.embed(ids)
        for block in self.blocks:
            h = block(h)
        return self.head(self.norm(h))


def named_gpt(vocab: int = 64, context: int = 16, layers: int = 4, seed: int = 0) -> NamedGPT:
    torch.manual_seed(seed)
    return NamedGPT(vocab, context, dim=32, layers=layers, heads=4)


class Residual(nn.Module):
    def __init__(self, width: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(width)
        self.fc = nn.Linear(width, width)

    def forward(self, x: Tensor) -> Tensor:
        return x + torch.tanh(self.fc(self.norm(x)))


class ResidualMLP(nn.Module):
    def __init__(self, features: int, classes: int, width: int, depth: int) -> None:
        super().__init__()
        self.stem = nn.Linear(features, width)
        self.blocks = nn.ModuleList(Residual(width) for _ in range(depth))
        self.head = nn.Linear(width, classes)

    def forward(self, x: Tensor) -> Tensor:
        h = self.stem(x.flatten(1))
        for block in self.blocks:
            h = block(h)
        return self.head(h)


def residual_mlp(input_shape, num_classes, width: int = 32, depth: int = 4) -> nn.Module:
    features = 1
    for size in input_shape:
        features *= int(size)
    return ResidualMLP(features, num_classes, width, depth)


class Backwards(nn.Module):
    """Defines its head before its body but runs the body first: a cut at module names
    (which follow definition order) does not match what the forward does."""

    def __init__(self, features: int = 4, classes: int = 2) -> None:
        super().__init__()
        self.head = nn.Linear(8, classes)
        self.body = nn.Linear(features, 8)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.body(x.flatten(1)))


def backwards(input_shape, num_classes) -> nn.Module:
    return Backwards(int(torch.tensor(input_shape).prod()), num_classes)


class Skip(nn.Module):
    """A skip connection across a cut at `c`: the first stage passes on `b`'s output and
    `a`'s, which the second stage adds after `c`."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(16, 32)
        self.b = nn.Linear(32, 32)
        self.c = nn.Linear(32, 32)
        self.d = nn.Linear(32, 4)

    def forward(self, x: Tensor) -> Tensor:
        h = torch.tanh(self.a(x))
        g = torch.relu(self.b(h))
        return self.d(torch.tanh(self.c(g)) + h)
