"""Two nodes on one machine: two `deepfleet train` launchers (--nnodes 2, --node-rank 0 and 1)
meet at a c10d rendezvous on 127.0.0.1 and train one run folder together, exactly as the
Kubernetes and Slurm manifests start them; the result must match one node with 2 processes."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import pytest
import tomli_w
from safetensors.torch import load_file

from conftest import REPO, tiny_job_dict
from deepfleet.cluster import prepare_run_at
from deepfleet.jobs import train_job
from deepfleet.parallel import LaunchOptions
from deepfleet.runs import open_run
from deepfleet.train import LAST

pytestmark = [pytest.mark.distributed, pytest.mark.slow]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _train(*args: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    return subprocess.Popen(
        [sys.executable, "-m", "deepfleet", "train", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _setup(run_dir) -> dict:
    for line in (run_dir / "metrics.jsonl").read_text().splitlines():
        record = json.loads(line)
        if record.get("kind") == "setup":
            return record
    raise AssertionError(f"no setup record in {run_dir}/metrics.jsonl")


def test_two_launchers_train_like_one_node_with_two_processes(tmp_path):
    job = tiny_job_dict(tmp_path, train={"strategy": "ddp", "batch_size": 32})
    job_file = tmp_path / "job.toml"
    job_file.write_text(tomli_w.dumps(job))
    two_nodes = prepare_run_at(job_file, tmp_path / "shared" / "two-nodes").root
    one_node = prepare_run_at(job_file, tmp_path / "shared" / "one-node").root

    port = _free_port()
    rdzv = ["--nnodes", "2", "--rdzv", f"127.0.0.1:{port}"]
    launchers = [
        _train(str(two_nodes), "--nproc", "1", *rdzv, "--node-rank", str(rank)) for rank in (0, 1)
    ]
    # Meanwhile the reference: one node, 2 processes, through the same elastic launch that
    # `deepfleet train RUN --nproc 2` uses, with this process as the node's agent (one
    # process fewer to start; the time here is mostly imports).
    train_job(open_run(one_node), LaunchOptions(nproc=2))
    outputs = [p.communicate(timeout=300)[0] for p in launchers]
    for p, out in zip(launchers, outputs, strict=True):
        assert p.returncode == 0, out[-3000:]

    assert _setup(two_nodes)["world_size"] == _setup(one_node)["world_size"] == 2
    got = load_file(two_nodes / "checkpoints" / LAST)
    want = load_file(one_node / "checkpoints" / LAST)
    assert got.keys() == want.keys()
    for name in want:
        # Same ranks, same shards, same gloo sums: equal to float32 rounding.
        assert (got[name] - want[name]).abs().max().item() <= 1e-6, name
    assert any((want[n] != 0).any() for n in want)
