"""A job wholly on S3 (a real SeaweedFS server on 127.0.0.1): digits prepared to it, 2 ranks
streaming the shards from it through the node's cache and checkpointing to it, a resume from
its URL on a fresh working copy, export and predict through it; weights and predictions equal
the same job's run on a local disk, bit for bit."""

from __future__ import annotations

import sys
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import tomli_w
import torch
from safetensors.torch import load_file

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "storage"))

from s3_fixtures import *  # noqa: E402, F403 - the S3 server fixtures
from s3_fixtures import admin_fs  # noqa: E402
from seaweed import ACCESS_KEY, SECRET_KEY  # noqa: E402

from conftest import run_deepfleet, tiny_job_dict  # noqa: E402
from deepfleet.cli import run_cli  # noqa: E402
from deepfleet.storage import Store  # noqa: E402
from deepfleet.train import read_metrics  # noqa: E402
from deepfleet.train._checkpoint import Checkpointer  # noqa: E402


@pytest.fixture(scope="module")
def _module_bucket(s3_server) -> str:
    name = f"t-runs-{uuid.uuid4().hex[:8]}"
    admin_fs(s3_server).create_dir(name)
    return name


@pytest.fixture
def bucket(_module_bucket, request) -> str:
    """A fresh prefix of one bucket for this module: SeaweedFS grows several volumes for
    each bucket written to, and a test server holds only a few buckets' worth."""
    return f"{_module_bucket}/{request.node.name.removeprefix('test_')[:40]}"


def _job_file(tmp_path: Path, name: str, runs_dir: str, data: Path | str) -> Path:
    job = tiny_job_dict(tmp_path, data={"prepared": str(data)}, run={"runs_dir": runs_dir})
    job["run"]["threads"] = 1
    job["model"] = {"name": "cnn", "params": {"channels": [8], "hidden": 16, "dropout": 0.3}}
    job["train"].update(strategy="ddp", batch_size=32, checkpoint={"every_steps": 7, "keep": 20})
    job["train"]["phases"][0]["epochs"] = 1  # 20 steps a phase: two phases, five checkpoints
    job["export"] = {"onnx": False}  # the ONNX export is tested elsewhere; seconds here
    path = tmp_path / f"{name}.toml"
    path.write_bytes(tomli_w.dumps(job).encode())
    return path


def _ok(done) -> None:
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]


def _get(store: Store, name: str, tmp_path: Path) -> Path:
    dest = tmp_path / "got" / name.replace("/", "_")
    dest.parent.mkdir(exist_ok=True)
    store.download(name, dest)
    return dest


def _same_tensors(a: Path, b: Path) -> None:
    left, right = load_file(a), load_file(b)
    assert set(left) == set(right)
    assert sorted(k for k in left if not torch.equal(left[k], right[k])) == []


def _export_and_predict(run: Path, data: Path, out: Path, args: list[str]) -> None:
    _ok(run_deepfleet("export", str(run)))
    _ok(run_deepfleet("predict", str(run / "bundle"), str(data), "--out", str(out), *args))


