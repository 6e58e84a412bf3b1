"""[track] loggers: TensorBoard event files and CSV tables hold what metrics.jsonl holds."""

from __future__ import annotations

import csv

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from conftest import tiny_job_dict
from deepfleet.config import job_from_dict
from deepfleet.errors import UserError
from deepfleet.jobs import stage_evaluate, stage_prepare, stage_train
from deepfleet.runs import create_run
from deepfleet.track._loggers import (
    EPOCHS_CSV,
    HPARAMS_RUN,
    STEPS_CSV,
    TENSORBOARD_DIR,
    hparams,
)
from deepfleet.train import MetricsLog, read_metrics

NOT_SCALARS = {"kind", "time", "epoch", "epochs", "phase"}


def _train(tmp_path, loggers):
    job = job_from_dict(tiny_job_dict(tmp_path, track={"loggers": loggers}))
    paths = create_run(job)
    stage_prepare(paths, job)
    result = stage_train(paths)
    return paths, result, read_metrics(paths.metrics)


def _numbers(record):
    return {
        k: v
        for k, v in record.items()
        if k not in NOT_SCALARS and isinstance(v, int | float) and not isinstance(v, bool)
    }


def _same(text: str, value) -> bool:
    if value is None:
        return text == ""
    if isinstance(value, str):
        return text == value
    return float(text) == float(value)  # str(float) round-trips exactly


