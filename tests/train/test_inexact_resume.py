"""A resume whose optimizer steps hold another number of samples cannot continue the epoch's
order exactly: it says so in one line and continues at the step holding the first unread
sample."""

from __future__ import annotations

import shutil

import torch

from deepfleet.config import TrainSection
from deepfleet.parallel import DistEnv
from deepfleet.selftest import selftest_data, selftest_model
from deepfleet.train import Trainer, read_metrics
from deepfleet.train._log import MetricsLog


def _config(batch: int) -> TrainSection:
    return TrainSection.model_validate(
        {
            "strategy": "single",
            "batch_size": batch,
            "phases": [{"epochs": 2, "lr": 0.01}],
            "checkpoint": {"every_steps": 5, "keep": 20},
            "log_every": 1000,
        }
    )


def _trainer(batch: int, folder, resume: bool, log=None) -> Trainer:
    return Trainer(
        _config(batch),
        selftest_model(),
        torch.device("cpu"),
        env=DistEnv(),
        checkpoint_dir=folder,
        resume=resume,
        log=log,
    )


def test_a_changed_global_batch_says_it_is_not_exact(tmp_path, capsys):
    first = tmp_path / "first"
    _trainer(16, first, resume=False).fit(selftest_data())  # 8 steps an epoch
    train_dir = first / "train"
    for later in [p for p in train_dir.glob("step-*") if p.name > "step-000000005"]:
        shutil.rmtree(later)
    (train_dir / "latest").write_text("step-000000005\n")
    capsys.readouterr()

    log = MetricsLog(tmp_path / "metrics.jsonl")
    resumed = _trainer(32, first, resume=True, log=log)
    result = resumed.fit(selftest_data())
    log.close()
    err = capsys.readouterr().err.strip().splitlines()
    line = (
        "resume from step-000000005: the global batch is 32, it was 16, so the resume is not "
        "exact: epoch 1 continues at step 2 (sample 64 of its order), reading 16 sample(s) of "
        "it again"
    )
    assert line in err
    records = read_metrics(tmp_path / "metrics.jsonl")
    assert [r["message"] for r in records if r["kind"] == "resume_inexact"] == [line]
    # 80 samples read at 16 a step = step 2 of 4 at 32: 2 + 4 steps left of 2 epochs
    assert resumed.step == 5 + 2 + 4 and result.epochs == 2
