"""Objects both training variants use: the job file as a ConfigMap and the shared volume."""

from __future__ import annotations

from typing import Any

from deepfleet.cluster import _k8s_pod as pod
from deepfleet.cluster._spec import ClusterSpec


def job_configmap(spec: ClusterSpec, job_toml: str) -> dict[str, Any]:
    """The resolved job file, mounted read-only at /etc/deepfleet/job/job.toml."""
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": pod.metadata(
            pod.job_config_name(spec.name), spec.namespace, spec.name, "train"
        ),
        "data": {"job.toml": job_toml},
    }


def workspace_pvc(spec: ClusterSpec) -> dict[str, Any]:
    """One volume every node mounts: shards, run folders, checkpoints, bundles.

    ReadWriteMany because every node reads the shards and a restarted pod on another
    node must find the checkpoint it resumes from (NFS, CephFS, Filestore, EFS, ...).
    """
    body: dict[str, Any] = {
        "accessModes": ["ReadWriteMany"],
        "resources": {"requests": {"storage": spec.storage}},
    }
    if spec.storage_class:
        body["storageClassName"] = spec.storage_class
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": pod.metadata(
            pod.workspace_claim(spec.name), spec.namespace, spec.name, "storage"
        ),
        "spec": body,
    }
