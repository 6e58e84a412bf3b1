"""Multi-dimensional layouts on a DeviceMesh: the degrees of [train.parallel] resolved and
checked before any worker starts, and the gpt trained under FSDP over tensor parallelism
(with activation checkpointing), HSDP, replicated tensor-parallel pairs and two 2-stage
pipelines side by side on 4 ranks ending
with the weights of one process on the same global batch. (Tensor parallelism alone on 2
ranks: test_equivalence.py, which runs the 2-process self-test.)"""

from __future__ import annotations

import pytest
import torch
from layout_checks import assert_same_weights
from tp_user_model import two_layer

from conftest import tiny_job_dict
from deepfleet.config import TrainSection, job_from_dict
from deepfleet.errors import UserError
from deepfleet.jobs import stage_prepare, train_job
from deepfleet.models import gpt, tp_plan
from deepfleet.parallel import LaunchOptions, build_topology, preflight
from deepfleet.parallel._auto import _tensor_parallel
from deepfleet.runs import create_run
from deepfleet.selftest import lm_model, run_selftest, selftest_model

CPU = torch.device("cpu")


def _train(**table) -> TrainSection:
    return TrainSection.model_validate(table)


def test_degrees_resolve_to_named_layouts_and_rank_coordinates():
    model = lm_model()
    fsdp_tp = build_topology(_train(parallel={"tp": 2}), 4, model, CPU)
    assert (fsdp_tp.strategy, fsdp_tp.dp_shard, fsdp_tp.tp, fsdp_tp.dp) == ("fsdp+tp", 2, 2, 2)
    assert "set in [train.parallel]" in fsdp_tp.reason
    # mesh order (pp, dp_replicate, dp_shard, tp): a tensor-parallel group is neighbours
    assert [fsdp_tp.dp_rank(r) for r in range(4)] == [0, 0, 1, 1]
    assert [fsdp_tp.tp_rank(r) for r in range(4)] == [0, 1, 0, 1]
    hsdp = build_topology(_train(parallel={"dp_replicate": 2}), 4, model, CPU)
    assert (hsdp.strategy, hsdp.dp_replicate, hsdp.dp_shard, hsdp.dp) == ("hsdp", 2, 2, 4)
    tp = build_topology(_train(parallel={"tp": 2}), 2, model, CPU)
    assert (tp.strategy, tp.dp) == ("tp", 1)
    three = build_topology(
        _train(parallel={"dp_replicate": 2, "dp_shard": 2, "tp": 2}), 8, model, CPU
    )
    assert three.strategy == "hsdp+tp" and three.describe().endswith(
        "dp_replicate=2 dp_shard=2 tp=2"
    )
    # the one-dimensional shorthand still means what it meant
    ddp = build_topology(_train(strategy="ddp"), 4, model, CPU)
    assert (ddp.dp_replicate, ddp.dp_shard, ddp.dp) == (4, 1, 4)


@pytest.mark.parametrize(
    ("table", "world", "message"),
    [
        ({"parallel": {"tp": 2, "dp_shard": 3}}, 4, "= 6, but the job has 4 processes"),
        ({"parallel": {"tp": 3}}, 4, "tp 3 = 3 does not divide the 4 processes"),
        ({"parallel": {"tp": 3}}, 3, "tp 3 does not divide the gpt's 4 attention heads"),
        ({"strategy": "fsdp", "parallel": {"tp": 2}}, 4, "leave strategy = auto"),
        ({"parallel": {"pp": 2, "tp": 2, "dp_shard": 2}}, 8, "not yet with dp_shard \\(here 2\\)"),
        ({"parallel": {"pp": 2}}, 4, "not yet with dp_shard \\(here 2\\); set dp_shard = 1"),
        ({"strategy": "pipeline", "pipeline": {"schedule": "interleaved"}}, 2, "and only it"),
        (
            {"strategy": "pipeline", "pipeline": {"split_points": ["2"], "interleave": 2}},
            2,
            "2 stages, but the job has 2 pipeline ranks x 2",
        ),
        ({"parallel": {"tp": 2}, "precision": "fp16"}, 2, "fp16 is not supported"),
    ],
)
def test_bad_layouts_are_refused_in_one_line(table, world, message):
    with pytest.raises(UserError, match=message) as err:
        build_topology(_train(**table), world, lm_model(), CPU)
    assert "\n" not in str(err.value)


