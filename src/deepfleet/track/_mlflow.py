"""The run in MLflow: params, step and epoch metrics, and the exported bundle as a model version.

The MLflow logger is one of the [track] loggers (deepfleet.track._loggers): MetricsLog writes
each record to metrics.jsonl first and then hands it here, so MLflow holds the values the JSON
lines hold. Where it sends them is [track.mlflow]; credentials come only from MLflow's own
environment variables (MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD or
MLFLOW_TRACKING_TOKEN), never from the job file. MLflow's client retries HTTP requests itself
(MLFLOW_HTTP_REQUEST_MAX_RETRIES, MLFLOW_HTTP_REQUEST_TIMEOUT); an error that remains is
raised, and MetricsLog reports it once and switches the logger off.
"""

from __future__ import annotations

import hashlib
import json
import os
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from deepfleet._atomic import write_json_atomic
from deepfleet.track._runs import EPOCH_PLACE, is_number

if TYPE_CHECKING:
    from mlflow import MlflowClient

    from deepfleet.config import JobConfig

# The MLflow run this run folder records into, so a resumed run goes on in the same one.
# Holds ids only: never the tracking URI (which could carry a user) or a credential.
MLFLOW_RUN = "mlflow_run.json"
# MLflow's limits on one log_batch call and on a param.
_MAX_METRICS = 1000
_MAX_PARAMS = 100
_MAX_KEY = 250
_MAX_VALUE = 6000


def tracking_uri(job: JobConfig) -> str:
    """[track.mlflow] tracking_uri, else MLFLOW_TRACKING_URI, else ./mlruns."""
    return (
        job.track.mlflow.tracking_uri
        or os.environ.get("MLFLOW_TRACKING_URI")
        or Path("mlruns").resolve().as_uri()
    )


def flat_params(table: dict[str, Any], prefix: str = "") -> Iterator[tuple[str, str]]:
    """The job's tables as dotted keys ("train.batch_size"); lists and values as JSON text
    (strings as they are), cut to MLflow's limits."""
    for key, value in table.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            yield from flat_params(value, f"{name}.")
            continue
        text = value if isinstance(value, str) else json.dumps(value, default=str)
        yield name[:_MAX_KEY], text[:_MAX_VALUE]


def _client(uri: str) -> MlflowClient:
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def _experiment_id(client: MlflowClient, name: str) -> str:
    found = client.get_experiment_by_name(name)
    return found.experiment_id if found is not None else client.create_experiment(name)


def open_run(run_dir: Path, job: JobConfig) -> tuple[MlflowClient, str, bool]:
    """The MLflow run of this run folder: the one recorded in mlflow_run.json (marked running
    again), else a new one in the experiment. Returns (client, run id, new)."""
    client = _client(tracking_uri(job))
    record = run_dir / MLFLOW_RUN
    if record.is_file():
        run_id = json.loads(record.read_text())["run_id"]
        client.update_run(run_id, status="RUNNING")
        return client, run_id, False
    experiment = _experiment_id(client, job.track.mlflow.experiment or job.run.name)
    run = client.create_run(
        experiment, run_name=run_dir.name, tags={"deepfleet.run_folder": run_dir.name}
    )
    write_json_atomic(record, {"run_id": run.info.run_id, "experiment_id": experiment})
    return client, run.info.run_id, True


class MlflowLogger:
    """Records into an MLflow run: the resolved job (job.toml) as params, "train/loss" and
    "train/lr" at each optimizer step, "epoch/<key>" for every number of an epoch record at
    the epoch. Step metrics are sent in batches (at each epoch and at the end); the run is
    ended on close."""

    name = "mlflow"

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = run_dir
        self._client: MlflowClient | None = None
        self._run_id: str | None = None
        self._pending: list[Any] = []

    def _open(self) -> None:
        if self._client is not None:
            return
        from deepfleet.config import load_job

        job_file = self.run_dir / "job.toml"
        client, run_id, new = open_run(self.run_dir, load_job(job_file))
        self._client, self._run_id = client, run_id
        if new:
            from mlflow.entities import Param

            params = [Param(k, v) for k, v in flat_params(tomllib.loads(job_file.read_text()))]
            for start in range(0, len(params), _MAX_PARAMS):
                client.log_batch(run_id, params=params[start : start + _MAX_PARAMS])

    def _add(self, key: str, value: float, when: Any, step: int) -> None:
        from mlflow.entities import Metric

        stamp = int(float(when) * 1000) if is_number(when) else 0
        self._pending.append(Metric(key, float(value), stamp, step))
        if len(self._pending) >= _MAX_METRICS:
            self._flush()

    def _flush(self) -> None:
        if self._pending and self._client is not None:
            batch, self._pending = self._pending, []
            self._client.log_batch(self._run_id, metrics=batch)

    def write(self, record: dict[str, Any]) -> None:
        self._open()
        kind, when = record.get("kind"), record.get("time")
        if kind == "step":
            step = int(record["step"])
            for key in ("loss", "lr"):
                if is_number(record.get(key)):
                    self._add(f"train/{key}", record[key], when, step)
        elif kind == "epoch":
            epoch = int(record["epoch"])
            for key, value in record.items():
                if key not in EPOCH_PLACE and is_number(value):
                    self._add(f"epoch/{key}", value, when, epoch)
            self._flush()

    def close(self) -> None:
        if self._client is None:
            return
        try:
            self._flush()
            self._client.set_terminated(self._run_id, "FINISHED")
        finally:
            self._client = None


