"""The "mlflow" logger and model registration against a real MLflow tracking server."""

from __future__ import annotations

import hashlib
import json
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from conftest import tiny_job_dict
from deepfleet.config import job_from_dict
from deepfleet.jobs import run_job
from deepfleet.train import read_metrics

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

mlflow = pytest.importorskip("mlflow")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _healthy(uri: str) -> bool:
    try:
        with urllib.request.urlopen(f"{uri}/health", timeout=2) as reply:
            return reply.status == 200
    except OSError:
        return False


@pytest.fixture
def mlflow_server(mlflow_process):
    """The tracking URI of `mlflow server` on 127.0.0.1, up until the test ends."""
    return mlflow_process[0]


@pytest.fixture
def mlflow_process(tmp_path: Path):
    """`mlflow server` on 127.0.0.1 with a SQLite store: (tracking URI, server process)."""
    port = _free_port()
    uri = f"http://127.0.0.1:{port}"
    store = tmp_path / "mlflow"
    store.mkdir()
    exe = Path(sys.executable).with_name("mlflow")
    command = [str(exe)] if exe.is_file() else [shutil.which("mlflow") or "mlflow"]
    log = open(store / "server.log", "wb")  # noqa: SIM115
    server = subprocess.Popen(
        [
            *command,
            "server",
            "--backend-store-uri",
            f"sqlite:///{store}/mlflow.db",
            "--default-artifact-root",
            str(store / "artifacts"),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 60
        while not _healthy(uri):
            if server.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"mlflow server did not start:\n{log_text(store)}")
            time.sleep(0.5)
        yield uri, server
    finally:
        server.terminate()
        try:
            server.wait(timeout=15)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        log.close()


def log_text(store: Path) -> str:
    return (store / "server.log").read_text(errors="replace")[-4000:]


def test_run_params_metrics_and_model_version_in_mlflow(
    tmp_path, mlflow_server, capsys, monkeypatch
):
    import mlflow
    from mlflow import MlflowClient

    raw = tiny_job_dict(
        tmp_path,
        track={
            "loggers": ["mlflow"],
            "mlflow": {"tracking_uri": mlflow_server, "register_model": True},
        },
    )
    summary = run_job(job_from_dict(raw))
    assert "tracking:" not in capsys.readouterr().err

    client = MlflowClient(tracking_uri=mlflow_server)
    run_id = json.loads((summary.paths.root / "mlflow_run.json").read_text())["run_id"]
    run = client.get_run(run_id)
    assert run.data.params["train.batch_size"] == "64"
    assert run.data.params["run.name"] == "tiny"
    assert run.info.status == "FINISHED"
    assert client.get_experiment(run.info.experiment_id).name == "tiny"

    records = read_metrics(summary.paths.metrics)
    epochs = [r for r in records if r["kind"] == "epoch"]
    history = client.get_metric_history(run_id, "epoch/val_loss")
    assert sorted((m.step, m.value) for m in history) == [
        (r["epoch"], pytest.approx(r["val_loss"])) for r in epochs
    ]
    steps = [r for r in records if r["kind"] == "step"]
    assert len(client.get_metric_history(run_id, "train/loss")) == len(steps)

    bundle_json = summary.paths.bundle / "model.json"
    versions = client.search_model_versions("name='tiny'")
    assert len(versions) == 1
    version = versions[0]
    assert version.run_id == run_id

    assert version.tags["bundle_sha256"] == hashlib.sha256(bundle_json.read_bytes()).hexdigest()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server)
    info = mlflow.models.get_model_info(f"models:/tiny/{version.version}")
    inputs = info.signature.inputs.to_dict()
    outputs = {o["name"]: o for o in info.signature.outputs.to_dict()}
    spec = json.loads(bundle_json.read_text())
    assert inputs == [
        {
            "name": "input",
            "type": "tensor",
            "tensor-spec": {"dtype": "uint8", "shape": (-1, *spec["input"]["shape"])},
        }
    ]
    classes = len(spec["class_names"])
    assert outputs["logits"]["tensor-spec"] == {"dtype": "float32", "shape": (-1, classes)}
    assert outputs["probabilities"]["tensor-spec"] == {"dtype": "float32", "shape": (-1, classes)}
    assert outputs["label"]["tensor-spec"] == {"dtype": "int64", "shape": (-1,)}
    assert info.flavors["deepfleet"]["bundle_sha256"] == version.tags["bundle_sha256"]
    artifacts = {a.path for a in client.list_artifacts(run_id)}
    assert {"report", "model"} <= artifacts
    bundle_files = {Path(a.path).name for a in client.list_artifacts(run_id, "model/bundle")}
    assert bundle_files == set(spec["files"]) | {"model.json"}


def test_unreachable_server_warns_once_and_training_goes_on(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "2")
    nowhere = f"http://127.0.0.1:{_free_port()}"
    raw = tiny_job_dict(
        tmp_path, track={"loggers": ["mlflow"], "mlflow": {"tracking_uri": nowhere}}
    )
    summary = run_job(job_from_dict(raw))

    records = read_metrics(summary.paths.metrics)
    assert [r["epoch"] for r in records if r["kind"] == "epoch"] == [1, 2, 3]
    assert summary.predicted_rows > 0
    warnings = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("tracking:")]
    assert len(warnings) == 1
    assert "mlflow logger failed" in warnings[0]


def test_server_stopped_mid_run_warns_once_and_training_goes_on(
    tmp_path, mlflow_process, monkeypatch, capsys
):
    from deepfleet.track import _mlflow

    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "2")
    uri, server = mlflow_process
    write = _mlflow.MlflowLogger.write
    stopped = []

    def write_then_stop_server(self, record):
        write(self, record)
        if record.get("kind") == "epoch" and not stopped:
            server.terminate()
            server.wait(timeout=15)
            stopped.append(record["epoch"])

    monkeypatch.setattr(_mlflow.MlflowLogger, "write", write_then_stop_server)
    raw = tiny_job_dict(tmp_path, track={"loggers": ["mlflow"], "mlflow": {"tracking_uri": uri}})
    summary = run_job(job_from_dict(raw))

    assert stopped == [1]
    records = read_metrics(summary.paths.metrics)
    assert [r["epoch"] for r in records if r["kind"] == "epoch"] == [1, 2, 3]
    assert summary.predicted_rows > 0
    warnings = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("tracking:")]
    assert len(warnings) == 1
    assert "mlflow logger failed" in warnings[0]


def test_no_credentials_in_tracking_uri(tmp_path):
    raw = tiny_job_dict(
        tmp_path, track={"mlflow": {"tracking_uri": "https://user:secret@mlflow.example"}}
    )
    with pytest.raises(Exception, match="MLFLOW_TRACKING_PASSWORD"):
        job_from_dict(raw)
