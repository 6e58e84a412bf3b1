"""The stages on a run folder, the bundle round trip, and data checks the foundation owns."""

import json

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from deepfleet.data import read_manifest, read_split, stratified_split
from deepfleet.deploy import load_bundle, predict_dataset
from deepfleet.errors import UserError
from deepfleet.evaluate import predict_proba
from deepfleet.jobs import stage_train
from deepfleet.models import build_model
from deepfleet.runs import open_run
from deepfleet.train import BEST, load_weights


def test_split_is_stratified_disjoint_and_seeded():
    labels = np.repeat(np.arange(5), 40)
    parts = stratified_split(labels, 0.1, 0.2, seed=3)
    allrows = np.concatenate(list(parts.values()))
    assert sorted(allrows.tolist()) == list(range(200))
    for name, share in (("test", 0.2), ("val", 0.1)):
        counts = np.bincount(labels[parts[name]], minlength=5)
        assert (counts == share * 40).all()
    again = stratified_split(labels, 0.1, 0.2, seed=3)
    assert all(np.array_equal(parts[k], again[k]) for k in parts)


def test_prepared_digits_manifest(digits_data):
    manifest = read_manifest(digits_data)
    assert manifest.sample_shape == (1, 8, 8)
    assert manifest.class_names == [str(i) for i in range(10)]
    assert sum(manifest.rows(s) for s in manifest.splits) == 1797
    assert manifest.rows("test") == 360
    test = read_split(manifest, "test")
    assert test.x.dtype == torch.float32 and float(test.x.max()) == 1.0
    assert sum(manifest.raw["splits"]["test"]["class_histogram"]) == 360


def test_run_folder_layout(trained_run):
    for path in (
        trained_run.job_file,
        trained_run.metrics,
        trained_run.checkpoints / BEST,
        trained_run.report / "metrics.json",
        trained_run.report / "report.md",
        trained_run.report / "confusion.png",
        trained_run.report / "curves.png",
        trained_run.bundle / "model.json",
        trained_run.bundle / "weights.safetensors",
    ):
        assert path.is_file(), path
    lines = [json.loads(x) for x in trained_run.metrics.read_text().splitlines()]
    epochs = [r for r in lines if r["kind"] == "epoch"]
    assert [r["epoch"] for r in epochs] == [1, 2, 3]
    assert [r["phase"] for r in epochs] == ["a", "a", "b"]
    assert any(r["kind"] == "step" for r in lines)
    metrics = json.loads((trained_run.report / "metrics.json").read_text())
    assert metrics["samples"] == 360 and metrics["accuracy"] > 0.8


def test_bundle_round_trip_gives_identical_predictions(trained_run, digits_data, tmp_path):
    job = open_run(trained_run.root).load_job()
    manifest = read_manifest(trained_run.data_dir())
    model = build_model(job.model, manifest.sample_shape, 10)
    load_weights(model, trained_run.checkpoints / BEST)
    test = read_split(manifest, "test")
    before = predict_proba(model, test.x, torch.device("cpu"))
    bundle = load_bundle(trained_run.bundle)
    after = predict_proba(bundle.model, test.x, torch.device("cpu"))
    assert torch.equal(before, after)
    result = predict_dataset(bundle, trained_run.data_dir(), tmp_path / "pred", splits=["test"])
    table = pq.read_table(tmp_path / "pred" / result["files"][0]["file"])
    assert {"id", "label", "label_name", "confidence", "prob_0", "prob_9"} <= set(
        table.column_names
    )
    frames = [pq.read_table(tmp_path / "pred" / f["file"]) for f in result["files"]]
    ids = np.concatenate([f.column("id").to_numpy() for f in frames])
    labels = np.concatenate([f.column("label").to_numpy() for f in frames])
    order = np.argsort(test.ids.numpy())
    assert np.array_equal(ids[np.argsort(ids)], test.ids.numpy()[order])
    by_id = dict(zip(ids.tolist(), labels.tolist(), strict=True))
    expected = before.argmax(1).numpy()
    assert all(by_id[i] == expected[k] for k, i in enumerate(test.ids.tolist()))
    probs = np.stack([f.column(f"prob_{c}").to_numpy() for c in range(10) for f in frames[:1]])
    assert np.allclose(probs.sum(0), 1.0, atol=1e-5)


def test_bundle_with_a_changed_or_missing_file_is_refused(trained_run, tmp_path):
    import shutil

    copy = tmp_path / "bundle"
    shutil.copytree(trained_run.bundle, copy)
    weights = copy / "weights.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(UserError, match="weights.safetensors does not match its sha256"):
        load_bundle(copy)
    weights.unlink()
    with pytest.raises(UserError, match="bundle is missing weights.safetensors"):
        load_bundle(copy)


def test_training_refuses_tampered_shards(trained_run, tmp_path):
    import shutil

    copy = tmp_path / "run"
    shutil.copytree(trained_run.root, copy)
    run = open_run(copy)
    shard = sorted(run.shards.glob("train-*.parquet"))[0]
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0x01
    shard.write_bytes(bytes(data))
    with pytest.raises(UserError, match=f"shard {shard.name} does not match"):
        stage_train(run)
