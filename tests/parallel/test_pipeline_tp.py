"""Pipeline x tensor parallel (pp 2 x tp 2 on 4 gloo ranks): every stage of the gpt split by
its plan over a tensor-parallel pair, with and without sequence parallel, under 1F1B and
GPipe, ends with the weights of one process; what is not supported yet is refused before
start."""

from __future__ import annotations

import pytest
import torch
from layout_checks import assert_same_weights
from pipe_user_model import named_gpt
from tp_user_model import two_layer

from deepfleet.config import TrainSection
from deepfleet.errors import UserError
from deepfleet.parallel import (
    DistEnv,
    LaunchOptions,
    build_topology,
    detect_env,
    preflight,
    process_group,
    start_workers,
)
from deepfleet.selftest import lm_config, lm_model, train_case

CPU = torch.device("cpu")
CASES = [
    ("pp 2 x tp 2, 1f1b, sequence parallel", {"pp": 2, "tp": 2, "dp_shard": 1}),
    (
        "pp 2 x tp 2, gpipe",
        {"pp": 2, "tp": 2, "sequence_parallel": False, "pipeline": {"schedule": "gpipe"}},
    ),
]


def _parallel(**degrees) -> TrainSection:
    return TrainSection.model_validate({"parallel": degrees})


def test_pipeline_by_tp_is_a_layout_and_its_limits_are_refused_in_one_line():
    topology = build_topology(_parallel(pp=2, tp=2), 4, lm_model(), CPU)
    assert (topology.strategy, topology.pp, topology.tp, topology.dp) == ("pipeline+tp", 2, 2, 1)
    assert topology.sequence_parallel
    # mesh order (pp, dp_replicate, dp_shard, tp): ranks 0, 1 are stage 0's pair
    assert [topology.pp_rank(r) for r in range(4)] == [0, 0, 1, 1]
    assert [topology.tp_rank(r) for r in range(4)] == [0, 1, 0, 1]
    with pytest.raises(UserError, match="tp 3 does not divide the gpt's 4 attention heads"):
        build_topology(_parallel(pp=2, tp=3), 6, lm_model(), CPU)
    with pytest.raises(UserError, match="no tensor-parallel plan"):
        preflight(_parallel(pp=2, tp=2), named_gpt(), 4)
    # a model with a plan that is not an nn.Sequential: cut by the tracer, not with tp yet
    with pytest.raises(UserError, match="pipeline x tp needs an nn.Sequential") as err:
        preflight(_parallel(pp=2, tp=2), two_layer((4,), 2), 4)
    assert "\n" not in str(err.value)


def pipeline_tp_worker() -> dict[str, dict[str, torch.Tensor]]:
    env = detect_env()
    with process_group(env, CPU):
        return {
            name: train_case(lm_config(env.world_size, degrees, "none"), env, CPU, lm=True)
            for name, degrees in CASES
        }


@pytest.mark.distributed
@pytest.mark.slow
def test_pipeline_by_tp_on_four_ranks_matches_one_process():
    got = start_workers(LaunchOptions(nproc=4), pipeline_tp_worker, run_name="pptp", what="train")
    single = train_case(lm_config(1, {}, "none"), DistEnv(), CPU, lm=True)
    assert list(got[0]) == [name for name, _ in CASES]
    for weights in got[0].values():
        assert_same_weights(weights, single)
