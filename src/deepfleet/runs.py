"""The run folder: one job's outputs, named and laid out in one place.

runs/<name>-<UTC time>/
  job.toml          the resolved job (every default filled in, paths absolute)
  shards/           the prepared data, or data.json pointing at a prepared data set
  checkpoints/      weights written during training
  metrics.jsonl     one JSON object per logged step and epoch
  report/           metrics.json, report.md, confusion.png, curves.png
  bundle/           the exported model
  predictions/      batch predictions as Parquet
  status.json       {"status": "failed", ...} while the last attempt at a stage failed
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from deepfleet._atomic import write_json_atomic, write_text_atomic
from deepfleet.config import JobConfig, dump_job, load_job
from deepfleet.errors import UserError
from deepfleet.storage import is_remote


@dataclass(frozen=True)
class RunPaths:
    """Every path inside one run folder."""

    root: Path

    @property
    def job_file(self) -> Path:
        return self.root / "job.toml"

    @property
    def shards(self) -> Path:
        return self.root / "shards"

    @property
    def data_ref(self) -> Path:
        return self.root / "data.json"

    @property
    def checkpoints(self) -> Path:
        return self.root / "checkpoints"

    @property
    def metrics(self) -> Path:
        return self.root / "metrics.jsonl"

    @property
    def report(self) -> Path:
        return self.root / "report"

    @property
    def bundle(self) -> Path:
        return self.root / "bundle"

    @property
    def predictions(self) -> Path:
        return self.root / "predictions"

    @property
    def status(self) -> Path:
        return self.root / "status.json"

    def mark_failed(self, stage: str, error: BaseException) -> None:
        """Record that `stage` failed, so no later stage takes this folder for a result."""
        lines = str(error).strip().splitlines()
        write_json_atomic(
            self.status,
            {
                "status": "failed",
                "stage": stage,
                "error": f"{type(error).__name__}: {lines[0] if lines else ''}",
            },
        )

    def mark_succeeded(self) -> None:
        self.status.unlink(missing_ok=True)

    def failure(self) -> str | None:
        """Why this run's last attempt failed ("train: ..."), or None when it did not."""
        if not self.status.is_file():
            return None
        try:
            record = json.loads(self.status.read_text(encoding="utf-8"))
            return f"{record['stage']}: {record['error']}"
        except (ValueError, KeyError, TypeError):
            return "unknown stage: status.json is unreadable"

    def data_dir(self) -> Path | str:
        """The prepared data this run uses: its own shards/, or the folder or URL (s3://...)
        data.json names."""
        if self.data_ref.is_file():
            where = json.loads(self.data_ref.read_text())["path"]
            return where if is_remote(where) else Path(where)
        return self.shards

    def link_data(self, prepared: Path | str) -> None:
        """Point this run at an already prepared data set (a folder, or a URL kept as it
        is) instead of copying it."""
        where = str(prepared) if is_remote(prepared) else str(Path(prepared).resolve())
        write_json_atomic(self.data_ref, {"path": where})

    def load_job(self) -> JobConfig:
        return load_job(self.job_file)


def _utc_stamp() -> str:
    return datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")


def create_run(job: JobConfig) -> RunPaths:
    """Make a new run folder for `job` and write the resolved job file into it."""
    parent = Path(job.run.runs_dir)
    base = f"{job.run.name}-{_utc_stamp()}"
    root = parent / base
    suffix = 1
    while root.exists():  # two runs started within the same second
        suffix += 1
        root = parent / f"{base}-{suffix}"
    root.mkdir(parents=True)
    write_text_atomic(root / "job.toml", dump_job(job))
    return RunPaths(root.resolve())


def open_run(folder: str | Path) -> RunPaths:
    """An existing run folder; a clear error when it is not one."""
    root = Path(folder)
    if not root.is_dir():
        raise UserError(f"{folder}: run folder not found")
    paths = RunPaths(root.resolve())
    if not paths.job_file.is_file():
        raise UserError(f"{folder}: not a run folder (no job.toml)")
    return paths
