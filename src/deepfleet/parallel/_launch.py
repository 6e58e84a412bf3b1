"""Starting the workers of a job through torch.distributed.run's elastic agent (c10d
rendezvous, restarts), and what `deepfleet train` does in the process the user started.

start_workers() is the one way deepfleet starts workers: `deepfleet train --nproc N` (a
module entry), the self-test and the scaling benchmark (function entries) all go through it."""

from __future__ import annotations

import hashlib
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from deepfleet.errors import UserError
from deepfleet.parallel._env import in_worker
from deepfleet.parallel._pipeline import check_pipeline
from deepfleet.parallel._topology import Topology, build_topology

if TYPE_CHECKING:
    from torch.distributed.launcher.api import LaunchConfig


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


def preflight(
    train, model: torch.nn.Module, world_size: int, example: torch.Tensor | None = None
) -> Topology:
    """Check the job against the world size in the launching process, before any worker
    starts, so a mistake is one line here rather than the same error from every rank.
    `example`: a batch of the model's input, to trace a pipeline cut at module names."""
    topology = build_topology(train, world_size, model, torch.device("cpu"))
    if topology.pp > 1:
        check_pipeline(train, model, topology, example)
    return topology


def run_id(run_root: Path) -> str:
    """The rendezvous id of a run folder: the same on every node that mounts it at the same
    path, different for two runs of the same name elsewhere."""
    digest = hashlib.sha256(str(Path(run_root).resolve()).encode()).hexdigest()[:8]
    return f"{Path(run_root).name}-{digest}"


# How often the agent looks at its workers: how soon a finished or failed job is noticed.
MONITOR_INTERVAL = 0.5


def launch_config(
    options: LaunchOptions, run_name: str, log_dir: Path | None = None
) -> LaunchConfig:
    """The elastic agent's settings for `options`: c10d rendezvous (a private store on a free
    port of 127.0.0.1 for one node without --rdzv), spawned workers, --max-restarts; worker
    output goes to the console, or under `log_dir` when given."""
    from torch.distributed.elastic.multiprocessing import DefaultLogsSpecs, Std
    from torch.distributed.launcher.api import LaunchConfig

    options.check()
    rdzv_configs = {}
    if options.node_rank is not None:
        # c10d assigns ranks itself; the node rank only says which node hosts the store.
        rdzv_configs["is_host"] = options.node_rank == 0
    logs = (
        DefaultLogsSpecs(log_dir=str(log_dir), redirects=Std.ALL) if log_dir is not None else None
    )
    return LaunchConfig(
        min_nodes=options.nnodes,
        max_nodes=options.nnodes,
        nproc_per_node=options.nproc,
        logs_specs=logs,
        run_id=run_name,
        rdzv_backend="c10d",
        # One node without --rdzv: a private store on a free local port (like --standalone).
        rdzv_endpoint=options.rdzv or "127.0.0.1:0",
        rdzv_configs=rdzv_configs,
        max_restarts=options.max_restarts,
        monitor_interval=MONITOR_INTERVAL,
        start_method="spawn",
    )


@contextmanager
def _worker_threads() -> Iterator[None]:
    """Like torchrun: one intra-op thread per worker unless OMP_NUM_THREADS says otherwise,
    since N workers with a thread per core each would fight over the cores."""
    had = os.environ.get("OMP_NUM_THREADS")
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    try:
        yield
    finally:
        if had is None:
            os.environ.pop("OMP_NUM_THREADS", None)


def _output_tail(log_dir: Path | None, local_rank: int, lines: int = 5) -> str:
    if log_dir is None:
        return "see its output above"
    found = sorted(Path(log_dir).glob(f"*/attempt_*/{local_rank}/stderr.log"))
    text = found[-1].read_text(errors="replace").strip().splitlines() if found else []
    return "its last output: " + (" | ".join(text[-lines:]) or "(none)")


def start_workers(
    options: LaunchOptions,
    entry: Callable[..., Any] | str,
    *args: Any,
    run_name: str,
    what: str,
    log_dir: Path | None = None,
) -> dict[int, Any]:
    """Run `entry` on every rank of this node under the elastic agent and wait for all.

    `entry` is a module name, run as `python -m ENTRY ARGS...` (what `deepfleet train`
    starts), or a picklable function, called as `entry(*args)` in each worker. Returns
    each local rank's return value (None for a module). A failed worker is a UserError
    naming `what`, the rank and its exit code."""
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import elastic_launch

    config = launch_config(options, run_name, log_dir)
    if isinstance(entry, str):
        target, argv = sys.executable, ("-m", entry, *args)
    else:
        target, argv = entry, args
    try:
        with _worker_threads():
            return elastic_launch(config, target)(*argv)
    except ChildFailedError as err:
        rank, failure = err.get_first_failure()
        raise UserError(
            f"{what} failed: rank {rank} exited with code {failure.exitcode} "
            f"(after {options.max_restarts} restart(s) allowed); "
            + _output_tail(log_dir, failure.local_rank)
        ) from None


def launch(run_root: Path, options: LaunchOptions, *, resume: bool = False) -> None:
    """Run `python -m deepfleet train RUN` on every rank under the elastic agent; returns
    when all workers finished, raises UserError naming the failed rank otherwise."""
    args = ["train", str(run_root), *(["--resume"] if resume else [])]
    start_workers(options, "deepfleet", *args, run_name=run_id(run_root), what="training")


def must_launch(options: LaunchOptions) -> bool:
    """True when this process should start workers rather than train itself."""
    return options.world_size > 1 and not in_worker()
