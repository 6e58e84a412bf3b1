"""Generation: the key/value cache gives what the full recompute gives (logits and tokens,
also once the window slides), sampling is deterministic for a seed, and bad arguments are
one clear error."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from deepfleet.deploy import generate
from deepfleet.deploy._generate import CachedDecoder, RecomputeDecoder, decoder_for
from deepfleet.errors import UserError
from deepfleet.models import gpt

CONTEXT, VOCAB = 12, 50


@pytest.fixture(scope="module")
def model() -> nn.Module:
    torch.manual_seed(0)
    return gpt((CONTEXT,), VOCAB, dim=32, layers=2, heads=4).eval()


def test_the_cache_gives_the_full_recompute_logits_and_tokens(model):
    cached, full = decoder_for(model, CONTEXT), decoder_for(model, CONTEXT, use_cache=False)
    assert isinstance(cached, CachedDecoder) and isinstance(full, RecomputeDecoder)
    ids = [3, 7, 1]
    with torch.inference_mode():
        for _ in range(2 * CONTEXT):  # well past the context: the window slides
            a, b = cached.next_logits(ids), full.next_logits(ids)
            torch.testing.assert_close(a, b, atol=1e-5, rtol=0)
            ids.append(int(b.argmax()))
    greedy = list(generate(model, [3, 7, 1], 2 * CONTEXT, 0.0, 0, 0, CONTEXT))
    assert greedy == ids[3:]
    assert greedy == list(
        generate(model, [3, 7, 1], 2 * CONTEXT, 0.0, 0, 0, CONTEXT, use_cache=False)
    )


def test_the_cache_matches_the_model_itself_on_a_full_window(model):
    ids = torch.randint(0, VOCAB, (1, CONTEXT), generator=torch.Generator().manual_seed(1))
    decoder = decoder_for(model, CONTEXT)
    with torch.inference_mode():
        expected = model(ids)[0]
        for end in range(1, CONTEXT + 1):
            torch.testing.assert_close(
                decoder.next_logits(ids[0, :end].tolist()), expected[end - 1], atol=1e-5, rtol=0
            )


def test_sampling_is_deterministic_for_a_seed(model):
    def run(seed, **kw):
        return list(generate(model, [1, 2], 20, 0.9, 10, seed, CONTEXT, **kw))

    assert run(7) == run(7) == run(7, use_cache=False)
    assert run(7) != run(8)
    assert list(generate(model, [1, 2], 20, 1.0, 1, 5, CONTEXT)) == list(
        generate(model, [1, 2], 20, 0.0, 0, 0, CONTEXT)
    )  # top_k 1 is greedy


def test_other_models_are_run_on_the_whole_window(model):
    wrapped = nn.Sequential(model)  # not the zoo's layout: no cache
    assert isinstance(decoder_for(wrapped, CONTEXT), RecomputeDecoder)
    assert list(generate(wrapped, [4, 5, 6], 15, 0.0, 0, 0, CONTEXT)) == list(
        generate(model, [4, 5, 6], 15, 0.0, 0, 0, CONTEXT)
    )


def test_a_stop_token_ends_generation_and_counts_are_bounded(model):
    greedy = list(generate(model, [3, 7, 1], 10, 0.0, 0, 0, CONTEXT))
    assert len(greedy) == 10
    stopped = list(generate(model, [3, 7, 1], 10, 0.0, 0, 0, CONTEXT, stop_token=greedy[4]))
    assert stopped == greedy[: greedy.index(greedy[4])]
    assert list(generate(model, [3], 0, 0.0, 0, 0, CONTEXT)) == []
    assert len(list(generate(model, [3], 5, 0.0, 0, 0))) == 5  # the gpt's own context


@pytest.mark.parametrize(
    "args, message",
    [
        (([], 3, 1.0, 0, 0), "prompt"),
        (([1], -1, 1.0, 0, 0), "max_new_tokens"),
        (([1], 3, -0.5, 0, 0), "temperature"),
        (([1], 3, float("nan"), 0, 0), "temperature"),
        (([1], 3, 1.0, -2, 0), "top_k"),
    ],
)
def test_bad_arguments(model, args, message):
    with pytest.raises(UserError, match=message):
        list(generate(model, *args, CONTEXT))
