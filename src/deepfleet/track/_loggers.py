"""Copies of the training records in other formats: TensorBoard event files, CSV tables and
an MLflow run (deepfleet.track._mlflow).

metrics.jsonl stays the record of a run. MetricsLog writes each record there first and then
hands the same record (with its "time") to every logger named in [track] loggers, so the
copies hold exactly the values the JSON lines hold.
"""

from __future__ import annotations

import contextlib
import csv
import importlib
import io
import json
import tomllib
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from deepfleet._atomic import write_text_atomic
from deepfleet.track._runs import EPOCH_PLACE, is_number

if TYPE_CHECKING:
    from deepfleet.train._log import RecordLogger

TENSORBOARD_DIR = "tensorboard"
EPOCHS_CSV = "metrics_epochs.csv"
STEPS_CSV = "metrics_steps.csv"
STEP_COLUMNS = ("time", "step", "phase", "loss", "lr")


HPARAMS_RUN = "hparams"
# Tables of the resolved job whose keys are logged as TensorBoard hyper-parameters.
_HPARAM_TABLES = ("train", "model")


def hparams(job: dict[str, Any]) -> dict[str, Any]:
    """[train] and [model] of a job as flat hyper-parameters ("train.batch_size",
    "train.phases.0.lr", "model.params.hidden"): numbers, booleans and strings as they are,
    lists of numbers or strings as JSON text."""
    flat: dict[str, Any] = {}

    def add(name: str, value: Any) -> None:
        if isinstance(value, dict):
            for key, item in value.items():
                add(f"{name}.{key}", item)
        elif isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
            for index, item in enumerate(value):
                add(f"{name}.{index}", item)
        elif isinstance(value, bool | int | float | str):
            flat[name] = value
        elif value is not None:
            flat[name] = json.dumps(value, default=str)

    for table in _HPARAM_TABLES:
        if isinstance(job.get(table), dict):
            add(table, job[table])
    return flat


class TensorBoardLogger:
    """Event files in <run>/tensorboard/: step records as train/loss and train/lr at the
    global step, every number of an epoch record as epoch/<key> at the epoch, the setup
    record and the resolved job as text. On close, the job's [train] and [model] keys as
    hyper-parameters with the last epoch's numbers as their metrics (add_hparams, in
    <run>/tensorboard/hparams/)."""

    name = "tensorboard"

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = run_dir
        self.folder = run_dir / TENSORBOARD_DIR
        self._writer = None
        self._last_epoch: dict[str, Any] | None = None

    def _open(self):
        if self._writer is None:
            from torch.utils.tensorboard import SummaryWriter

            self._writer = SummaryWriter(log_dir=str(self.folder))
        return self._writer

    def write(self, record: dict[str, Any]) -> None:
        writer = self._open()
        kind, when = record.get("kind"), record.get("time")
        if kind == "step":
            step = int(record["step"])
            writer.add_scalar("train/loss", record["loss"], step, walltime=when)
            writer.add_scalar("train/lr", record["lr"], step, walltime=when)
        elif kind == "epoch":
            epoch = int(record["epoch"])
            for key, value in record.items():
                if key not in EPOCH_PLACE and is_number(value):
                    writer.add_scalar(f"epoch/{key}", value, epoch, walltime=when)
            writer.flush()
            self._last_epoch = record
        elif kind == "setup":
            setup = json.dumps(record, indent=2, sort_keys=True)
            writer.add_text("setup", f"```\n{setup}\n```", walltime=when)
            job_file = self.run_dir / "job.toml"
            if job_file.is_file():
                writer.add_text("job", f"```toml\n{job_file.read_text()}\n```", walltime=when)
            writer.flush()

    def _log_hparams(self) -> None:
        job_file = self.run_dir / "job.toml"
        if self._writer is None or self._last_epoch is None or not job_file.is_file():
            return
        params = hparams(tomllib.loads(job_file.read_text(encoding="utf-8")))
        last = self._last_epoch
        metrics = {
            f"epoch/{key}": float(value)
            for key, value in last.items()
            if key not in EPOCH_PLACE and is_number(value)
        }
        if params and metrics:
            self._writer.add_hparams(
                params, metrics, run_name=HPARAMS_RUN, global_step=int(last["epoch"])
            )

    def close(self) -> None:
        if self._writer is not None:
            try:
                self._log_hparams()
            finally:
                self._writer.close()
                self._writer = None
                self._last_epoch = None


REPORT_IMAGES = "report"


