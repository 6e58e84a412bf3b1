"""Sequence parallelism in the gpt's tensor-parallel plan: on by default with tp >= 2, the
residual stream between the blocks cut along the sequence (each rank's blocks see their own
positions), the weights after a few steps on 2 gloo ranks equal to one process's with it on
and off. (FSDP 2 x tp 2 with it on, 4 ranks: test_layouts.py.)"""

from __future__ import annotations

import pytest
import torch
from layout_checks import assert_same_weights

from deepfleet.config import TrainSection
from deepfleet.errors import UserError
from deepfleet.models import gpt
from deepfleet.parallel import (
    DistEnv,
    LaunchOptions,
    build_topology,
    detect_env,
    process_group,
    start_workers,
)
from deepfleet.parallel._auto import _tensor_parallel
from deepfleet.selftest import LM_CONTEXT, lm_config, lm_data, lm_model
from deepfleet.tasks import CausalLMTask
from deepfleet.train import Trainer

CPU = torch.device("cpu")


def _parallel(**degrees) -> TrainSection:
    return TrainSection.model_validate({"parallel": degrees})


def test_on_by_default_with_tp_and_checked_against_the_context_length():
    assert build_topology(_parallel(tp=2), 4, lm_model(), CPU).sequence_parallel
    off = build_topology(_parallel(tp=2, sequence_parallel=False), 2, lm_model(), CPU)
    assert not off.sequence_parallel
    assert not build_topology(_parallel(dp_replicate=2), 4, lm_model(), CPU).sequence_parallel
    odd = gpt((15,), 64, dim=32, layers=1, heads=4)
    with pytest.raises(UserError, match="tp 2 does not divide the gpt's context length 15"):
        build_topology(_parallel(tp=2), 2, odd, CPU)
    build_topology(_parallel(tp=2, sequence_parallel=False), 2, odd, CPU)
    # auto picks a tp that divides the context as well (here: none, so it shards alone)
    assert _tensor_parallel(odd, 4, 10**10, 150.0, sequence_parallel=True)[0]["name"] == "fsdp"
    assert _tensor_parallel(odd, 4, 10**10, 150.0)[0]["degrees"] == {"tp": 2}


def _train(config: TrainSection, env) -> tuple[dict[str, torch.Tensor], set]:
    """The final weights, and the shapes of what the second block received."""
    model = lm_model()
    seen = set()
    model[2].register_forward_pre_hook(lambda module, args: seen.add(tuple(args[0].shape)))
    trainer = Trainer(config, model, CPU, seed=0, env=env, task=CausalLMTask())
    trainer.fit(lm_data())
    weights = trainer.strategy.full_state_dict()
    return {k: v.detach().clone() for k, v in weights.items()}, seen


def sequence_worker() -> dict[str, tuple[dict, set]]:
    env = detect_env()
    with process_group(env, CPU):
        return {
            str(on): _train(lm_config(2, {"tp": 2, "sequence_parallel": on}, "none"), env)
            for on in (True, False)
        }


@pytest.mark.distributed
@pytest.mark.slow
def test_tp_2_with_and_without_sequence_parallel_matches_one_process():
    got = start_workers(LaunchOptions(nproc=2), sequence_worker, run_name="sp", what="train")[0]
    single, whole = _train(lm_config(1, {}, "none"), DistEnv())
    batch = lm_config(1, {}, "none").batch_size
    assert (batch, LM_CONTEXT, 32) in whole
    weights, seen = got["True"]
    # each rank's blocks see half the positions, and never the whole sequence
    assert (batch, LM_CONTEXT // 2, 32) in seen and all(s[1] == LM_CONTEXT // 2 for s in seen)
    assert_same_weights(weights, single)
    weights, seen = got["False"]
    assert (batch, LM_CONTEXT, 32) in seen
    assert_same_weights(weights, single)
