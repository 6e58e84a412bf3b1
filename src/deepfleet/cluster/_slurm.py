"""An sbatch script: one `deepfleet train` launcher per node via srun, c10d rendezvous on the
allocation's first node.

The script is assembled from data: #SBATCH options from a dict, assignments whose values are
shell-quoted, and the launcher's argument list from the same function the Kubernetes
manifests use. Per-node values (the node's rank) are expanded on each node by srun's shell.
"""

from __future__ import annotations

import shlex

from deepfleet.cluster._commands import prepare_args, train_args
from deepfleet.cluster._spec import SlurmSpec


def _directives(spec: SlurmSpec) -> list[tuple[str, str | None]]:
    options: list[tuple[str, str | None]] = [
        ("job-name", spec.name),
        ("nodes", str(spec.nodes)),
        # One launcher per node; torch's elastic agent starts one process per GPU.
        ("ntasks-per-node", "1"),
        ("cpus-per-task", str(spec.cpus_per_task)),
        ("time", spec.time),
        ("output", "%x-%j.out"),
    ]
    if spec.gpus_per_node:
        options.insert(3, ("gpus-per-node", str(spec.gpus_per_node)))
    if spec.partition:
        options.append(("partition", spec.partition))
    # Requeue after a node failure only when the relaunch resumes from a checkpoint;
    # otherwise it would silently train from scratch.
    options.append(("requeue" if spec.resume else "no-requeue", None))
    return options


def _assign(name: str, value: str) -> str:
    return f"{name}={shlex.quote(value)}"


def sbatch_script(spec: SlurmSpec) -> str:
    """The text of the sbatch script (bash, passes shellcheck)."""
    lines = ["#!/bin/bash"]
    for key, value in _directives(spec):
        lines.append(f"#SBATCH --{key}" + (f"={value}" if value is not None else ""))
    lines += [
        "#",
        "# Written by `deepfleet cluster slurm`. Submit with `sbatch` from a shell where",
        "# `deepfleet` is on PATH (sbatch passes the environment on). The job file, its data",
        "# and run folders must be on a file system every node sees.",
        "set -euo pipefail",
        "",
        _assign("export DEEPFLEET_JOB", spec.job_file),
        # Every node trains this one run folder; resubmitting (or a requeue) reuses it.
        (
            _assign("export RUN_DIR", spec.run_dir)
            if spec.run_dir
            else f'export RUN_DIR="${{SLURM_SUBMIT_DIR}}/runs/{spec.name}"'
        ),
        "# The first node of the allocation hosts the c10d rendezvous.",
        'head_node="$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)"',
        f'export RDZV_ENDPOINT="${{head_node}}:{spec.rdzv_port}"',
        "export PYTHONUNBUFFERED=1",
        "",
        "deepfleet " + " ".join(prepare_args('"$DEEPFLEET_JOB"', '"$RUN_DIR"')),
        "",
    ]
    # Strings are references to variables exported above, expanded by each task's shell;
    # the counts are plain numbers.
    argv = train_args(
        '"$RUN_DIR"',
        nproc=spec.nproc,
        nnodes=spec.nodes,
        node_rank='"$SLURM_NODEID"',
        rdzv='"$RDZV_ENDPOINT"',
        max_restarts=spec.max_restarts,
        resume=spec.resume,
    )
    # srun marks each task as a rank (SLURM_PROCID); here the task is the node's launcher,
    # which starts the per-GPU ranks itself, so that mark is removed from its environment.
    inner = "unset SLURM_PROCID; exec deepfleet " + " ".join(argv)
    lines += [
        "# SLURM_NODEID differs per node, so it must expand inside each task, not here.",
        "# shellcheck disable=SC2016",
        "srun --ntasks-per-node=1 --kill-on-bad-exit=1 bash -c " + shlex.quote(inner),
        "",
    ]
    return "\n".join(lines)
