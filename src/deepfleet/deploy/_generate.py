"""Text generation from a causal language model: one new token id at a time.

The zoo's gpt (TokenEmbedding, DecoderBlock..., LayerNorm, Linear) runs with a key/value
cache: the prompt is encoded once, then each step feeds only the newest token, attending to
the cached keys and values of every earlier position, at positions that continue from the
prompt. Any other model is run on the whole window at every step (the last
`context_length` tokens, padded on the right to the model's input length; a causal model's
output at a position does not depend on the positions after it).

Once the sequence is longer than the context, the window slides: every step then encodes
the last `context_length` tokens afresh (positions start at 0 again), for the gpt too, so
both ways give the same tokens.

Sampling is deterministic for a seed (a private torch.Generator): temperature 0 picks the
most likely token; otherwise logits / temperature, cut to the `top_k` most likely (0: all).
Run the model in eval mode: dropout in training mode would make the answers random.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from deepfleet.errors import UserError
from deepfleet.models._gpt import DecoderBlock, TokenEmbedding, is_gpt


def _device(model: nn.Module) -> torch.device:
    first = next(iter(model.parameters()), None)
    return first.device if first is not None else torch.device("cpu")


class RecomputeDecoder:
    """Next-token logits by running the model on the whole window every step."""

    def __init__(self, model: nn.Module, context_length: int) -> None:
        self.model = model
        self.context = context_length
        self.device = _device(model)

    def next_logits(self, ids: list[int]) -> Tensor:
        """float32 logits [V] of the token after `ids` (their last context_length tokens)."""
        window = ids[-self.context :]
        x = torch.zeros(1, self.context, dtype=torch.int64)
        x[0, : len(window)] = torch.tensor(window, dtype=torch.int64)
        out = self.model(x.to(self.device))
        if out.ndim != 3 or out.shape[:2] != (1, self.context):
            raise UserError(
                f"generation needs next-token logits [batch, {self.context}, vocabulary]; "
                f"the model gives {list(out.shape)}"
            )
        return out[0, len(window) - 1].float().cpu()


class CachedDecoder:
    """Next-token logits from the zoo gpt with a key/value cache per decoder block."""

    def __init__(self, model: nn.Sequential, context_length: int) -> None:
        self.embed: TokenEmbedding = model[0]
        self.blocks: list[DecoderBlock] = list(model)[1:-2]
        self.norm: nn.LayerNorm = model[-2]
        self.head: nn.Linear = model[-1]
        self.context = min(context_length, self.embed.positions.num_embeddings)
        self.device = _device(model)
        self._cache: list[tuple[Tensor, Tensor]] = []
        self._tokens: list[int] = []

    def next_logits(self, ids: list[int]) -> Tensor:
        """float32 logits [V] of the token after `ids`; only tokens not yet cached are run."""
        known = len(self._tokens)
        if len(ids) > self.context:  # the window slides: positions start again from 0
            self._reset()
            new = ids[-self.context :]
        elif known and len(ids) > known and ids[:known] == self._tokens:
            new = ids[known:]
        else:
            self._reset()
            new = list(ids)
        logits = self._feed(new)
        self._tokens = list(ids[-self.context :])
        return logits

    def _reset(self) -> None:
        self._cache = []
        self._tokens = []

    def _feed(self, new: list[int]) -> Tensor:
        past = len(self._tokens)
        ids = torch.tensor([new], dtype=torch.int64, device=self.device)
        positions = torch.arange(past, past + len(new), device=self.device)
        x = self.embed.tokens(ids) + self.embed.positions(positions)
        cache = []
        for i, block in enumerate(self.blocks):
            kv = self._cache[i] if self._cache else None
            attended, kv = self._attend(block, block.norm1(x), kv, past)
            cache.append(kv)
            x = x + attended
            x = x + block.mlp(block.norm2(x))
        self._cache = cache
        return self.head(self.norm(x[:, -1:]))[0, -1].float().cpu()

    @staticmethod
    def _attend(
        block: DecoderBlock, h: Tensor, kv: tuple[Tensor, Tensor] | None, past: int
    ) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        attn = block.attn
        batch, length, dim = h.shape
        q, k, v = attn.project(h)
        if kv is not None:
            k, v = torch.cat([kv[0], k], dim=2), torch.cat([kv[1], v], dim=2)
        if past == 0:
            out = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        elif length == 1:  # the newest token sees every cached position
            out = F.scaled_dot_product_attention(q, k, v)
        else:  # new token i sees the cache and new tokens 0..i
            mask = torch.ones(length, past + length, dtype=torch.bool, device=h.device)
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask.tril(diagonal=past))
        return attn.proj(out.transpose(1, 2).reshape(batch, length, dim)), (k, v)


def decoder_for(model: nn.Module, context_length: int, *, use_cache: bool = True):
    """The key/value-cached decoder for the zoo gpt, else the full recompute."""
    if use_cache and is_gpt(model):
        return CachedDecoder(model, context_length)
    return RecomputeDecoder(model, context_length)


def pick(logits: Tensor, temperature: float, top_k: int, generator: torch.Generator) -> int:
    """The next token from float32 logits [V]: greedy at temperature 0, else sampled."""
    if temperature == 0:
        return int(torch.argmax(logits))
    logits = logits / temperature
    if 0 < top_k < logits.numel():
        kth = torch.topk(logits, top_k).values[-1]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    probs = torch.softmax(logits, dim=-1)
    return int(torch.multinomial(probs, 1, generator=generator))


def _context_of(model: nn.Module, context_length: int | None) -> int:
    if context_length is None:
        if is_gpt(model):
            return int(model[0].positions.num_embeddings)
        raise UserError("generation needs the model's context length")
    if context_length < 1:
        raise UserError(f"context length must be >= 1, got {context_length}")
    return int(context_length)


def generate(
    model: nn.Module,
    prompt_ids: list[int],
    max_new_tokens: int,
    temperature: float = 1.0,
    top_k: int = 0,
    seed: int = 0,
    context_length: int | None = None,
    *,
    stop_token: int | None = None,
    use_cache: bool = True,
) -> Iterator[int]:
    """Up to `max_new_tokens` token ids continuing `prompt_ids`, one at a time.

    Stops early after `stop_token` would be produced (it is not yielded). `context_length`
    is the model's input length (the zoo gpt's own when None). `use_cache` False runs the
    whole window every step, also for the gpt.
    """
    if not prompt_ids:
        raise UserError("generation needs a prompt of at least one token")
    if max_new_tokens < 0:
        raise UserError(f"max_new_tokens must be >= 0, got {max_new_tokens}")
    if not (temperature >= 0 and math.isfinite(temperature)):
        raise UserError(f"temperature must be a finite number >= 0, got {temperature}")
    if top_k < 0:
        raise UserError(f"top_k must be >= 0, got {top_k}")
    context = _context_of(model, context_length)
    decoder = decoder_for(model, context, use_cache=use_cache)
    generator = torch.Generator().manual_seed(int(seed))
    ids = [int(t) for t in prompt_ids]
    for _ in range(max_new_tokens):
        # inference mode per step: a generator must not leave it switched on between yields
        with torch.inference_mode():
            logits = decoder.next_logits(ids)
        token = pick(logits, temperature, top_k, generator)
        if stop_token is not None and token == stop_token:
            return
        ids.append(token)
        yield token