@pytest.mark.distributed
@pytest.mark.slow
def test_a_run_on_s3_trains_resumes_exports_and_predicts_like_a_local_run(
    tmp_path, s3_server, bucket
):
    env = {"AWS_ENDPOINT_URL": s3_server.endpoint, "DEEPFLEET_CACHE": str(tmp_path / "node-a")}
    # The data set prepared straight to S3 and, for the reference run, to a local folder.
    data_url = f"s3://{bucket}/data/digits"
    local_data = tmp_path / "digits"
    split = ["--shards", "2", "--val", "0.1", "--test", "0.2", "--seed", "0"]
    with ThreadPoolExecutor(1) as pool:
        prepared = pool.submit(run_deepfleet, "prepare", "digits", "--out", str(local_data), *split)
        _ok(run_deepfleet("prepare", "digits", "--out", data_url, *split, env=env))
        _ok(prepared.result())
    data = Store(data_url, {"endpoint_url": s3_server.endpoint})
    assert sorted(data.list()) == sorted(p.name for p in local_data.iterdir())
    for name in data.list():
        assert data.read_bytes(name) == (local_data / name).read_bytes()
    local_job = _job_file(tmp_path, "local", str(tmp_path / "runs"), local_data)
    s3_job = _job_file(tmp_path, "s3", f"s3://{bucket}/runs", data_url)
    # The local reference and the S3 run side by side (each waits on process starts more
    # than on the cores; run.threads = 1 keeps both bit for bit).
    with ThreadPoolExecutor(2) as pool:
        reference = pool.submit(run_deepfleet, "train", str(local_job), "--nproc", "2")
        trained = run_deepfleet("train", str(s3_job), "--nproc", "2", env=env)
        _ok(reference.result())
    _ok(trained)
    (local,) = (tmp_path / "runs").iterdir()
    args = ["--split", "test", "--backend", "torch", "--threads", "1"]

    runs = Store(f"s3://{bucket}/runs", {"endpoint_url": s3_server.endpoint})
    (name,) = {n.split("/")[0] for n in runs.list()}
    url = f"s3://{bucket}/runs/{name}"
    assert url in trained.stdout
    run = Store(url, {"endpoint_url": s3_server.endpoint})
    names = run.list()
    steps = sorted({n.split("/")[2] for n in names if n.startswith("checkpoints/train/step-")})
    assert len(steps) >= 4
    for step in steps:  # every checkpoint complete, both ranks' files in it
        for file in (".metadata", "trainer.json", "rank-00000.json", "rank-00001.json"):
            assert f"checkpoints/train/{step}/{file}" in names
    assert run.read_bytes("checkpoints/train/latest").decode().strip() == steps[-1]
    assert {"job.toml", "metrics.jsonl", "checkpoints/last.safetensors"} <= set(names)
    assert "status.json" not in names
    for small in [n for n in names if run.size(n) < 1 << 20]:  # no credential anywhere
        text = run.read_bytes(small)
        assert ACCESS_KEY.encode() not in text and SECRET_KEY.encode() not in text
    # The working copy keeps no checkpoint: the bucket holds them.
    copy = tmp_path / "node-a" / "runs" / "s3" / bucket / "runs" / name
    assert not list((copy / "checkpoints" / "train").glob("step-*"))
    # The shards came through the node's verified cache, never from a local data set.
    assert list((tmp_path / "node-a" / "shards" / "objects").iterdir())
    _same_tensors(
        _get(run, "checkpoints/last.safetensors", tmp_path),
        local / "checkpoints" / "last.safetensors",
    )

    # Interrupted after step 14 (mid second epoch), resumed on another machine: nothing local.
    for later in [
        n
        for n in names
        if n.startswith("checkpoints/train/step-") and n.split("/")[2] > "step-000000014"
    ]:
        run.delete(later)
    run.write_bytes("checkpoints/train/latest", b"step-000000014\n")
    run.delete("checkpoints/last.safetensors")
    run.delete("checkpoints/state.json")
    fresh = {**env, "DEEPFLEET_CACHE": str(tmp_path / "node-b")}
    with ThreadPoolExecutor(1) as pool:  # meanwhile, the local run's bundle and predictions
        exported = pool.submit(_export_and_predict, local, local_data, tmp_path / "preds", args)
        _ok(run_deepfleet("train", url, "--resume", "--nproc", "2", env=fresh))
        exported.result()
    setups = [r for r in read_metrics(_get(run, "metrics.jsonl", tmp_path)) if r["kind"] == "setup"]
    assert setups[-1]["resumed_from"] == "step-000000014"
    assert not list((tmp_path / "node-b").rglob(".fetched-rank-*"))  # dropped once loaded
    _same_tensors(
        _get(run, "checkpoints/last.safetensors", tmp_path),
        local / "checkpoints" / "last.safetensors",
    )

    # Export to the run's URL (and published elsewhere); predict from that URL back to S3.
    model_url = f"s3://{bucket}/models/digits"
    _ok(run_deepfleet("export", url, "--out", model_url, env=fresh))
    bundle = Store(model_url, {"endpoint_url": s3_server.endpoint})
    assert run.read_bytes("bundle/weights.safetensors") == bundle.read_bytes("weights.safetensors")
    assert (
        bundle.read_bytes("weights.safetensors")
        == (local / "bundle" / "weights.safetensors").read_bytes()
    )
    preds_url = f"s3://{bucket}/predictions/test"
    _ok(run_deepfleet("predict", model_url, data_url, "--out", preds_url, *args, env=fresh))
    preds = Store(preds_url, {"endpoint_url": s3_server.endpoint})
    expected = sorted(p.name for p in (tmp_path / "preds").glob("pred-*.parquet"))
    assert expected and [n for n in preds.list() if n.startswith("pred-")] == expected
    for file in expected:
        assert preds.read_bytes(file) == (tmp_path / "preds" / file).read_bytes()
    assert "manifest.json" in preds.list()


