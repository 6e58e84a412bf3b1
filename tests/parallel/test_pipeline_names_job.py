"""A job-file run of a user model that is not an nn.Sequential, cut at "blocks.2" over 2 gloo
ranks: its sharded checkpoint, last weights and exported bundle carry the keys (and values)
of the same job in one process; resumed from a mid-run checkpoint it ends with the
uninterrupted run's weights."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
import torch.distributed.checkpoint as dcp
from safetensors.torch import load_file

from conftest import tiny_job_dict
from deepfleet.config import job_from_dict
from deepfleet.deploy._bundle import WEIGHTS
from deepfleet.jobs import stage_export, stage_prepare, stage_train, train_job
from deepfleet.parallel import LaunchOptions
from deepfleet.runs import RunPaths, create_run
from deepfleet.train import LAST, read_metrics
from deepfleet.train._checkpoint import find_latest

pytestmark = [pytest.mark.distributed, pytest.mark.slow]

TESTS = Path(__file__).parent


def _run(tmp_path: Path, name: str, **train) -> Path:
    spec = tiny_job_dict(
        tmp_path,
        run={"name": name, "runs_dir": str(tmp_path / "runs"), "seed": 0},
        model={"name": "pipe_user_model:residual_mlp", "path": str(TESTS), "params": {}},
    )
    spec["train"]["phases"] = [{**spec["train"]["phases"][0], "epochs": 1}]
    spec["train"].update(train)
    job = job_from_dict(spec)
    paths = create_run(job)
    stage_prepare(paths, job)
    if job.train.strategy == "pipeline":
        train_job(paths, LaunchOptions(nproc=2))
    else:
        stage_train(paths)
    stage_export(paths)
    return paths.root


def _checkpoint_keys(run: Path) -> set[str]:
    latest = find_latest(run / "checkpoints" / "train")
    return set(dcp.FileSystemReader(str(latest)).read_metadata().state_dict_metadata)


def test_a_user_model_job_on_two_stages_checkpoints_and_exports_as_one_process(tmp_path):
    single = _run(tmp_path, "single", strategy="single")
    piped = _run(
        tmp_path,
        "piped",
        strategy="pipeline",
        pipeline={"split_points": ["blocks.2"], "schedule": "1f1b"},
        checkpoint={"every_steps": 5, "keep": 20},
    )
    keys = _checkpoint_keys(single)
    assert any(k.startswith("model.blocks.2.") for k in keys)
    assert _checkpoint_keys(piped) == keys  # the two stages' shards make up one model
    for name in (LAST, f"bundle/{WEIGHTS}"):
        want = load_file(single / ("checkpoints/" + name if name == LAST else name))
        got = load_file(piped / ("checkpoints/" + name if name == LAST else name))
        assert list(got) == list(want)
        for key, value in want.items():
            torch.testing.assert_close(got[key], value, rtol=1e-4, atol=1e-5)

    # Resumed from step 10 (each stage loads its own parameters and optimizer state under
    # their names, before its forward is traced): the uninterrupted run's weights.
    copy = RunPaths(tmp_path / "resumed")
    shutil.copytree(piped, copy.root)
    train_dir = copy.checkpoints / "train"
    for later in [p for p in train_dir.glob("step-*") if p.name > "step-000000010"]:
        shutil.rmtree(later)
    (train_dir / "latest").write_text("step-000000010\n")
    (copy.checkpoints / LAST).unlink()
    (copy.checkpoints / "state.json").unlink()
    train_job(copy, LaunchOptions(nproc=2), resume=True)
    setups = [r for r in read_metrics(copy.metrics) if r["kind"] == "setup"]
    assert setups[-1]["resumed_from"] == "step-000000010"
    expected = load_file(piped / "checkpoints" / LAST)
    got = load_file(copy.checkpoints / LAST)
    for key, value in expected.items():
        torch.testing.assert_close(got[key], value, rtol=1e-6, atol=1e-7)