def test_a_pipeline_cut_at_a_missing_name_is_refused_before_start():
    config = _train(strategy="pipeline", pipeline={"split_points": ["blocks.9"]})
    with pytest.raises(UserError, match="the model has no module 'blocks.9'"):
        preflight(config, lm_model(), 2)


def test_a_model_without_a_plan_is_refused_before_any_worker_starts(tmp_path):
    job = job_from_dict(tiny_job_dict(tmp_path, train={"parallel": {"tp": 2}}))
    paths = create_run(job)
    stage_prepare(paths, job)
    with pytest.raises(UserError, match="Sequential has no tensor-parallel plan"):
        train_job(paths, LaunchOptions(nproc=4))
    assert not (paths.checkpoints / "train").exists()


def test_the_command_line_refuses_a_bad_layout_in_one_line_before_workers(tmp_path, capsys):
    from deepfleet.cli import run_cli
    from deepfleet.config import dump_job

    job_file = tmp_path / "job.toml"
    job_file.write_text(dump_job(job_from_dict(tiny_job_dict(tmp_path))))
    argv = ["train", str(job_file), "--nproc", "4", "--set", "train.parallel.tp=3"]
    assert run_cli(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "train.parallel: pp 1 x dp_replicate 1 x tp 3 = 3 does not divide the 4" in err
    assert len(err.splitlines()) == 1 and not list(tmp_path.rglob("checkpoints/train"))


def test_a_user_module_plan_is_found_and_asked_first():
    model = two_layer((4,), 2, width=6)
    plan = tp_plan(model)
    assert plan is not None and plan.name == "tp_user_model"
    plan.check(model, 2)
    with pytest.raises(UserError, match="tp 4 does not divide the hidden width 6"):
        build_topology(_train(parallel={"tp": 4}), 4, model, CPU)
    assert tp_plan(selftest_model()) is None


def test_auto_adds_tensor_parallelism_only_where_the_plan_allows():
    layout, why = _tensor_parallel(lm_model(), 8, 10**10, 150.0)
    assert layout == {"name": "fsdp+tp", "degrees": {"tp": 2}} and "tensor parallel over 2" in why
    six_heads = gpt((16,), 64, dim=48, layers=1, heads=6)
    assert _tensor_parallel(six_heads, 4, 10**10, 150.0)[0]["degrees"] == {"tp": 2}
    assert _tensor_parallel(selftest_model(), 4, 10**10, 150.0)[0]["name"] == "fsdp"


@pytest.mark.distributed
@pytest.mark.slow
def test_fsdp_over_tp_hsdp_and_pipeline_by_dp_on_four_ranks_match_one_process():
    report = run_selftest(4, keep_weights=True, layouts_only=True)
    assert [row["check"] for row in report["rows"][1:]] == [
        "gpt fsdp 2 x tp 2 + checkpointing: 4 steps",
        "gpt hsdp 2 x 2: 4 steps",
        "gpt ddp 2 x tp 2: 4 steps",
        "gpt pipeline 2 x dp 2: 4 steps",
    ]
    single = report["weights"]["lm one process"]
    assert_same_weights(report["weights"]["fsdp 2 x tp 2 + checkpointing"], single)
    assert_same_weights(report["weights"]["hsdp 2 x 2"], single)
    assert_same_weights(report["weights"]["ddp 2 x tp 2"], single)
    assert_same_weights(report["weights"]["pipeline 2 x dp 2"], single)
