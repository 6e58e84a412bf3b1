"""Topology checks, model splitting, rank batches, environment detection, launch options,
and the single-process trainer against a hand-written PyTorch loop."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from conftest import tiny_job_dict
from deepfleet.config import TrainSection, job_from_dict
from deepfleet.errors import UserError
from deepfleet.jobs import stage_prepare, train_job
from deepfleet.parallel import (
    DistEnv,
    LaunchOptions,
    build_topology,
    detect_env,
    split_children,
)
from deepfleet.runs import create_run
from deepfleet.selftest import selftest_data, selftest_model
from deepfleet.train import RankBatches, Trainer, lr_scale

CPU = torch.device("cpu")


def _train(**table) -> TrainSection:
    return TrainSection.model_validate(table)


def test_topology_checks_degrees_against_world_size():
    model = selftest_model()
    assert build_topology(_train(strategy="ddp"), 4, model, CPU).dp == 4
    fsdp = build_topology(_train(strategy="fsdp"), 2, model, CPU)
    assert (fsdp.strategy, fsdp.dp, fsdp.pp) == ("fsdp", 2, 1)
    with pytest.raises(UserError, match="single runs one process"):
        build_topology(_train(strategy="single"), 2, model, CPU)
    with pytest.raises(UserError, match="2 split points make 3 stages"):
        build_topology(
            _train(strategy="pipeline", pipeline={"split_points": ["2", "4"]}), 2, model, CPU
        )
    with pytest.raises(UserError, match="does not divide"):
        build_topology(_train(strategy="pipeline", batch_size=10), 2, model, CPU)
    with pytest.raises(UserError, match="1f1b needs at least one micro-batch per stage"):
        build_topology(
            _train(strategy="pipeline", batch_size=8, pipeline={"microbatches": 2}), 4, model, CPU
        )
    with pytest.raises(UserError, match="fp16 is not supported"):
        build_topology(_train(strategy="pipeline", precision="fp16"), 2, model, CPU)


def test_auto_strategy_says_why():
    model = selftest_model()
    single = build_topology(_train(), 1, model, CPU)
    assert (single.strategy, single.reason) == ("single", "one process")
    ddp = build_topology(_train(), 2, model, CPU)
    assert ddp.strategy == "ddp" and "fit in every process" in ddp.reason
    pipe = build_topology(_train(pipeline={"split_points": ["2"]}), 2, model, CPU)
    assert pipe.strategy == "pipeline" and "split_points" in pipe.reason


def test_split_children_at_named_points_and_evenly():
    model = selftest_model()  # children 0..4: Linear, ReLU, Linear, Tanh, Linear
    parts = split_children(model, 2, ["2"])
    assert [[n for n, _ in p] for p in parts] == [["0", "1"], ["2", "3", "4"]]
    even = split_children(model, 3, [])
    assert sum(len(p) for p in even) == 5 and all(even)
    with pytest.raises(UserError, match="no top-level child 'head'"):
        split_children(model, 2, ["head"])
    with pytest.raises(UserError, match="distinct children in model order"):
        split_children(model, 3, ["4", "2"])
    with pytest.raises(UserError, match="needs at least 2 top-level children"):
        split_children(nn.Sequential(nn.Linear(2, 2)), 2, [])


def test_rank_batches_cut_the_same_global_batches():
    one = RankBatches(103, 16, 1, 0, seed=3)
    ranks = [RankBatches(103, 8, 2, r, seed=3) for r in range(2)]
    assert one.steps_per_epoch == ranks[0].steps_per_epoch == 7
    order = one.order(5)
    assert torch.equal(order, ranks[1].order(5))
    assert not torch.equal(order, one.order(6))
    for step in range(one.steps_per_epoch):
        [whole] = one.step(order, step)
        shares = [r.step(order, step)[0] for r in ranks]
        assert torch.equal(torch.cat([s.rows for s in shares]), whole.rows)
        assert {s.global_count for s in shares} == {len(whole.rows)}
    # a last micro-batch too small to give each rank a row is dropped
    assert RankBatches(33, 16, 2, 0, seed=0).micro_per_epoch == 1
    assert RankBatches(40, 16, 1, 0, seed=0, accumulation=2).steps_per_epoch == 2
    assert RankBatches(40, 16, 1, 0, seed=0, drop_last=True).micro_per_epoch == 2


def test_detect_env_reads_torchrun_and_slurm(no_launcher_env):
    monkeypatch = no_launcher_env
    assert detect_env() == DistEnv()
    monkeypatch.setenv("SLURM_PROCID", "5")
    monkeypatch.setenv("SLURM_NTASKS", "8")
    monkeypatch.setenv("SLURM_LOCALID", "1")
    monkeypatch.setenv("SLURM_NTASKS_PER_NODE", "4(x2)")
    assert detect_env() == DistEnv(5, 8, 1, 4, "slurm")
    monkeypatch.setenv("RANK", "3")
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setenv("TORCHELASTIC_RUN_ID", "x")
    env = detect_env()
    assert (env.rank, env.world_size, env.local_rank, env.launcher) == (3, 4, 1, "torchrun")
    monkeypatch.setenv("RANK", "three")
    with pytest.raises(UserError, match="RANK='three' is not an integer"):
        detect_env()


def test_launch_options_are_checked():
    assert LaunchOptions(nproc=4, nnodes=2, rdzv="h:1").world_size == 8
    with pytest.raises(UserError, match="needs --rdzv"):
        LaunchOptions(nnodes=2).check()
    with pytest.raises(UserError, match="expected HOST:PORT"):
        LaunchOptions(rdzv="host").check()
    with pytest.raises(UserError, match="--node-rank 2"):
        LaunchOptions(nnodes=2, node_rank=2, rdzv="h:1").check()


def test_launch_refuses_a_bad_topology_before_starting_workers(tmp_path):
    job = job_from_dict(tiny_job_dict(tmp_path, train={"strategy": "single"}))
    paths = create_run(job)
    stage_prepare(paths, job)
    with pytest.raises(UserError, match="single runs one process, but the job has 2"):
        train_job(paths, LaunchOptions(nproc=2))


def test_lr_scaling_rules():
    assert lr_scale("none", 256, 32) == 1.0
    assert lr_scale("linear", 256, 32) == 8.0
    assert lr_scale("sqrt", 128, 32) == 2.0


def test_trainer_matches_a_hand_written_loop():
    """The independent reference: plain PyTorch, the same rows in the same order."""
    config = _train(
        batch_size=16,
        accumulation_steps=2,
        phases=[{"name": "s", "epochs": 2, "lr": 0.05, "optimizer": "sgd", "momentum": 0.9}],
    )
    data = selftest_data(rows=96)
    trainer = Trainer(config, selftest_model(), CPU, seed=7)
    trainer.fit(data)

    model = selftest_model()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    for epoch in range(2):
        order = torch.randperm(96, generator=torch.Generator().manual_seed(7 * 1_000_003 + epoch))
        for start in range(0, 96, 32):  # two micro-batches of 16 per step
            rows = order[start : start + 32]
            loss = nn.functional.cross_entropy(model(data.x[rows]), data.y[rows])
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
    for key, value in model.state_dict().items():
        torch.testing.assert_close(trainer.model.state_dict()[key], value, rtol=1e-5, atol=1e-6)


def test_channels_last_and_bf16_autocast_train_on_cpu():
    config = _train(
        batch_size=32, precision="bf16", channels_last=True, phases=[{"epochs": 1, "lr": 0.01}]
    )
    from deepfleet.models import cnn

    model = cnn((1, 8, 8), 4, channels=[8], hidden=16)
    g = torch.Generator().manual_seed(0)
    data = selftest_data(rows=64)
    data.x = torch.randn(64, 1, 8, 8, generator=g)
    result = Trainer(config, model, CPU).fit(data)
    assert result.history[0]["train_loss"] > 0
    assert model[0][0].weight.is_contiguous(memory_format=torch.channels_last)


def test_cli_refuses_bad_launch_options_and_selftest_of_one(tmp_path, capsys):
    from deepfleet.cli import run_cli

    assert run_cli(["train", "digits", "--nproc", "2", "--nnodes", "2"]) == 2
    assert "needs --rdzv HOST:PORT" in " ".join(capsys.readouterr().err.split())
    assert run_cli(["selftest", "--nproc", "1"]) == 2
    assert "--nproc must be at least 2" in capsys.readouterr().err


def test_prepare_only_makes_a_run_folder_for_outside_launchers(tmp_path, capsys, monkeypatch):
    from deepfleet.cli import run_cli

    monkeypatch.chdir(tmp_path)
    assert run_cli(["train", "digits-mlp", "--prepare-only"]) == 0
    root = capsys.readouterr().out.strip()
    assert (tmp_path / "runs").is_dir() and root.startswith(str(tmp_path / "runs"))
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert run_cli(["train", "digits-mlp"]) == 2
    assert "every rank must get the same run folder" in " ".join(capsys.readouterr().err.split())


@pytest.mark.slow
def test_torch_compile_trains_like_eager():
    def losses(compile_model: bool) -> list[float]:
        config = _train(batch_size=32, compile=compile_model, phases=[{"epochs": 2, "lr": 0.01}])
        result = Trainer(config, selftest_model(), CPU).fit(selftest_data())
        return [r["train_loss"] for r in result.history]

    torch.testing.assert_close(losses(True), losses(False), rtol=1e-5, atol=1e-6)
