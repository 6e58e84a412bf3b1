"""The runs table: one row per run folder under a folder, read from the files each stage wrote."""

from __future__ import annotations

import json
import tomllib
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from deepfleet.errors import UserError
from deepfleet.runs import RunPaths

STATE = Path("checkpoints") / "state.json"
REPORT_METRICS = Path("report") / "metrics.json"
DEFAULT_TASK = "classification"


@dataclass(frozen=True)
class RunRow:
    """What one run folder holds: its job's task, how training went and where it stands."""

    name: str
    path: Path
    task: str
    status: str  # "failed", "not trained", "training", "trained" or "evaluated"
    failure: str | None = None  # "train: ValueError: ..." when status is "failed"
    strategy: str | None = None
    world_size: int | None = None
    epochs: int | None = None
    monitor: str | None = None
    best_value: float | None = None
    best_epoch: int | None = None
    seconds: float | None = None
    stopped_early: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "path": str(self.path)}


def read_json_or_none(path: Path) -> Any:
    """A JSON file's contents, or None when it is missing or unreadable."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def is_run_folder(path: Path) -> bool:
    return path.is_dir() and (path / "job.toml").is_file()


def _task_name(paths: RunPaths) -> str:
    try:
        job = tomllib.loads(paths.job_file.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return "?"
    task = job.get("task")
    name = task.get("name") if isinstance(task, dict) else None
    return name if isinstance(name, str) and name else DEFAULT_TASK


def _has_epochs(paths: RunPaths) -> bool:
    """Whether metrics.jsonl holds at least one epoch record (training has started)."""
    try:
        with paths.metrics.open(encoding="utf-8") as handle:
            return any(_is_epoch(line) for line in handle if '"epoch"' in line)
    except OSError:
        return False


def _is_epoch(line: str) -> bool:
    try:
        record = json.loads(line)
    except ValueError:
        return False
    return isinstance(record, dict) and record.get("kind") == "epoch"


# Keys of an epoch record that place it rather than measure it.
EPOCH_PLACE = frozenset({"kind", "time", "epoch", "epochs", "phase"})


def is_number(value: Any) -> bool:
    """A metric value: an int or float, not a bool (JSON's true is not a figure)."""
    return isinstance(value, int | float) and not isinstance(value, bool)


def read_run(folder: str | Path) -> RunRow:
    """The row for one run folder."""
    paths = RunPaths(Path(folder).resolve())
    state = read_json_or_none(paths.root / STATE)
    state = state if isinstance(state, dict) else None
    failure = paths.failure()
    if failure is not None:
        status = "failed"
    elif state is not None:
        status = "evaluated" if (paths.root / REPORT_METRICS).is_file() else "trained"
    else:
        status = "training" if _has_epochs(paths) else "not trained"
    fields: dict[str, Any] = {}
    if state is not None:
        for key in ("strategy", "monitor"):
            fields[key] = state.get(key) if isinstance(state.get(key), str) else None
        for key in ("world_size", "epochs", "best_epoch"):
            fields[key] = state.get(key) if is_number(state.get(key)) else None
        for key in ("best_value", "seconds"):
            fields[key] = float(state[key]) if is_number(state.get(key)) else None
        fields["stopped_early"] = bool(state.get("stopped_early"))
    return RunRow(
        name=paths.root.name,
        path=paths.root,
        task=_task_name(paths),
        status=status,
        failure=failure,
        **fields,
    )


def list_runs(folder: str | Path = "runs") -> list[RunRow]:
    """One row per run folder (a folder with a job.toml) directly under `folder`, by name."""
    root = Path(folder)
    if not root.is_dir():
        raise UserError(f"{folder}: runs folder not found")
    found = [child for child in root.iterdir() if is_run_folder(child)]
    return [read_run(child) for child in sorted(found, key=lambda path: path.name)]
