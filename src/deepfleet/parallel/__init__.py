"""Parallel training on torch.distributed: who runs where (environment, topology), how the
model is spread over the ranks (strategies), and launching through torch.distributed.run.
Model code never mentions ranks; everything about them is here. (The machine's self-test
drives the trainer, so it lives above this package, in deepfleet.selftest.)"""

from deepfleet.parallel._blocks import checkpoint_blocks, repeated_blocks, wrap_blocks
from deepfleet.parallel._build import make_strategy
from deepfleet.parallel._clip import clip_grad_norm
from deepfleet.parallel._env import DistEnv, detect_env, in_worker, process_group
from deepfleet.parallel._launch import (
    LaunchOptions,
    launch,
    launch_config,
    must_launch,
    preflight,
    run_id,
    start_workers,
)
from deepfleet.parallel._mesh import MeshStrategy
from deepfleet.parallel._pipeline import PipelineStrategy, StagePart, split_children
from deepfleet.parallel._strategy import (
    DDPStrategy,
    FSDPStrategy,
    SingleStrategy,
    blocks_of,
    fp16_scaler,
)
from deepfleet.parallel._topology import MESH_DIMS, Topology, build_topology, choose_strategy

__all__ = [
    "DDPStrategy",
    "DistEnv",
    "FSDPStrategy",
    "LaunchOptions",
    "MESH_DIMS",
    "MeshStrategy",
    "PipelineStrategy",
    "SingleStrategy",
    "StagePart",
    "Topology",
    "blocks_of",
    "build_topology",
    "checkpoint_blocks",
    "choose_strategy",
    "clip_grad_norm",
    "detect_env",
    "fp16_scaler",
    "in_worker",
    "launch",
    "launch_config",
    "make_strategy",
    "must_launch",
    "preflight",
    "process_group",
    "repeated_blocks",
    "run_id",
    "split_children",
    "start_workers",
    "wrap_blocks",
]
