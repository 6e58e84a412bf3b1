"""Targets that are not class labels are named as such before any split is drawn."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
from sklearn.datasets import load_diabetes

from deepfleet.cli import run_cli


def _one_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error: "), err
    return err


def test_diabetes_targets_are_named_a_regression_target(tmp_path, capsys):
    x, y = load_diabetes(return_X_y=True)
    assert np.all(y == np.round(y)) and y.dtype == np.float64  # whole-number floats
    table = pa.table({**{f"f{i}": x[:, i] for i in range(x.shape[1])}, "label": y})
    pacsv.write_csv(table, tmp_path / "diabetes.csv")
    np.savez(tmp_path / "diabetes.npz", x=x.astype(np.float32), y=y)
    for source in ("diabetes.csv", "diabetes.npz"):
        assert run_cli(["prepare", str(tmp_path / source), "--out", str(tmp_path / "out")]) == 2
        err = _one_line(capsys)
        assert "214 distinct values" in err and "regression target" in err, err
        assert "classification needs class labels" in err


def test_class_labels_stored_as_floats_still_work(tmp_path, capsys):
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 300).astype(np.float64)
    np.savez(tmp_path / "three.npz", x=rng.normal(size=(300, 4)).astype(np.float32), y=y)
    assert run_cli(["prepare", str(tmp_path / "three.npz"), "--out", str(tmp_path / "out")]) == 0


def test_a_class_with_one_sample_is_named(tmp_path, capsys):
    y = np.array([0] * 20 + [1] * 20 + [2])
    np.savez(tmp_path / "rare.npz", x=np.zeros((41, 4), np.float32), y=y)
    assert run_cli(["prepare", str(tmp_path / "rare.npz"), "--out", str(tmp_path / "out")]) == 2
    err = _one_line(capsys)
    assert "1 of 3 classes have a single sample (class 2)" in err, err
