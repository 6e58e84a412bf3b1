"""A worker SIGKILLed mid-epoch is restarted by the elastic agent (--max-restarts 1) and the
job finishes from the last checkpoint with the weights of an uninterrupted run (a CNN with
BatchNorm and dropout under ddp: buffers and masks that differ between ranks)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from conftest import REPO, tiny_job_dict
from deepfleet.config import job_from_dict
from deepfleet.jobs import stage_prepare
from deepfleet.parallel import run_id
from deepfleet.runs import create_run
from deepfleet.train import LAST, read_metrics

pytestmark = [pytest.mark.distributed, pytest.mark.slow]

TESTS = Path(__file__).parent


def _job(tmp_path: Path, name: str, **train) -> dict:
    job = tiny_job_dict(
        tmp_path,
        run={"name": name, "runs_dir": str(tmp_path / "runs"), "seed": 0},
        model={"name": "fault_model:slow_cnn", "path": str(TESTS), "params": {"delay": 0.02}},
    )
    job["train"].update(train)
    return job


def _worker_pid(run_id: str, rank: int) -> int | None:
    """The pid of the worker of `rank` in the elastic run `run_id` (read from /proc)."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            env = (entry / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if f"TORCHELASTIC_RUN_ID={run_id}".encode() in env and f"RANK={rank}".encode() in env:
            return int(entry.name)
    return None


def _wait_for(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


def _latest_step(checkpoints: Path) -> int:
    pointer = checkpoints / "train" / "latest"
    return int(pointer.read_text().strip().split("-")[1]) if pointer.is_file() else 0


def _start(job_dict: dict) -> tuple:
    job = job_from_dict(job_dict)
    paths = create_run(job)
    stage_prepare(paths, job)
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    # Output to a file, not a pipe: nobody reads a pipe while the test waits, and a full
    # pipe would block the agent.
    with open(paths.root / "output.txt", "w") as out:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "deepfleet",
                "train",
                str(paths.root),
                "--nproc",
                "2",
                "--max-restarts",
                "1",
            ],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    return paths, proc


def test_sigkill_mid_epoch_resumes_from_last_checkpoint(tmp_path):
    train = {"strategy": "ddp", "batch_size": 32, "checkpoint": {"every_steps": 5}}
    # The uninterrupted reference runs beside the faulty run (same seed, same 2 ranks).
    ref_paths, ref_proc = _start(_job(tmp_path, "reference", **train))
    paths, proc = _start(_job(tmp_path, "faulty", **train))
    try:
        # Steps 21-40 are the second epoch; kill rank 1 after the checkpoint at step 25.
        _wait_for(lambda: _latest_step(paths.checkpoints) >= 25, 150, "checkpoint 25")
        killed_after = _latest_step(paths.checkpoints)
        pid = _wait_for(lambda: _worker_pid(run_id(paths.root), 1), 10, "rank 1's pid")
        os.kill(pid, signal.SIGKILL)
        proc.wait(timeout=180)
        ref_proc.wait(timeout=180)
    finally:
        proc.kill()
        ref_proc.kill()
    assert proc.returncode == 0, (paths.root / "output.txt").read_text()[-3000:]
    assert ref_proc.returncode == 0, (ref_paths.root / "output.txt").read_text()[-3000:]
    assert killed_after < 40, "the kill came too late to be mid-epoch"

    records = read_metrics(paths.metrics)
    setups = [r for r in records if r["kind"] == "setup"]
    assert [s["restart"] for s in setups] == [0, 1]
    resumed = int(setups[1]["resumed_from"].split("-")[1])
    assert resumed >= killed_after  # nothing before the last checkpoint was trained again
    assert [r["restart"] for r in read_metrics(ref_paths.metrics) if r["kind"] == "setup"] == [0]

    got = load_file(paths.checkpoints / LAST)
    expected = load_file(ref_paths.checkpoints / LAST)
    assert set(got) == set(expected)
    for key in expected:
        torch.testing.assert_close(got[key], expected[key], rtol=0, atol=0)
    epochs = {r["epoch"]: r for r in records if r["kind"] == "epoch"}
    ref_epochs = [r for r in read_metrics(ref_paths.metrics) if r["kind"] == "epoch"]
    assert len(ref_epochs) == 3
    assert [epochs[r["epoch"]]["train_loss"] for r in ref_epochs] == [
        r["train_loss"] for r in ref_epochs
    ]
