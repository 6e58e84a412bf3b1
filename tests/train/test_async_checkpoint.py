"""train.checkpoint.async_save: checkpoints written in the background are committed like
synchronous ones (the same steps, the same counters) and resume to the same result. (On 4
ranks under fsdp: test_resume_world.py, whose uninterrupted run saves asynchronously.)"""

from __future__ import annotations

import json
import shutil

import torch

from deepfleet.config import TrainSection
from deepfleet.parallel import DistEnv
from deepfleet.selftest import selftest_data, selftest_model
from deepfleet.train import Trainer, committed, find_latest


def _fit(folder, async_save: bool, resume: bool = False) -> dict[str, torch.Tensor]:
    config = TrainSection.model_validate(
        {
            "strategy": "single",
            "batch_size": 16,
            "phases": [{"epochs": 2, "lr": 0.01, "schedule": "cosine"}],
            "checkpoint": {"every_steps": 3, "keep": 20, "async_save": async_save},
            "log_every": 1000,
        }
    )
    trainer = Trainer(
        config,
        selftest_model(),
        torch.device("cpu"),
        env=DistEnv(),
        checkpoint_dir=folder,
        resume=resume,
    )
    trainer.fit(selftest_data())
    return {k: v.detach().clone() for k, v in trainer.model.state_dict().items()}


def _counters(folder) -> list[dict]:
    """Each checkpoint's step, data position and scheduler (not the epochs' timings)."""
    found = []
    for path in committed(folder / "train"):
        state = json.loads((path / "trainer.json").read_text())
        found.append((state["step"], state["train_state"]["position"], state["scheduler"]))
    return found


def test_background_checkpoints_commit_and_resume_like_synchronous_ones(tmp_path):
    sync = _fit(tmp_path / "sync", async_save=False)
    background = _fit(tmp_path / "async", async_save=True)
    for key, value in sync.items():
        assert torch.equal(background[key], value)
    steps = [p.name for p in committed(tmp_path / "async" / "train")]
    assert steps == [p.name for p in committed(tmp_path / "sync" / "train")]
    assert steps[:3] == ["step-000000003", "step-000000006", "step-000000009"]
    assert _counters(tmp_path / "async") == _counters(tmp_path / "sync")
    assert find_latest(tmp_path / "async" / "train").name == steps[-1]
    assert not list((tmp_path / "async" / "train").glob(".*.tmp"))

    train_dir = tmp_path / "async" / "train"
    for later in [p for p in train_dir.glob("step-*") if p.name > "step-000000006"]:
        shutil.rmtree(later)
    (train_dir / "latest").write_text("step-000000006\n")
    resumed = _fit(tmp_path / "async", async_save=True, resume=True)
    for key, value in sync.items():
        assert torch.equal(resumed[key], value)