MODEL_ARTIFACT = "model"  # the registered model: MLmodel (with the signature) + bundle/
FLAVOR = "deepfleet"


def signature_of(bundle: Path) -> Any:
    """The bundle's input and output tensors as an MLflow ModelSignature: the raw samples a
    client sends (the dtype before the bundle's preprocessing) and the tensors the server
    answers with for the bundle's task, named and shaped as in the OIP model metadata."""
    import numpy as np
    from mlflow.models.signature import ModelSignature
    from mlflow.types.schema import Schema, TensorSpec

    from deepfleet.deploy import load_bundle
    from deepfleet.deploy._onnx import INPUT_NAME
    from deepfleet.deploy.serve._outputs import outputs_of
    from deepfleet.deploy.serve._protocol import NUMERIC_TYPES

    loaded = load_bundle(bundle)
    raw = np.dtype(loaded.preprocessing.raw_dtype)
    inputs = Schema([TensorSpec(raw, (-1, *loaded.input_shape), INPUT_NAME)])
    outputs = Schema(
        [
            TensorSpec(np.dtype(NUMERIC_TYPES[o.datatype]), tuple(o.shape), o.name)
            for o in outputs_of(loaded).values()
        ]
    )
    return ModelSignature(inputs=inputs, outputs=outputs)


def _log_model(client: MlflowClient, run_id: str, bundle: Path, digest: str) -> None:
    """The bundle under MODEL_ARTIFACT/bundle, beside an MLmodel file that carries its
    signature and a `deepfleet` flavor naming the folder and the digest (so MLflow's own
    `get_model_info` shows the signature); the bundle's folder itself stays exactly as
    exported, so a downloaded copy verifies and serves."""
    import tempfile

    from mlflow.models import Model

    model = Model(
        artifact_path=MODEL_ARTIFACT,
        run_id=run_id,
        signature=signature_of(bundle),
        flavors={FLAVOR: {"bundle": "bundle", "bundle_sha256": digest}},
    )
    with tempfile.TemporaryDirectory() as folder:
        model.save(str(Path(folder) / "MLmodel"))
        client.log_artifacts(run_id, folder, MODEL_ARTIFACT)
    client.log_artifacts(run_id, str(bundle), f"{MODEL_ARTIFACT}/bundle")


def register_bundle(run_dir: Path, job: JobConfig, report: Path, bundle: Path) -> str:
    """Log report/ as an artifact of the run folder's MLflow run, and the bundle with an
    MLmodel file (its input/output signature) as `model/`, and register that as a new
    version of [track.mlflow] registered_model (default: the run name), tagged with
    model.json's sha256 and the weights version. Returns the model version."""
    from mlflow.exceptions import MlflowException

    client, run_id, _ = open_run(run_dir, job)
    if report.is_dir():
        client.log_artifacts(run_id, str(report), "report")
    model_json = bundle / "model.json"
    spec = json.loads(model_json.read_text())
    digest = hashlib.sha256(model_json.read_bytes()).hexdigest()
    _log_model(client, run_id, bundle, digest)
    tags = {
        "bundle_sha256": digest,
        "weights_version": str(spec.get("files", {}).get("weights.safetensors", ""))[:12],
    }
    name = job.track.mlflow.registered_model or job.run.name
    try:
        client.create_registered_model(name)
    except MlflowException as err:
        if err.error_code != "RESOURCE_ALREADY_EXISTS":
            raise
    source = f"{client.get_run(run_id).info.artifact_uri}/{MODEL_ARTIFACT}"
    version = client.create_model_version(name, source, run_id=run_id, tags=tags)
    client.set_terminated(run_id, "FINISHED")
    return str(version.version)
