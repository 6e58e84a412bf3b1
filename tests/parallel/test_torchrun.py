"""The worker entry point under plain torchrun: ranks from the environment, one run folder."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import tomli_w
from safetensors.torch import load_file

from conftest import REPO, run_deepfleet, tiny_job_dict
from deepfleet.train import BEST, LAST, read_metrics

pytestmark = [pytest.mark.distributed, pytest.mark.slow]


def test_torchrun_starts_deepfleet_workers_on_a_prepared_run(tmp_path):
    job = tmp_path / "job.toml"
    spec = tiny_job_dict(tmp_path, train={"strategy": "auto"})
    spec["train"]["phases"] = spec["train"]["phases"][:1]
    job.write_text(tomli_w.dumps(spec))
    made = run_deepfleet("train", str(job), "--prepare-only")
    assert made.returncode == 0, made.stderr
    run = Path(made.stdout.strip())
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc-per-node",
            "2",
            "-m",
            "deepfleet",
            "train",
            str(run),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    records = read_metrics(run / "metrics.jsonl")
    [setup] = [r for r in records if r["kind"] == "setup"]
    assert (setup["strategy"], setup["world_size"], setup["global_batch"]) == ("ddp", 2, 128)
    assert "fit in every process" in setup["why"]
    assert len([r for r in records if r["kind"] == "epoch"]) == 2  # rank 0 alone writes
    weights = load_file(run / "checkpoints" / LAST)
    assert set(weights) == set(load_file(run / "checkpoints" / BEST))
