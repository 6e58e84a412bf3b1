"""Activation checkpointing and per-block compile from the job file: the blocks chosen, the
recomputation happening in the backward pass, the same gradients, the same parameter names."""

from __future__ import annotations

import pytest
import torch

from deepfleet.config import TrainSection
from deepfleet.models import gpt
from deepfleet.models._gpt import DecoderBlock
from deepfleet.parallel import checkpoint_blocks, repeated_blocks
from deepfleet.selftest import selftest_model
from deepfleet.tasks import CausalLMTask


def _gpt() -> torch.nn.Module:
    torch.manual_seed(0)
    return gpt((16,), 64, dim=32, layers=4, heads=4)


def _grads_and_attention_calls(setting) -> tuple[dict, int]:
    model = _gpt()
    assert checkpoint_blocks(model, setting) == {"none": 0, "full": 4, 2: 2, 3: 2}[setting]
    calls = []
    for block in repeated_blocks(model):
        block.attn.register_forward_pre_hook(lambda module, args: calls.append(1))
    tokens = torch.randint(0, 64, (4, 17), generator=torch.Generator().manual_seed(1))
    CausalLMTask().loss(model(tokens[:, :-1]), tokens[:, 1:]).backward()
    return {n: p.grad for n, p in model.named_parameters()}, len(calls)


def test_the_repeated_layers_are_the_blocks():
    blocks = repeated_blocks(_gpt())
    assert len(blocks) == 4 and all(isinstance(b, DecoderBlock) for b in blocks)
    # without repeats: every child with parameters
    assert len(repeated_blocks(selftest_model())) == 3


@pytest.mark.parametrize(("setting", "recomputed"), [("full", 4), (2, 2), (3, 2)])
def test_checkpointed_blocks_recompute_and_give_the_same_gradients(setting, recomputed):
    plain, calls = _grads_and_attention_calls("none")
    assert calls == 4
    got, calls = _grads_and_attention_calls(setting)
    assert calls == 4 + recomputed  # each checkpointed block runs forward again in backward
    assert list(got) == list(plain)  # parameter names unchanged
    for name, grad in plain.items():
        torch.testing.assert_close(got[name], grad, rtol=0, atol=0)


def test_the_job_file_setting_is_checked():
    assert (
        TrainSection.model_validate({"activation_checkpointing": 2}).activation_checkpointing == 2
    )
    for bad in (0, "some"):
        with pytest.raises(ValueError, match="activation_checkpointing"):
            TrainSection.model_validate({"activation_checkpointing": bad})


def test_per_block_compile_keeps_names_and_compiles_only_the_blocks():
    from deepfleet.parallel import wrap_blocks

    model = _gpt()
    names = [n for n, _ in model.named_parameters()]
    wrap_blocks(model, "full", compile_each=True)
    assert [n for n, _ in model.named_parameters()] == names
    compiled = [getattr(c, "_compiled_call_impl", None) is not None for c in model.children()]
    assert compiled == [False, True, True, True, True, False, False]
