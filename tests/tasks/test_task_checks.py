"""A job's task is checked against its data set's targets and its model's output before any
training: one line naming both, exit 2."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import run_deepfleet, tiny_job_dict
from deepfleet.config import dump_job, job_from_dict
from deepfleet.errors import UserError
from deepfleet.jobs import stage_prepare, stage_train
from deepfleet.runs import create_run


def _prepared(tmp_path, **sections):
    job = job_from_dict(tiny_job_dict(tmp_path, **sections))
    paths = create_run(job)
    stage_prepare(paths, job)
    return paths


def test_a_task_the_data_set_was_not_prepared_for_is_refused(tmp_path):
    paths = _prepared(tmp_path)
    job = paths.load_job()
    job.task.name = "regression"
    paths.job_file.write_text(dump_job(job), encoding="utf-8")  # what train reads
    with pytest.raises(UserError, match="task.name is 'regression'.*prepared for 'classification'"):
        stage_train(paths)


def test_a_model_whose_output_does_not_fit_the_task_is_refused(tmp_path):
    data = tmp_path / "ml.npz"
    rng = np.random.default_rng(0)
    np.savez(data, x=rng.normal(size=(120, 6)).astype(np.float32), y=rng.integers(0, 2, (120, 4)))
    (tmp_path / "three.py").write_text(
        "from torch import nn\n"
        "def make(input_shape, num_classes):\n"
        "    return nn.Sequential(nn.Flatten(), nn.Linear(6, 3))\n",
        encoding="utf-8",
    )
    paths = _prepared(
        tmp_path,
        task={"name": "multilabel"},
        data={"source": str(data)},
        model={"name": "three:make", "path": str(tmp_path), "params": {}},
    )
    with pytest.raises(UserError, match=r"needs model outputs \[batch, 4\].*gives \[2, 3\]"):
        stage_train(paths)


def test_gpt_on_images_is_a_user_error_with_exit_2(tmp_path):
    job = tmp_path / "job.toml"
    job.write_text(
        f'[run]\nruns_dir = "{tmp_path / "runs"}"\n[model]\nname = "gpt"\n'
        "params = { dim = 16, layers = 1, heads = 2 }\n",
        encoding="utf-8",
    )
    done = run_deepfleet("run", str(job))
    assert done.returncode == 2, done.stderr[-2000:]
    assert "model gpt" in done.stderr and "Traceback" not in done.stderr