def log_report_images(run_dir: Path, report: Path) -> list[str]:
    """The report's figures (the curves, the confusion matrix or the task's own plot: every
    PNG in `report`) as TensorBoard images in <run>/tensorboard/, tagged "report/<name>", at
    the last epoch. Evaluation runs after training, so this opens the event folder again.
    Returns the tags written."""
    import numpy as np
    from PIL import Image
    from torch.utils.tensorboard import SummaryWriter

    epochs = _earlier_epochs(run_dir / "metrics.jsonl")
    step = int(epochs[-1]["epoch"]) if epochs else 0
    tags = []
    with contextlib.closing(SummaryWriter(log_dir=str(run_dir / TENSORBOARD_DIR))) as writer:
        for png in sorted(report.glob("*.png")):
            with Image.open(png) as image:
                pixels = np.asarray(image.convert("RGB"))
            tag = f"{REPORT_IMAGES}/{png.stem}"
            writer.add_image(tag, pixels, step, dataformats="HWC")
            tags.append(tag)
    return tags


def _cell(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, dict | list):
        return json.dumps(value)
    return value


def _earlier_epochs(metrics: Path) -> list[dict[str, Any]]:
    """Epoch records already in metrics.jsonl (a resumed run keeps its earlier rows)."""
    records = []
    try:
        lines = metrics.read_text(encoding="utf-8").splitlines() if metrics.is_file() else []
    except OSError:
        return []
    for line in lines:
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict) and record.get("kind") == "epoch":
            records.append(record)
    return records


class CsvLogger:
    """<run>/metrics_epochs.csv, one row per epoch record (the whole table rewritten
    atomically each epoch, so a column that appears later gets a header too), and
    <run>/metrics_steps.csv, one row appended per step record."""

    name = "csv"

    def __init__(self, run_dir: Path) -> None:
        self.epochs_path = run_dir / EPOCHS_CSV
        self.steps_path = run_dir / STEPS_CSV
        self._epochs = _earlier_epochs(run_dir / "metrics.jsonl")
        self._steps = None
        self._step_writer = None

    def write(self, record: dict[str, Any]) -> None:
        kind = record.get("kind")
        if kind == "epoch":
            self._epochs.append(record)
            write_text_atomic(self.epochs_path, epochs_csv(self._epochs))
        elif kind == "step":
            if self._step_writer is None:
                new = not self.steps_path.is_file() or self.steps_path.stat().st_size == 0
                self._steps = open(self.steps_path, "a", encoding="utf-8", newline="")  # noqa: SIM115
                self._step_writer = csv.DictWriter(
                    self._steps, fieldnames=STEP_COLUMNS, extrasaction="ignore"
                )
                if new:
                    self._step_writer.writeheader()
            self._step_writer.writerow({k: _cell(record.get(k)) for k in STEP_COLUMNS})
            self._steps.flush()

    def close(self) -> None:
        if self._steps is not None:
            self._steps.close()
            self._steps = None
            self._step_writer = None


def epochs_csv(records: Iterable[dict[str, Any]]) -> str:
    """Epoch records as CSV: columns in the order keys first appear, "kind" left out."""
    records = list(records)
    columns: dict[str, None] = {}
    for record in records:
        columns.update((key, None) for key in record if key != "kind")
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(columns), lineterminator="\n")
    writer.writeheader()
    for record in records:
        writer.writerow({key: _cell(record.get(key)) for key in columns})
    return out.getvalue()


def _mlflow_logger(run_dir: Path) -> RecordLogger:
    from deepfleet.track._mlflow import MlflowLogger

    return MlflowLogger(run_dir)


_LOGGERS = {"tensorboard": TensorBoardLogger, "csv": CsvLogger, "mlflow": _mlflow_logger}


# The library behind each logger: imported when the loggers are made, before training, so
# its import (about 1.5 s each, cold) is not spent inside the first timed training step.
_LIBRARIES = {"tensorboard": "torch.utils.tensorboard", "mlflow": "mlflow"}


def open_loggers(names: Iterable[str], run_dir: Path) -> list[RecordLogger]:
    """The loggers [track] names, for the run folder `run_dir`. No file or connection is
    opened yet: each opens on its first record, so a failure there is reported like any
    other (a missing library too: its import is only tried here)."""
    names = list(names)
    for name in names:
        # A missing library is left to the logger's own first write: reported once there.
        with contextlib.suppress(ImportError):
            importlib.import_module(_LIBRARIES.get(name, "csv"))
    return [_LOGGERS[name](run_dir) for name in names]
