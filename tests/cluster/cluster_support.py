"""Helpers for the cluster tests: offline Kubernetes schema validation and file snapshots."""

from __future__ import annotations

import json
import os
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
from kubernetes_validate.utils import latest_version
from referencing import Registry, Resource

HERE = Path(__file__).resolve().parent
SNAPSHOTS = HERE / "snapshots"
CRD_SCHEMA = HERE / "schemas" / "kubeflow-pytorchjob-v1.json"
# The Kubeflow Trainer v2 CRDs' own openAPIV3Schema (source and commit: schemas/README.md).
TRAINER_V2_SCHEMAS = {
    "TrainJob": HERE / "schemas" / "kubeflow-trainer-v2-trainjob.json",
    "TrainingRuntime": HERE / "schemas" / "kubeflow-trainer-v2-trainingruntime.json",
}
# The newest Kubernetes release whose OpenAPI schemas kubernetes-validate ships (offline).
K8S_VERSION = latest_version()
UPDATE = bool(os.environ.get("DEEPFLEET_UPDATE_SNAPSHOTS"))


@cache
def _crd_validator() -> jsonschema.Draft202012Validator:
    folder = resources.files("kubernetes_validate") / "kubernetes-json-schema"
    defs = json.loads((folder / f"v{K8S_VERSION}-local-strict" / "_definitions.json").read_text())
    schema = json.loads(CRD_SCHEMA.read_text())
    registry = Registry().with_resources(
        [
            (defs["$id"], Resource.from_contents(defs)),
            (schema["$id"], Resource.from_contents(schema)),
        ]
    )
    return jsonschema.Draft202012Validator(schema, registry=registry)


def _strict(schema: Any) -> Any:
    """A CRD schema as the API server applies it under strict field validation (what
    `kubectl apply` asks for): fields a schema does not list are errors, unless it keeps
    unknown fields on purpose."""
    if isinstance(schema, list):
        return [_strict(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: _strict(v) for k, v in schema.items()}
    if (
        "properties" in out
        and "additionalProperties" not in out
        and not out.get("x-kubernetes-preserve-unknown-fields")
    ):
        out["additionalProperties"] = False
    return out


@cache
def _trainer_v2_validator(kind: str) -> jsonschema.Draft202012Validator:
    schema = _strict(json.loads(TRAINER_V2_SCHEMAS[kind].read_text()))
    return jsonschema.Draft202012Validator(schema)


def validate_object(obj: dict[str, Any]) -> None:
    """Kubernetes objects against the strict OpenAPI schema; the PyTorchJob CRD against the
    schema in tests/cluster/schemas (written from the Kubeflow v1 API reference); Trainer v2
    objects against the Trainer's own CRD schemas."""
    if obj["apiVersion"] == "kubeflow.org/v1":
        _crd_validator().validate(obj)
    elif obj["apiVersion"].startswith("trainer.kubeflow.org/"):
        assert obj["apiVersion"] == "trainer.kubeflow.org/v1alpha1", obj["apiVersion"]
        _trainer_v2_validator(obj["kind"]).validate(obj)
    else:
        kubernetes_validate.validate(obj, K8S_VERSION, strict=True)


def check_snapshot(case: str, name: str, text: str) -> None:
    """Compare with tests/cluster/snapshots/CASE/NAME; DEEPFLEET_UPDATE_SNAPSHOTS=1 rewrites."""
    path = SNAPSHOTS / case / name
    if UPDATE:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        return
    assert path.is_file(), f"no snapshot {path}; run with DEEPFLEET_UPDATE_SNAPSHOTS=1"
    assert text == path.read_text(), (
        f"{case}/{name} differs from its snapshot; if the change is intended, "
        "rerun with DEEPFLEET_UPDATE_SNAPSHOTS=1 and review the diff"
    )


def walk(obj: Any):
    """Every (key, value) pair in a nested structure."""
    if isinstance(obj, dict):
        for key, value in obj.items():
            yield key, value
            yield from walk(value)
    elif isinstance(obj, list):
        for item in obj:
            yield from walk(item)