def test_tensorboard_and_csv_hold_the_metrics_records(tmp_path):
    paths, _, records = _train(tmp_path, ["tensorboard", "csv"])
    epochs = [r for r in records if r["kind"] == "epoch"]
    steps = [r for r in records if r["kind"] == "step"]
    assert len(epochs) == 3 and steps

    acc = EventAccumulator(str(paths.root / TENSORBOARD_DIR), size_guidance={"scalars": 0})
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    for record in epochs:
        numbers = _numbers(record)
        assert {"train_loss", "val_loss", "lr", "samples_per_s"} <= set(numbers)
        for key, value in numbers.items():
            assert f"epoch/{key}" in tags
            at = {e.step: e.value for e in acc.Scalars(f"epoch/{key}")}
            assert at[record["epoch"]] == pytest.approx(value, rel=1e-6, abs=1e-6), key
    losses = {e.step: e.value for e in acc.Scalars("train/loss")}
    lrs = {e.step: e.value for e in acc.Scalars("train/lr")}
    assert sorted(losses) == [r["step"] for r in steps]
    for record in steps:
        assert losses[record["step"]] == pytest.approx(record["loss"], rel=1e-6)
        assert lrs[record["step"]] == pytest.approx(record["lr"], rel=1e-6)
    assert {"job/text_summary", "setup/text_summary"} <= set(acc.Tags()["tensors"])

    with open(paths.root / EPOCHS_CSV, newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == len(epochs)
    for row, record in zip(rows, epochs, strict=True):
        assert set(row) == set(record) - {"kind"}
        for key, text in row.items():
            assert _same(text, record[key]), key
    with open(paths.root / STEPS_CSV, newline="") as handle:
        step_rows = list(csv.DictReader(handle))
    assert [int(r["step"]) for r in step_rows] == [r["step"] for r in steps]
    for row, record in zip(step_rows, steps, strict=True):
        assert float(row["loss"]) == record["loss"] and float(row["lr"]) == record["lr"]
        assert row["phase"] == record["phase"]


def test_tensorboard_logs_train_and_model_keys_as_hparams(tmp_path):
    from tensorboard.plugins.hparams import metadata

    paths, _, records = _train(tmp_path, ["tensorboard"])
    last = [r for r in records if r["kind"] == "epoch"][-1]
    acc = EventAccumulator(str(paths.root / TENSORBOARD_DIR / HPARAMS_RUN))
    acc.Reload()
    content = acc.PluginTagToContent(metadata.PLUGIN_NAME)
    start = metadata.parse_session_start_info_plugin_data(content[metadata.SESSION_START_INFO_TAG])
    logged = {
        key: value.number_value if value.HasField("number_value") else value.string_value
        for key, value in start.hparams.items()
    }
    assert logged["train.batch_size"] == 64
    assert logged["train.phases.0.epochs"] == 2
    assert isinstance(logged["train.phases.0.name"], str)
    assert all(key.split(".")[0] in ("train", "model") for key in logged)
    assert any(key.startswith("model.") for key in logged)
    for key, value in _numbers(last).items():
        (event,) = acc.Scalars(f"epoch/{key}")
        assert event.step == last["epoch"]
        assert event.value == pytest.approx(value, rel=1e-6, abs=1e-6), key


def test_tensorboard_holds_the_report_figures_as_images(tmp_path):
    from PIL import Image

    paths, _, records = _train(tmp_path, ["tensorboard"])
    stage_evaluate(paths)
    pngs = sorted(paths.report.glob("*.png"))
    assert {"curves", "confusion"} <= {p.stem for p in pngs}
    acc = EventAccumulator(str(paths.root / TENSORBOARD_DIR), size_guidance={"images": 0})
    acc.Reload()
    assert set(acc.Tags()["images"]) == {f"report/{p.stem}" for p in pngs}
    last = [r for r in records if r["kind"] == "epoch"][-1]["epoch"]
    for png in pngs:
        (event,) = acc.Images(f"report/{png.stem}")
        with Image.open(png) as image:
            assert (event.width, event.height) == image.size
        assert event.step == last


def test_hparams_flattens_tables_and_lists():
    job = {
        "run": {"name": "x"},
        "model": {"name": "cnn", "params": {"channels": [32, 64], "dropout": 0.2}},
        "train": {"batch_size": 64, "amp": False, "phases": [{"name": "a", "lr": 0.01}]},
    }
    assert hparams(job) == {
        "model.name": "cnn",
        "model.params.channels": "[32, 64]",
        "model.params.dropout": 0.2,
        "train.batch_size": 64,
        "train.amp": False,
        "train.phases.0.name": "a",
        "train.phases.0.lr": 0.01,
    }


def test_a_failing_logger_is_reported_once_and_training_goes_on(tmp_path, monkeypatch, capsys):
    from torch.utils.tensorboard import SummaryWriter

    def broken(self, *args, **kwargs):
        raise OSError("No space left on device")

    monkeypatch.setattr(SummaryWriter, "add_scalar", broken)
    paths, result, records = _train(tmp_path, ["tensorboard", "csv"])
    assert [r["epoch"] for r in records if r["kind"] == "epoch"] == [1, 2, 3]
    assert len(result.history) == 3
    warnings = [line for line in capsys.readouterr().err.splitlines() if "tracking:" in line]
    assert warnings == [
        "tracking: tensorboard logger failed (OSError: No space left on device); "
        "records stay in metrics.jsonl"
    ]
    # the other logger is untouched
    with open(paths.root / EPOCHS_CSV, newline="") as handle:
        assert len(list(csv.DictReader(handle))) == 3


class _Recorder:
    name = "recorder"

    def __init__(self):
        self.records, self.closed = [], False

    def write(self, record):
        self.records.append(record)

    def close(self):
        self.closed = True


def test_metrics_log_hands_each_line_to_its_loggers(tmp_path):
    recorder = _Recorder()
    log = MetricsLog(tmp_path / "metrics.jsonl", [recorder])
    log.write({"kind": "step", "step": 1, "loss": 0.5, "lr": 0.1, "phase": "a"})
    log.close()
    assert recorder.records == read_metrics(tmp_path / "metrics.jsonl")
    assert recorder.closed
    # ranks other than 0 write nothing, to no logger
    other = _Recorder()
    MetricsLog(None, [other]).write({"kind": "step"})
    assert other.records == []


def test_track_defaults_to_no_logger_and_names_each_once(tmp_path):
    assert job_from_dict(tiny_job_dict(tmp_path)).track.loggers == []
    with pytest.raises(UserError, match="at most once"):
        job_from_dict(tiny_job_dict(tmp_path, track={"loggers": ["csv", "csv"]}))
    with pytest.raises(UserError, match="track.loggers"):
        job_from_dict(tiny_job_dict(tmp_path, track={"loggers": ["wandb"]}))
