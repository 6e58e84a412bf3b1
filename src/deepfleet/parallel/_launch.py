"""Starting the workers of a job through torch.distributed.run's elastic agent (c10d
rendezvous, restarts), and what `deepfleet train` does in the process the user started."""

from __future__ import annotations

import hashlib
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import torch

from deepfleet.errors import UserError
from deepfleet.parallel._env import in_worker
from deepfleet.parallel._pipeline import split_children
from deepfleet.parallel._topology import Topology, build_topology


@dataclass(frozen=True)
class LaunchOptions:
    """How many processes and where: --nproc, --nnodes, --node-rank, --rdzv, --max-restarts."""

    nproc: int = 1
    nnodes: int = 1
    node_rank: int | None = None
    rdzv: str | None = None
    max_restarts: int = 0

    @property
    def world_size(self) -> int:
        return self.nproc * self.nnodes

    def check(self) -> None:
        if self.nproc < 1 or self.nnodes < 1:
            raise UserError("--nproc and --nnodes must be at least 1")
        if self.max_restarts < 0:
            raise UserError("--max-restarts must be >= 0")
        if self.nnodes > 1 and not self.rdzv:
            raise UserError(
                "--nnodes > 1 needs --rdzv HOST:PORT (the rendezvous every node "
                "reaches, usually the first node)"
            )
        if self.rdzv and ":" not in self.rdzv:
            raise UserError(f"--rdzv {self.rdzv}: expected HOST:PORT")
        if self.node_rank is not None and not 0 <= self.node_rank < self.nnodes:
            raise UserError(f"--node-rank {self.node_rank}: must be in 0..{self.nnodes - 1}")


def preflight(train, model: torch.nn.Module, world_size: int) -> Topology:
    """Check the job against the world size in the launching process, before any worker
    starts, so a mistake is one line here rather than the same error from every rank."""
    topology = build_topology(train, world_size, model, torch.device("cpu"))
    if topology.strategy == "pipeline":
        split_children(model, topology.pp, train.pipeline.split_points)
    return topology


def run_id(run_root: Path) -> str:
    """The rendezvous id of a run folder: the same on every node that mounts it at the same
    path, different for two runs of the same name elsewhere."""
    digest = hashlib.sha256(str(Path(run_root).resolve()).encode()).hexdigest()[:8]
    return f"{Path(run_root).name}-{digest}"


def launch(run_root: Path, options: LaunchOptions, *, resume: bool = False) -> None:
    """Run `python -m deepfleet train RUN` on every rank under the elastic agent; returns
    when all workers finished, raises UserError naming the failed rank otherwise."""
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    options.check()
    rdzv_configs = {}
    if options.node_rank is not None:
        # c10d assigns ranks itself; the node rank only says which node hosts the store.
        rdzv_configs["is_host"] = options.node_rank == 0
    config = LaunchConfig(
        min_nodes=options.nnodes,
        max_nodes=options.nnodes,
        nproc_per_node=options.nproc,
        run_id=run_id(run_root),
        rdzv_backend="c10d",
        # One node without --rdzv: a private store on a free local port (like --standalone).
        rdzv_endpoint=options.rdzv or "127.0.0.1:0",
        rdzv_configs=rdzv_configs,
        max_restarts=options.max_restarts,
        monitor_interval=0.5,
        start_method="spawn",
    )
    # Like torchrun: one intra-op thread per worker unless told otherwise, since N workers
    # with a thread per core each would fight over the cores.
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    args = ["-m", "deepfleet", "train", str(run_root), *(["--resume"] if resume else [])]
    try:
        elastic_launch(config, sys.executable)(*args)
    except ChildFailedError as err:
        rank, failure = err.get_first_failure()
        raise UserError(
            f"training failed: rank {rank} exited with code {failure.exitcode} "
            f"(after {options.max_restarts} restart(s) allowed); see its output "
            "above"
        ) from None


def must_launch(options: LaunchOptions) -> bool:
    """True when this process should start workers rather than train itself."""
    return options.world_size > 1 and not in_worker()
