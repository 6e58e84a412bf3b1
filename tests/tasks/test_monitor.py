"""train.monitor picks the best checkpoint by any validation metric; early stopping; a
user's own task through a whole run."""

from __future__ import annotations

import textwrap

import pytest
import torch
from task_cases import task_data, task_model

from conftest import tiny_job_dict
from deepfleet.config import TrainSection, job_from_dict
from deepfleet.errors import UserError
from deepfleet.jobs import run_job
from deepfleet.train import Trainer


def _config(**train) -> TrainSection:
    phase = {"name": "s", "epochs": 6, "lr": 0.05, "optimizer": "sgd"}
    return TrainSection.model_validate(
        {"batch_size": 32, "log_every": 1000, "phases": [phase], **train}
    )


def test_the_monitored_metric_picks_the_best_epoch(tmp_path):
    task, data = task_data("regression")
    result = Trainer(
        _config(monitor="val_r2"),
        task_model(task),
        torch.device("cpu"),
        task=task,
        checkpoint_dir=tmp_path,
    ).fit(data, data)
    values = [r["val_r2"] for r in result.history]
    assert result.monitor == "val_r2" and result.best_value == max(values)
    assert result.best_epoch == values.index(max(values)) + 1
    assert (tmp_path / "best.safetensors").is_file()


def test_min_mode_and_early_stopping_after_patience():
    task, data = task_data("classification")
    # A learning rate of zero: nothing improves after the first validation.
    config = _config(monitor="val_loss", early_stopping={"patience": 2})
    config.phases[0].lr = 1e-12
    result = Trainer(config, task_model(task), torch.device("cpu"), task=task).fit(data, data)
    assert result.stopped_early and result.epochs == 3 and len(result.history) == 3
    assert result.best_epoch == 1 and result.monitor == "val_loss"


def test_an_unknown_monitor_names_the_task_metrics():
    task, data = task_data("multilabel")
    trainer = Trainer(_config(monitor="val_r2"), task_model(task), torch.device("cpu"), task=task)
    with pytest.raises(UserError, match="val_r2.*multilabel.*val_f1_macro"):
        trainer.fit(data, data)


def test_a_users_task_runs_every_stage(tmp_path):
    (tmp_path / "mytask.py").write_text(
        textwrap.dedent(
            '''
            import torch
            from deepfleet.tasks import ClassificationTask

            class Smoothed(ClassificationTask):
                """Classification with label smoothing: the user's own loss."""
                name = "smoothed"

                def loss(self, output, target):
                    return torch.nn.functional.cross_entropy(
                        output.float(), target, reduction="sum", label_smoothing=0.1
                    )

            def make(targets):
                return Smoothed(targets)
            '''
        ),
        encoding="utf-8",
    )
    job = job_from_dict(
        tiny_job_dict(tmp_path, task={"name": "mytask:make", "path": str(tmp_path)})
    )
    summary = run_job(job)
    assert summary.metrics["accuracy"] > 0.8
    history = summary.fit.history
    assert history[-1]["train_loss"] > 0.1  # label smoothing keeps the loss off zero