def test_an_interrupted_checkpoint_upload_is_never_read(tmp_path, s3_server, bucket):
    """Only a complete checkpoint counts: one missing its markers (an upload cut short) is
    passed over, whatever `latest` says, and pruning leaves the newest `keep`."""
    remote = Store(f"s3://{bucket}/run/checkpoints/train", {"endpoint_url": s3_server.endpoint})
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    saver = Checkpointer(tmp_path / "staging", keep=2, remote=remote)
    for step in (1, 2, 3):
        with torch.no_grad():
            model.weight.add_(1.0)
        saver.save(step, model, optimizer, {"seen": step}, {"rank": 0})
    steps = sorted({n.split("/")[0] for n in remote.list() if n.startswith("step-")})
    assert steps == ["step-000000002", "step-000000003"]  # keep=2
    assert saver.latest_name() == "step-000000003"
    remote.delete("step-000000003/trainer.json")  # the upload stopped before its markers
    assert saver.latest_name() == "step-000000002"
    remote.write_bytes("latest", b"\xff garbage")
    reader = Checkpointer(tmp_path / "elsewhere", keep=2, remote=remote)
    path = reader.latest()
    assert path is not None and path.name == "step-000000002"
    fresh = torch.nn.Linear(4, 2)
    state, rank_state = reader.load(path, fresh, None)
    assert state["seen"] == 2 and rank_state["rank"] == 0
    assert torch.equal(fresh.weight, model.weight - 1.0)


def test_a_url_that_is_no_run_is_one_line(tmp_path, s3_server, bucket, monkeypatch, capsys):
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_server.endpoint)
    monkeypatch.setenv("DEEPFLEET_CACHE", str(tmp_path))
    assert run_cli(["train", f"s3://{bucket}/runs/nothing", "--resume"]) == 2
    err = capsys.readouterr().err
    assert "not a run folder" in err and "Traceback" not in err
    assert run_cli(["export", f"s3://no-such-bucket-{bucket}/runs/x"]) == 2
    assert "bucket does not exist" in capsys.readouterr().err


def test_a_bundle_url_is_checked_like_a_folder(
    tmp_path, trained_run, s3_server, bucket, monkeypatch
):
    """A bundle published to S3 loads as its folder does; a byte changed on the server is
    refused by the digest check, never served."""
    from deepfleet.deploy import load_bundle
    from deepfleet.deploy._bundle import fetch_bundle, publish_bundle
    from deepfleet.errors import UserError

    monkeypatch.setenv("DEEPFLEET_CACHE", str(tmp_path))
    options = {"endpoint_url": s3_server.endpoint}
    url = publish_bundle(trained_run.bundle, f"s3://{bucket}/models/m", options)
    assert url == f"s3://{bucket}/models/m"
    local = load_bundle(trained_run.bundle)
    fetched = load_bundle(fetch_bundle(url, options))
    assert fetched.spec == local.spec
    store = Store(url, options)
    weights = bytearray(store.read_bytes("weights.safetensors"))
    weights[-1] ^= 0xFF
    store.write_bytes("weights.safetensors", bytes(weights))
    with pytest.raises(UserError, match="does not match its sha256"):
        load_bundle(fetch_bundle(url, options))


