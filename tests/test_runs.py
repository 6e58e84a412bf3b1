"""A failed run folder says so: later stages refuse it instead of using what it holds."""

from __future__ import annotations

from pathlib import Path

from conftest import tiny_job_dict
from deepfleet.cli import run_cli
from deepfleet.config import dump_job, job_from_dict


def _job_file(tmp_path: Path, **sections) -> Path:
    path = tmp_path / "job.toml"
    path.write_text(dump_job(job_from_dict(tiny_job_dict(tmp_path, **sections))))
    return path


def test_a_model_that_refuses_the_data_is_a_user_error_and_marks_the_run(tmp_path, capsys):
    job = _job_file(tmp_path, model={"name": "gpt", "params": {}})
    assert run_cli(["train", str(job)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(
        "error: model gpt: cannot be built for samples of shape [1, 8, 8] and 10 classes"
    ), err
    (run,) = (tmp_path / "runs").iterdir()
    assert (run / "status.json").is_file()
    assert run_cli(["evaluate", str(run)]) == 2
    err = capsys.readouterr().err
    assert "the run failed (train: UserError: model gpt: cannot be built" in err, err


def test_a_successful_resume_clears_the_mark(tmp_path, capsys):
    job = _job_file(tmp_path)
    assert run_cli(["train", str(job), "--set", "train.checkpoint.every_steps=5"]) == 0
    (run,) = (tmp_path / "runs").iterdir()
    (run / "status.json").write_text('{"status": "failed", "stage": "train", "error": "x"}')
    assert run_cli(["evaluate", str(run)]) == 2
    capsys.readouterr()
    assert run_cli(["train", str(run), "--resume"]) == 0
    assert not (run / "status.json").exists()
    assert run_cli(["evaluate", str(run)]) == 0
