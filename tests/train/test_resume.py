"""Resume never loses trained work: on a finished run it changes nothing on disk, and under
ddp with BatchNorm and dropout it ends bitwise equal to an uninterrupted run."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from conftest import REPO, tiny_job_dict
from deepfleet.cli import run_cli
from deepfleet.config import job_from_dict
from deepfleet.jobs import stage_prepare, stage_train
from deepfleet.runs import RunPaths, create_run
from deepfleet.train import LAST, find_latest, read_metrics


def _digests(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def _trained(tmp_path: Path, **train) -> RunPaths:
    job_dict = tiny_job_dict(
        tmp_path, model={"name": "cnn", "params": {"channels": [8], "hidden": 16}}
    )
    job_dict["train"].update(train)
    job = job_from_dict(job_dict)
    paths = create_run(job)
    stage_prepare(paths, job)
    stage_train(paths)
    return paths


def test_resume_on_a_finished_run_changes_no_file(tmp_path, capsys):
    paths = _trained(tmp_path)
    copy = tmp_path / "copy"
    shutil.copytree(paths.root, copy)
    before = _digests(copy)
    assert run_cli(["train", str(copy), "--resume"]) == 0
    assert "nothing left to train" in capsys.readouterr().out
    assert _digests(copy) == before


def test_resume_after_the_last_checkpoint_restores_the_trained_weights(tmp_path):
    """Killed after the final checkpoint but before last.safetensors was written: resume
    writes the restored weights, never freshly built ones."""
    paths = _trained(tmp_path)
    expected = load_file(paths.checkpoints / LAST)
    (paths.checkpoints / LAST).unlink()
    (paths.checkpoints / "state.json").unlink()
    stage_train(paths, resume=True)
    got = load_file(paths.checkpoints / LAST)
    assert set(got) == set(expected)
    for key in expected:
        torch.testing.assert_close(got[key], expected[key], rtol=0, atol=0)


@pytest.mark.parametrize("content", [b"\xff\xfe\x00garbage\x80", b"step-999999999\n", b""])
def test_a_latest_pointer_with_any_bytes_falls_back_to_the_newest_complete(tmp_path, content):
    paths = _trained(tmp_path, checkpoint={"keep": 3})
    root = paths.checkpoints / "train"
    newest = find_latest(root)
    (root / "latest").write_bytes(content)
    assert find_latest(root) == newest


def _worker_env() -> dict:
    return {**os.environ, "PYTHONPATH": str(REPO / "src")}


@pytest.mark.distributed
@pytest.mark.slow
@pytest.mark.parametrize("strategy", ["ddp", "fsdp", "pipeline"])
def test_batchnorm_dropout_resumed_by_hand_is_bitwise_equal(tmp_path, strategy):
    """A 2-rank CNN (BatchNorm + dropout) resumed from a mid-epoch checkpoint ends with the
    uninterrupted run's weights, buffers and validation figures, bit for bit."""
    job_dict = tiny_job_dict(
        tmp_path, model={"name": "cnn", "params": {"channels": [8], "hidden": 16, "dropout": 0.3}}
    )
    job_dict["train"].update(
        strategy=strategy, batch_size=32, checkpoint={"every_steps": 7, "keep": 20}
    )
    job = job_from_dict(job_dict)
    paths = create_run(job)
    stage_prepare(paths, job)
    args = [sys.executable, "-m", "deepfleet", "train", str(paths.root), "--nproc", "2"]
    done = subprocess.run(args, env=_worker_env(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]

    copy = RunPaths(tmp_path / "resumed")
    shutil.copytree(paths.root, copy.root)
    train_dir = copy.checkpoints / "train"
    # Step 28 is mid-way through the second epoch (20 to 41 steps per epoch: 32 x 2 ranks
    # under ddp and fsdp, 32 on both pipeline stages).
    for later in [p for p in train_dir.glob("step-*") if p.name > "step-000000028"]:
        shutil.rmtree(later)
    (train_dir / "latest").write_text("step-000000028\n")
    (copy.checkpoints / LAST).unlink()
    (copy.checkpoints / "state.json").unlink()
    resumed = subprocess.run(
        [*args[:4], str(copy.root), "--nproc", "2", "--resume"],
        env=_worker_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]

    setups = [r for r in read_metrics(copy.metrics) if r["kind"] == "setup"]
    assert setups[-1]["resumed_from"] == "step-000000028"
    expected = load_file(paths.checkpoints / LAST)
    got = load_file(copy.checkpoints / LAST)
    assert set(got) == set(expected)
    differ = sorted(k for k in expected if not torch.equal(got[k], expected[k]))
    assert differ == []
    ref = {r["epoch"]: r["val_loss"] for r in read_metrics(paths.metrics) if r["kind"] == "epoch"}
    again = {r["epoch"]: r["val_loss"] for r in read_metrics(copy.metrics) if r["kind"] == "epoch"}
    assert again == ref
