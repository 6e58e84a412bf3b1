"""Batch prediction across processes: same answers as one process, keyed by id, resumable."""

from __future__ import annotations

import json

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from _deploy_helpers import copy_bundle

from conftest import run_deepfleet
from deepfleet.cli import run_cli
from deepfleet.data import read_manifest, read_split
from deepfleet.deploy import load_bundle, new_signing_key, predict_dataset, sign_bundle
from deepfleet.deploy._predict import PARTS
from deepfleet.evaluate import predict_proba


def _read(out, result) -> dict[int, np.ndarray]:
    rows = {}
    for entry in result["files"]:
        table = pq.read_table(out / entry["file"])
        probs = np.stack(
            [table.column(c).to_numpy() for c in table.column_names if c.startswith("prob_")],
            axis=1,
        )
        rows.update(zip(table.column("id").to_pylist(), probs, strict=True))
    return rows


@pytest.mark.distributed
def test_two_processes_match_one_and_cover_every_id(trained_run, tmp_path):
    bundle = load_bundle(trained_run.bundle)
    data = trained_run.data_dir()
    one = predict_dataset(bundle, data, tmp_path / "one", splits=["train", "test"], backend="torch")
    two = predict_dataset(
        bundle, data, tmp_path / "two", splits=["train", "test"], nproc=2, backend="onnxruntime"
    )
    assert two["nproc"] == 2 and two["rows"] == one["rows"]
    a, b = _read(tmp_path / "one", one), _read(tmp_path / "two", two)
    manifest = read_manifest(data)
    expected_ids = {int(i) for s in ("train", "test") for i in read_split(manifest, s).ids}
    assert set(a) == set(b) == expected_ids
    for key in a:
        np.testing.assert_allclose(a[key], b[key], atol=1e-5)
    # Cross-check against the evaluation stage's inference on the test split.
    test = read_split(manifest, "test")
    probs = predict_proba(bundle.model, test.x, torch.device("cpu")).numpy()
    for i, row in zip(test.ids.tolist(), probs, strict=True):
        np.testing.assert_allclose(a[i], row, atol=1e-5)


def test_rerun_skips_finished_shards_and_redoes_damaged_ones(trained_run, tmp_path):
    bundle = load_bundle(trained_run.bundle)
    out = tmp_path / "pred"
    first = predict_dataset(bundle, trained_run.data_dir(), out)
    files = first["files"]
    assert first["skipped"] == 0 and len(files) >= 3
    again = predict_dataset(bundle, trained_run.data_dir(), out)
    assert again["skipped"] == len(files) and again["files"] == files
    # An interrupted run: one output gone, one damaged, one record gone.
    (out / files[0]["file"]).unlink()
    (out / files[1]["file"]).write_bytes(b"partial")
    (out / PARTS / (files[2]["input"].removesuffix(".parquet") + ".json")).unlink()
    resumed = predict_dataset(bundle, trained_run.data_dir(), out)
    assert resumed["skipped"] == len(files) - 3
    assert resumed["files"] == files  # byte-identical outputs (same sha256)


def test_predict_cli_verifies_the_signed_bundle(trained_run, tmp_path, capsys):
    root = copy_bundle(trained_run.bundle, tmp_path / "bundle")
    private, public = new_signing_key(tmp_path / "keys")
    sign_bundle(root, private)
    args = [
        "predict",
        str(root),
        str(trained_run.root),
        "--out",
        str(tmp_path / "p"),
        "--split",
        "test",
        "--public-key",
        str(public),
        "--backend",
        "onnxruntime",
    ]
    done = run_deepfleet(*args)
    assert done.returncode == 0, done.stderr
    assert "0 already done" in " ".join(done.stdout.split())
    (root / "metrics.json").write_text("{}")
    assert run_cli(args) == 2
    assert "changed: metrics.json" in capsys.readouterr().err


def test_predict_picks_onnxruntime_when_the_bundle_has_onnx_else_torch(
    trained_run, tmp_path, capsys
):
    """The default backend (auto) follows serve's rule, says which it used, and both give
    the same classes."""
    data = trained_run.data_dir()
    assert (
        run_cli(
            [
                "predict",
                str(trained_run.bundle),
                str(data),
                "--out",
                str(tmp_path / "auto"),
                "--split",
                "test",
            ]
        )
        == 0
    )
    assert capsys.readouterr().out.strip().endswith("backend onnxruntime)")
    without = copy_bundle(trained_run.bundle, tmp_path / "no-onnx")
    spec = json.loads((without / "model.json").read_text())
    del spec["files"]["model.onnx"], spec["onnx"]
    (without / "model.onnx").unlink()
    (without / "model.json").write_text(json.dumps(spec))
    assert (
        run_cli(
            [
                "predict",
                str(without),
                str(data),
                "--out",
                str(tmp_path / "torch"),
                "--split",
                "test",
            ]
        )
        == 0
    )
    assert capsys.readouterr().out.strip().endswith("backend torch)")
    first = json.loads((tmp_path / "auto" / "manifest.json").read_text())
    second = json.loads((tmp_path / "torch" / "manifest.json").read_text())
    assert (first["backend"], second["backend"]) == ("onnxruntime", "torch")
    a, b = _read(tmp_path / "auto", first), _read(tmp_path / "torch", second)
    assert set(a) == set(b)
    for i in a:
        np.testing.assert_allclose(a[i], b[i], atol=1e-4, rtol=0)
        assert a[i].argmax() == b[i].argmax()
