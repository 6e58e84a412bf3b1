"""Pipeline x data parallel x tensor parallel (pp 2 x dp_replicate 2 x tp 2 on 8 gloo ranks):
two pipelines side by side, every stage split over a tensor-parallel pair, the replicas of a
stage averaging their gradient shards (with gradient accumulation); the gpt ends with the
weights of one process."""

from __future__ import annotations

import pytest
import torch
from layout_checks import assert_same_weights

from deepfleet.config import TrainSection
from deepfleet.parallel import (
    DistEnv,
    LaunchOptions,
    build_topology,
    detect_env,
    process_group,
    start_workers,
)
from deepfleet.selftest import lm_config, lm_model, train_case

CPU = torch.device("cpu")
DEGREES = {"pp": 2, "dp_replicate": 2, "tp": 2, "dp_shard": 1}


def test_the_three_dimensional_layout_places_ranks_in_mesh_order():
    topology = build_topology(
        TrainSection.model_validate({"parallel": DEGREES}), 8, lm_model(), CPU
    )
    assert (topology.strategy, topology.pp, topology.dp, topology.tp) == (
        "pipeline+ddp+tp",
        2,
        2,
        2,
    )
    assert [topology.pp_rank(r) for r in range(8)] == [0, 0, 0, 0, 1, 1, 1, 1]
    assert [topology.dp_rank(r) for r in range(8)] == [0, 0, 1, 1, 0, 0, 1, 1]
    assert [topology.tp_rank(r) for r in range(8)] == [0, 1] * 4


def three_d_worker() -> dict[str, torch.Tensor]:
    env = detect_env()
    with process_group(env, CPU):
        config = lm_config(env.world_size, DEGREES, "none")
        # two accumulation steps of half the batch: the same global batch, and the gradient
        # averaged once per optimizer step
        half = {"accumulation_steps": 2, "batch_size": config.batch_size // 2}
        return train_case(config.model_copy(update=half), env, CPU, lm=True)


@pytest.mark.distributed
@pytest.mark.slow
def test_pp_2_x_dp_2_x_tp_2_on_eight_ranks_matches_one_process():
    got = start_workers(LaunchOptions(nproc=8), three_d_worker, run_name="pp-dp-tp", what="train")
    assert_same_weights(got[0], train_case(lm_config(1, {}, "none"), DistEnv(), CPU, lm=True))
