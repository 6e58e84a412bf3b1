"""Multilabel and multi-output regression from a CSV table, through every stage of a run:
targets from several columns, task metrics, the bundle and the prediction columns."""

from __future__ import annotations

import numpy as np
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest

from conftest import tiny_job_dict
from deepfleet.config import job_from_dict
from deepfleet.data import read_manifest
from deepfleet.jobs import run_job

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def _table(path, targets: dict[str, np.ndarray], x: np.ndarray) -> None:
    import pyarrow as pa

    columns = {f"f{i}": x[:, i] for i in range(x.shape[1])} | targets
    pacsv.write_csv(pa.table(columns), path)


def _predictions(paths):
    files = sorted(paths.predictions.glob("*.parquet"))
    return pq.read_table(files[0]).to_pandas()


def test_multilabel_from_several_label_columns(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(400, 6)).astype(np.float32)
    scores = x @ rng.normal(size=(6, 3))
    _table(tmp_path / "t.csv", {n: (scores[:, i] > 0).astype(int) for i, n in enumerate("abc")}, x)
    job = tiny_job_dict(
        tmp_path,
        task={"name": "multilabel"},
        data={"source": str(tmp_path / "t.csv"), "label_column": "a,b,c"},
    )
    summary = run_job(job_from_dict(job))
    manifest = read_manifest(summary.paths.data_dir())
    assert manifest.task == "multilabel" and manifest.targets.names == ["a", "b", "c"]
    assert summary.metrics["f1_macro"] > 0.7
    table = _predictions(summary.paths)
    assert {"prob_a", "prob_b", "prob_c", "label_a", "label_b", "label_c"} <= set(table.columns)
    assert set(np.unique(table["label_a"])) <= {0, 1}


def test_regression_with_two_outputs_answers_in_the_targets_units(tmp_path):
    rng = np.random.default_rng(1)
    x = rng.normal(size=(400, 6)).astype(np.float32)
    y = x @ rng.normal(size=(6, 2)) * [10.0, 0.1] + [500.0, -3.0]
    _table(tmp_path / "r.csv", {"y1": y[:, 0], "y2": y[:, 1]}, x)
    job = tiny_job_dict(
        tmp_path,
        task={"name": "regression"},
        data={"source": str(tmp_path / "r.csv"), "label_column": "y1,y2"},
    )
    job["train"]["phases"] = [{"name": "s", "epochs": 30, "lr": 0.01}]
    summary = run_job(job_from_dict(job))
    assert summary.metrics["r2"] > 0.8
    table = _predictions(summary.paths)
    assert {"value_y1", "value_y2"} <= set(table.columns)
    # The bundle de-standardises: predictions sit around the targets' own means.
    assert abs(table["value_y1"].mean() - 500.0) < 20
    assert abs(table["value_y2"].mean() + 3.0) < 1
