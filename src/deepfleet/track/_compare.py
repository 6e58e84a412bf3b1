"""Compare runs: their final metrics side by side and their per-epoch curves on one figure."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from deepfleet._atomic import write_json_atomic
from deepfleet.errors import UserError
from deepfleet.runs import RunPaths, open_run
from deepfleet.track._runs import REPORT_METRICS, RunRow, is_number, read_json_or_none, read_run

CURVES = "curves.png"
COMPARE_JSON = "compare.json"
LOSS_CURVES = ("train_loss", "val_loss")
MAX_PANELS = 4


@dataclass
class RunResult:
    """One run's row in the comparison: its final (report) metrics and its epoch curves."""

    row: RunRow
    metrics: dict[str, float]  # the numeric entries of report/metrics.json
    split: str | None  # the split those metrics were measured on
    epochs: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.row.name,
            "path": str(self.row.path),
            "task": self.row.task,
            "status": self.row.status,
            "split": self.split,
            "monitor": self.row.monitor,
            "best_value": self.row.best_value,
            "best_epoch": self.row.best_epoch,
            "metrics": dict(self.metrics),
        }


@dataclass
class Comparison:
    runs: list[RunResult]
    columns: list[str]  # the union of the runs' metric names, in the order first seen
    curves: Path
    table: Path

    def to_dict(self) -> dict[str, Any]:
        return {"columns": self.columns, "runs": [run.to_dict() for run in self.runs]}


def _epoch_records(paths: RunPaths) -> list[dict[str, Any]]:
    """The epoch records of metrics.jsonl, the last one per epoch (a resumed run repeats some)."""
    by_epoch: dict[int, dict[str, Any]] = {}
    try:
        with paths.metrics.open(encoding="utf-8") as handle:
            for line in handle:
                if '"epoch"' not in line:
                    continue
                try:
                    record = json.loads(line)
                except ValueError:
                    continue
                if not isinstance(record, dict) or record.get("kind") != "epoch":
                    continue
                if is_number(record.get("epoch")):
                    by_epoch[int(record["epoch"])] = record
    except OSError:
        return []
    return [by_epoch[epoch] for epoch in sorted(by_epoch)]


def load_result(folder: str | Path) -> RunResult:
    """One run folder's results; a clear error when `folder` is not a run folder."""
    paths = open_run(folder)
    report = read_json_or_none(paths.root / REPORT_METRICS)
    report = report if isinstance(report, dict) else {}
    metrics = {key: value for key, value in report.items() if is_number(value)}
    split = report.get("split") if isinstance(report.get("split"), str) else None
    return RunResult(read_run(paths.root), metrics, split, _epoch_records(paths))


def _curve_keys(runs: list[RunResult]) -> list[str]:
    """train_loss and val_loss, then each run's monitored metric (when its epochs log it)."""
    keys = list(LOSS_CURVES)
    for run in runs:
        monitor = run.row.monitor
        if monitor and monitor not in keys and any(monitor in r for r in run.epochs):
            keys.append(monitor)
    return keys[:MAX_PANELS]


def plot_curves(runs: list[RunResult], path: Path) -> None:
    """One panel per metric, one line per run; written to a temporary name, then renamed."""
    import matplotlib

    matplotlib.use("Agg")  # no display: render straight to PNG
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    keys = _curve_keys(runs)
    fig, axes = plt.subplots(1, len(keys), figsize=(4.5 * len(keys), 3.6), squeeze=False)
    for ax, key in zip(axes[0], keys, strict=True):
        drawn = False
        for run in runs:
            points = [(r["epoch"], r[key]) for r in run.epochs if is_number(r.get(key))]
            if points:
                xs, ys = zip(*points, strict=True)
                ax.plot(xs, ys, marker="o", markersize=3, label=run.row.name)
                drawn = True
        ax.set_title(key)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        if drawn:
            ax.legend(fontsize="small")
        else:
            ax.text(0.5, 0.5, "not logged", ha="center", va="center", transform=ax.transAxes)
    fig.tight_layout()
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=110, bbox_inches="tight")
    plt.close(fig)
    tmp.replace(path)


def compare_runs(folders: list[str | Path], out: str | Path = "runs-compare") -> Comparison:
    """Read each run folder, write curves.png and compare.json into `out`, return the table."""
    if not folders:
        raise UserError("name at least one run folder to compare")
    runs = [load_result(folder) for folder in folders]
    out_dir = Path(out)
    if out_dir.exists() and not out_dir.is_dir():
        raise UserError(f"{out}: exists and is not a folder")
    out_dir.mkdir(parents=True, exist_ok=True)
    columns: list[str] = []
    for run in runs:
        columns.extend(name for name in run.metrics if name not in columns)
    result = Comparison(runs, columns, out_dir / CURVES, out_dir / COMPARE_JSON)
    plot_curves(runs, result.curves)
    write_json_atomic(result.table, result.to_dict())
    return result
