"""Shared by the tests of pipelines cut at module names: the layouts of the named gpt by world
size, and the worker that trains them (its rank 0's weights are compared with one process)."""

from __future__ import annotations

import torch
from layout_checks import assert_same_weights
from pipe_user_model import named_gpt

from deepfleet.config import TrainSection
from deepfleet.parallel import DistEnv, LaunchOptions, detect_env, process_group, start_workers
from deepfleet.selftest import lm_config, lm_data
from deepfleet.tasks import CausalLMTask
from deepfleet.train import Trainer

GPIPE_AT_BLOCK_2 = {"schedule": "gpipe", "split_points": ["blocks.2"]}
# (name, [train.parallel] degrees with [train.pipeline] under "pipeline" and
# train.activation_checkpointing under "checkpointing"), by world size
CASES = {
    2: [
        ("gpipe at blocks.2", {"pp": 2, "dp_shard": 1, "pipeline": GPIPE_AT_BLOCK_2}),
        (
            "1f1b, even cut, checkpointing",
            {"pp": 2, "dp_shard": 1, "pipeline": {"schedule": "1f1b"}, "checkpointing": "full"},
        ),
        (
            "interleaved, 2 stages per rank",
            {
                "pp": 2,
                "dp_shard": 1,
                "pipeline": {
                    "schedule": "interleaved",
                    "interleave": 2,
                    "split_points": ["blocks.1", "blocks.2", "blocks.3"],
                },
            },
        ),
    ],
    4: [
        ("gpipe x dp 2", {"pp": 2, "dp_replicate": 2, "dp_shard": 1, "pipeline": GPIPE_AT_BLOCK_2}),
        (
            "1f1b x dp 2",
            {"pp": 2, "dp_replicate": 2, "dp_shard": 1, "pipeline": {"split_points": ["blocks.1"]}},
        ),
    ],
}


def train_named_gpt(config: TrainSection, env) -> dict[str, torch.Tensor]:
    trainer = Trainer(
        config, named_gpt(), torch.device("cpu"), seed=0, env=env, task=CausalLMTask()
    )
    trainer.fit(lm_data())
    return {k: v.detach().cpu().clone() for k, v in trainer.strategy.full_state_dict().items()}


def layouts_worker() -> dict[str, dict[str, torch.Tensor]]:
    """Each rank trains every case of its world size; rank 0's weights are compared."""
    env = detect_env()
    with process_group(env, torch.device("cpu")):
        found = {}
        for name, degrees in CASES[env.world_size]:
            layout = {k: v for k, v in degrees.items() if k != "checkpointing"}
            checkpointing = degrees.get("checkpointing", "none")
            config = lm_config(env.world_size, layout, checkpointing)
            found[name] = train_named_gpt(config, env)
        return found


def one_process() -> dict[str, torch.Tensor]:
    return train_named_gpt(lm_config(1, {}, "none"), DistEnv())


def run_layouts(world: int) -> dict[str, dict[str, torch.Tensor]]:
    """Rank 0's weights of every case of `world` ranks."""
    return start_workers(
        LaunchOptions(nproc=world), layouts_worker, run_name=f"names-{world}", what="train"
    )[0]


def assert_cases_match_one_process(world: int) -> None:
    """Every case of `world` ranks ends with one process's weights."""
    got = run_layouts(world)
    assert list(got) == [name for name, _ in CASES[world]]
    start = named_gpt().state_dict()
    reference = one_process()
    for weights in got.values():
        assert_same_weights(weights, reference, start)
