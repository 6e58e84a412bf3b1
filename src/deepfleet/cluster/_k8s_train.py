"""Training on Kubernetes: a Kubeflow PyTorchJob, or an Indexed Job plus a headless Service.

Both start one `deepfleet train` launcher per node; the launchers meet at a c10d rendezvous
and torch's elastic agent runs one process per GPU. Restarts are tied to checkpoints: with
resume on, a failed pod is restarted (up to the backoff limit) and continues from the latest
committed checkpoint on the shared volume; with resume off a pod restart would silently
start training over, so a failed pod fails the job instead. Inside a pod the agent still
restarts crashed workers (--max-restarts) either way.
"""

from __future__ import annotations

from typing import Any

from deepfleet.cluster import _k8s_pod as pod
from deepfleet.cluster._commands import JOB_FILE, train_args
from deepfleet.cluster._spec import ClusterSpec


def _restart_policy(spec: ClusterSpec) -> str:
    return "OnFailure" if spec.resume else "Never"


def _backoff(spec: ClusterSpec) -> int:
    return spec.max_restarts if spec.resume else 0


def _container(spec: ClusterSpec, args: list[str], port_name: str,
               env: list[dict[str, Any]]) -> dict[str, Any]:
    _, mounts = pod.train_volumes(spec.name, spec.data_key_secret)
    container: dict[str, Any] = {
        # The operator finds the training container by this name.
        "name": "pytorch",
        "image": spec.image,
        "imagePullPolicy": "IfNotPresent",
        "command": ["deepfleet"],
        "args": args,
        "env": env + pod.train_env(spec.data_key_secret),
        "ports": [{"name": port_name, "containerPort": spec.rdzv_port, "protocol": "TCP"}],
        "volumeMounts": mounts,
        "securityContext": pod.container_security(read_only_root=False),
    }
    resources = pod.gpu_resources(spec.gpus_per_node)
    if resources:
        container["resources"] = resources
    return container


def _pod_spec(spec: ClusterSpec, container: dict[str, Any], **extra: Any) -> dict[str, Any]:
    volumes, _ = pod.train_volumes(spec.name, spec.data_key_secret)
    body: dict[str, Any] = {
        **extra,
        "restartPolicy": _restart_policy(spec),
        "securityContext": pod.pod_security(),
        "containers": [container],
        "volumes": volumes,
    }
    tolerations = pod.gpu_tolerations(spec.gpus_per_node)
    if tolerations:
        body["tolerations"] = tolerations
    return body


def pytorchjob(spec: ClusterSpec) -> dict[str, Any]:
    """kubeflow.org/v1 PyTorchJob: one Master and nodes-1 Workers, one launcher each.

    The operator gives every pod MASTER_ADDR and MASTER_PORT (the master's Service and the
    container port named pytorchjob-port) and RANK (0 for the master, 1.. for workers).
    """
    args = train_args(JOB_FILE, nproc=spec.nproc, nnodes=spec.nodes, node_rank="$(RANK)",
                      rdzv="$(MASTER_ADDR):$(MASTER_PORT)", max_restarts=spec.max_restarts,
                      resume=spec.resume)

    def replica(count: int) -> dict[str, Any]:
        container = _container(spec, args, "pytorchjob-port", [])
        return {
            "replicas": count,
            "restartPolicy": _restart_policy(spec),
            "template": {
                "metadata": {"labels": pod.labels(spec.name, "train")},
                "spec": _pod_spec(spec, container),
            },
        }

    replicas = {"Master": replica(1)}
    if spec.nodes > 1:
        replicas["Worker"] = replica(spec.nodes - 1)
    return {
        "apiVersion": "kubeflow.org/v1",
        "kind": "PyTorchJob",
        "metadata": pod.metadata(spec.name, spec.namespace, spec.name, "train"),
        "spec": {
            "runPolicy": {"backoffLimit": _backoff(spec), "cleanPodPolicy": "Running"},
            "pytorchReplicaSpecs": replicas,
        },
    }


def rdzv_service_name(spec: ClusterSpec) -> str:
    return f"{spec.name}-rdzv"


def rdzv_service(spec: ClusterSpec) -> dict[str, Any]:
    """Headless Service: gives pod 0 the stable DNS name `<name>-0.<name>-rdzv`."""
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": pod.metadata(rdzv_service_name(spec), spec.namespace, spec.name, "train"),
        "spec": {
            "clusterIP": "None",
            # Launchers look each other up before any of them is Ready.
            "publishNotReadyAddresses": True,
            "selector": pod.labels(spec.name, "train"),
            "ports": [{"name": "rdzv", "port": spec.rdzv_port, "targetPort": spec.rdzv_port,
                       "protocol": "TCP"}],
        },
    }


def indexed_job(spec: ClusterSpec) -> dict[str, Any]:
    """batch/v1 Job in Indexed mode: pod i is node i; pod 0 hosts the rendezvous."""
    rdzv_host = f"{spec.name}-0.{rdzv_service_name(spec)}"
    args = train_args(JOB_FILE, nproc=spec.nproc, nnodes=spec.nodes, node_rank="$(NODE_RANK)",
                      rdzv=f"{rdzv_host}:{spec.rdzv_port}", max_restarts=spec.max_restarts,
                      resume=spec.resume)
    node_rank = {"name": "NODE_RANK", "valueFrom": {"fieldRef": {
        "fieldPath": "metadata.annotations['batch.kubernetes.io/job-completion-index']"}}}
    container = _container(spec, args, "rdzv", [node_rank])
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": pod.metadata(spec.name, spec.namespace, spec.name, "train"),
        "spec": {
            "completionMode": "Indexed",
            "completions": spec.nodes,
            "parallelism": spec.nodes,
            "backoffLimit": _backoff(spec),
            "template": {
                "metadata": {"labels": pod.labels(spec.name, "train")},
                # subdomain + the Service above = DNS names for the pods.
                "spec": _pod_spec(spec, container, subdomain=rdzv_service_name(spec)),
            },
        },
    }
