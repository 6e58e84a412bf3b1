"""The run context: what one process of a job knows, resolved once and passed down.

Every stage of a run folder starts by resolving it: the job (job.toml, every default filled
in), the rank environment (every launcher's variables), the device that follows the rank's
local rank, the verified manifest, the data key loaded and checked against it, and the task
bound to the data set's targets. The stream, the Trainer, evaluation, export and predict take
what they need from it; nothing below re-reads the job, the key file or the manifest. The
topology needs the model, so stage_train adds it once the model is built (`with_topology`).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from functools import cached_property

import torch

from deepfleet.config import JobConfig
from deepfleet.data import DataKey, Manifest, dataset_key, open_prepared
from deepfleet.devices import choose_device
from deepfleet.errors import UserError
from deepfleet.parallel import DistEnv, Topology, build_topology, detect_env
from deepfleet.runs import RunPaths
from deepfleet.tasks import TASKS, Task, build_task


@dataclass(frozen=True)
class RunContext:
    paths: RunPaths
    job: JobConfig
    env: DistEnv
    device: torch.device
    manifest: Manifest
    task: Task
    topology: Topology | None = None  # set by with_topology once the model is built

    @cached_property
    def data_key(self) -> DataKey | None:
        """The data key, loaded and checked against the manifest on first use (stages that
        read no shard never need it); None when the shards are not encrypted."""
        return dataset_key(self.manifest, self.job.data.key)

    def with_topology(self, model: torch.nn.Module) -> RunContext:
        """The context with the job's topology, checked once against the world size."""
        topology = build_topology(self.job.train, self.env.world_size, model, self.device)
        return replace(self, topology=topology)


def run_context(paths: RunPaths, env: DistEnv | None = None) -> RunContext:
    """Resolve a run folder's context for this process (rank variables from the launcher
    unless `env` is given). Reading the manifest checks its digest; no shard is hashed here:
    readers check each shard as they read it."""
    job = paths.load_job()
    env = env or detect_env()
    manifest = open_prepared(paths.data_dir(), job.data)
    return RunContext(
        paths=paths,
        job=job,
        env=env,
        device=choose_device(job.run.device, env.local_rank),
        manifest=manifest,
        task=task_for(job, manifest),
    )


def task_for(job: JobConfig, manifest: Manifest) -> Task:
    """The job's task bound to the data set's targets; one line naming both when the data
    set was prepared for another task or its targets do not fit the task."""
    task = build_task(job.task.name, manifest.targets, job.task.path)
    if task.name in TASKS and manifest.task != task.name:
        raise UserError(
            f"task.name is {task.name!r} but the data set {manifest.root} was prepared for "
            f"{manifest.task!r} ({manifest.targets.describe()}); prepare it again with this "
            "task or set task.name to match"
        )
    task.output_size()  # checks the targets' form against the task
    return task
