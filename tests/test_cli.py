"""Each command of the CLI, its exit codes, and one-line errors for bad input."""

import json
import shutil

import pytest
import tomli_w

from conftest import run_deepfleet, tiny_job_dict
from deepfleet.cli import run_cli

COMMANDS = ["run", "doctor", "prepare", "train", "evaluate", "export", "predict", "keys", "runs"]


@pytest.fixture
def job_file(tmp_path):
    path = tmp_path / "job.toml"
    path.write_bytes(tomli_w.dumps(tiny_job_dict(tmp_path)).encode())
    return path


def only_line(text: str) -> str:
    lines = [x for x in text.strip().splitlines() if x.strip()]
    assert len(lines) == 1, text
    return lines[0]


@pytest.mark.parametrize("command", [None, *COMMANDS])
def test_help_everywhere(command, capsys):
    assert run_cli([command, "--help"] if command else ["--help"]) == 0
    assert "Usage" in capsys.readouterr().out


def test_doctor(capsys):
    assert run_cli(["doctor"]) == 0
    out = capsys.readouterr().out
    for word in ("torch", "cpu_cores", "gloo_available", "job_backend", "cuda devices"):
        assert word in out
    for word in ("xpu_available", "mps_available", "xccl_available"):
        assert word in out


def test_prepare_train_evaluate_export_predict_each_alone(tmp_path, job_file, capsys):
    data = tmp_path / "data"
    assert run_cli(["prepare", "digits", "--out", str(data), "--shards", "3"]) == 0
    manifest = json.loads((data / "manifest.json").read_text())
    assert len(manifest["splits"]["train"]["shards"]) == 3

    assert run_cli(["train", str(job_file), "--set", "train.phases.0.epochs=1"]) == 0
    (run,) = (tmp_path / "runs").iterdir()
    assert (run / "checkpoints" / "best.safetensors").is_file()
    assert run_cli(["evaluate", str(run)]) == 0
    assert "accuracy" in capsys.readouterr().out
    assert (run / "report" / "report.md").is_file()
    assert run_cli(["export", str(run)]) == 0
    assert (run / "bundle" / "model.json").is_file()
    out = tmp_path / "pred"
    assert (
        run_cli(["predict", str(run / "bundle"), str(data), "--out", str(out), "--split", "test"])
        == 0
    )
    assert json.loads((out / "manifest.json").read_text())["rows"] == 360


def test_missing_job_file(tmp_path, capsys):
    assert run_cli(["run", str(tmp_path / "nope.toml")]) == 2
    assert "job file not found" in only_line(capsys.readouterr().err)


def test_malformed_toml(tmp_path, capsys):
    bad = tmp_path / "bad.toml"
    bad.write_text("[train\n")
    assert run_cli(["run", str(bad)]) == 2
    assert "malformed TOML" in only_line(capsys.readouterr().err)


def test_unknown_model_name(job_file, capsys):
    assert run_cli(["run", str(job_file), "--set", "model.name=transformerx"]) == 2
    assert "model.name: unknown model 'transformerx'" in only_line(capsys.readouterr().err)


def test_bad_value_names_the_key(job_file, capsys):
    assert run_cli(["run", str(job_file), "--set", "train.batch_size=-3"]) == 2
    assert only_line(capsys.readouterr().err) == "error: train.batch_size: must be > 0, got -3"


def test_bundle_folder_missing_a_file(trained_run, tmp_path, capsys):
    bundle = tmp_path / "bundle"
    shutil.copytree(trained_run.bundle, bundle)
    (bundle / "weights.safetensors").unlink()
    assert run_cli(["predict", str(bundle), str(trained_run.data_dir())]) == 2
    assert "bundle is missing weights.safetensors" in only_line(capsys.readouterr().err)


def test_data_path_that_does_not_exist(trained_run, tmp_path, capsys):
    assert run_cli(["predict", str(trained_run.bundle), str(tmp_path / "nothing")]) == 2
    assert "data path does not exist" in only_line(capsys.readouterr().err)


def test_not_a_run_folder(tmp_path, capsys):
    assert run_cli(["evaluate", str(tmp_path)]) == 2
    assert "not a run folder" in only_line(capsys.readouterr().err)


def test_unknown_source(tmp_path, capsys):
    assert run_cli(["prepare", "imagenet-xl", "--out", str(tmp_path / "d")]) == 2
    assert "neither a built-in source" in capsys.readouterr().err


def test_usage_error_is_exit_2(capsys):
    assert run_cli(["evaluate"]) == 2


@pytest.mark.e2e
def test_run_end_to_end_in_a_subprocess(tmp_path, job_file):
    done = run_deepfleet("run", str(job_file), "--set", "run.name=e2e", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "test accuracy" in done.stdout
    assert "Traceback" not in done.stderr
    (run,) = (tmp_path / "runs").glob("e2e-*")
    for part in (
        "job.toml",
        "metrics.jsonl",
        "report/metrics.json",
        "bundle/model.json",
        "predictions/manifest.json",
    ):
        assert (run / part).is_file(), part


@pytest.mark.e2e
def test_user_error_in_a_subprocess_has_no_traceback(tmp_path):
    done = run_deepfleet("run", str(tmp_path / "missing.toml"))
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    assert only_line(done.stderr).startswith("error: ")


def test_an_old_job_file_key_is_one_warning_line(tmp_path):
    """[[train.stages]] still loads; the command says once, in one line, to write phases."""
    job = tiny_job_dict(tmp_path)
    job["train"]["stages"] = job["train"].pop("phases")
    path = tmp_path / "old.toml"
    path.write_bytes(tomli_w.dumps(job).encode())
    done = run_deepfleet("train", str(path), "--prepare-only")
    assert done.returncode == 0, done.stderr
    notice = "warning: train.stages is deprecated: use train.phases (same entries)"
    assert only_line(done.stderr) == notice
    (run,) = (tmp_path / "runs").iterdir()
    assert "[[train.phases]]" in (run / "job.toml").read_text()


def test_an_old_key_in_set_is_one_warning_line(tmp_path, job_file, capsys):
    args = ["train", str(job_file), "--prepare-only", "--set", "train.stages.1.epochs=2"]
    assert run_cli(args) == 0
    notice = "warning: train.stages is deprecated: use train.phases (same entries)"
    assert only_line(capsys.readouterr().err) == notice