def test_cluster_prepare_makes_one_run_at_a_fixed_url(
    tmp_path, digits_data, s3_server, bucket, monkeypatch
):
    from deepfleet.cluster._prepare import prepare_run_at
    from deepfleet.errors import UserError

    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_server.endpoint)
    monkeypatch.setenv("DEEPFLEET_CACHE", str(tmp_path / "node"))
    job = _job_file(tmp_path, "job", f"s3://{bucket}/runs", digits_data)
    url = f"s3://{bucket}/runs/digits"
    made = prepare_run_at(job, url)
    assert made.remote == url
    store = Store(url, {"endpoint_url": s3_server.endpoint})
    assert store.list() == ["data.json", "job.toml"]
    monkeypatch.setenv("DEEPFLEET_CACHE", str(tmp_path / "other-node"))
    again = prepare_run_at(job, url)  # another node finds it
    assert again.root != made.root and again.job_file.read_bytes() == made.job_file.read_bytes()
    assert again.data_dir() == made.data_dir()
    other = _job_file(tmp_path, "other", f"s3://{bucket}/elsewhere", digits_data)
    with pytest.raises(UserError, match="holds a different job"):
        prepare_run_at(other, url)


def test_a_working_copy_uploads_only_what_it_changed(
    tmp_path, digits_data, s3_server, bucket, monkeypatch
):
    """Another node's copy that only fetched the run uploads nothing (it never overwrites
    newer files with older ones); a failed stage's status goes up and a success clears it."""
    from deepfleet.config import load_job
    from deepfleet.runs import create_run, open_run

    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_server.endpoint)
    monkeypatch.setenv("DEEPFLEET_CACHE", str(tmp_path / "node-0"))
    job = load_job(_job_file(tmp_path, "job", f"s3://{bucket}/runs", digits_data))
    made = create_run(job)
    assert made.remote.startswith(f"s3://{bucket}/runs/tiny-")
    made.metrics.write_text('{"kind": "epoch", "epoch": 1}\n')
    assert made.push() == ["metrics.jsonl"]
    assert made.push() == []
    monkeypatch.setenv("DEEPFLEET_CACHE", str(tmp_path / "node-1"))
    other = open_run(made.remote)
    assert other.root != made.root and other.metrics.read_text() == made.metrics.read_text()
    made.metrics.write_text('{"kind": "epoch", "epoch": 1}\n{"kind": "epoch", "epoch": 2}\n')
    made.push()
    assert other.push() == []  # its older metrics.jsonl stays local
    store = Store(made.remote, {"endpoint_url": s3_server.endpoint})
    assert store.read_bytes("metrics.jsonl") == made.metrics.read_bytes()
    (other.root / "report").mkdir()
    (other.root / "report" / "old.md").write_text("from an earlier attempt")
    assert open_run(made.remote).root == other.root  # opened again: the mirror of the URL
    assert not (other.root / "report" / "old.md").exists()
    assert other.metrics.read_bytes() == made.metrics.read_bytes()
    other.mark_failed("train", RuntimeError("boom"))
    assert b"boom" in store.read_bytes("status.json")
    made.mark_succeeded()
    assert not store.exists("status.json")


def test_an_asynchronous_checkpoint_is_committed_on_s3_when_its_write_ends(
    tmp_path, s3_server, bucket
):
    remote = Store(f"s3://{bucket}/checkpoints/train", {"endpoint_url": s3_server.endpoint})
    model = torch.nn.Linear(4, 2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    saver = Checkpointer(tmp_path / "staging", keep=2, async_save=True, remote=remote)
    saver.save(5, model, optimizer, {"seen": 5}, {"rank": 0})
    assert saver.latest_name() is None  # nothing counts before its commit
    saver.wait()
    assert saver.latest_name() == "step-000000005"
    assert saver.latest_trainer_state()["seen"] == 5
    assert not list((tmp_path / "staging").glob("*step-*"))  # the staging copy is gone
