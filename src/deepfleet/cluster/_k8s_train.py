"""Training on Kubernetes: a Kubeflow PyTorchJob, or an Indexed Job plus a headless Service.

Both run one pod per node. An init container makes (or finds) the run folder on the shared
volume; then one `deepfleet train` launcher per pod meets the others at a c10d rendezvous on
pod 0, and torch's elastic agent runs one process per GPU. The PyTorchJob uses the
operator's elastic mode (Worker replicas only, elasticPolicy), in which the operator does
not set RANK/WORLD_SIZE, so the launcher starts its own per-GPU workers.

Restarts are tied to checkpoints: with resume on, a failed pod is restarted (up to the
backoff limit) and continues from the latest committed checkpoint on the shared volume; with
resume off a pod restart would silently start training over, so a failed pod fails the job.
Inside a pod the agent restarts crashed workers (--max-restarts) either way.
"""

from __future__ import annotations

from typing import Any

from deepfleet.cluster import _k8s_pod as pod
from deepfleet.cluster._commands import JOB_FILE, prepare_args, run_dir, train_args
from deepfleet.cluster._spec import ClusterSpec

# The operator labels each replica pod with its index; pod i is node i.
REPLICA_INDEX = "metadata.labels['training.kubeflow.org/replica-index']"
COMPLETION_INDEX = "metadata.annotations['batch.kubernetes.io/job-completion-index']"


def restart_policy(spec: ClusterSpec) -> str:
    return "OnFailure" if spec.resume else "Never"


def backoff(spec: ClusterSpec) -> int:
    return spec.max_restarts if spec.resume else 0


def _node_rank_env(field_path: str) -> list[dict[str, Any]]:
    return [{"name": "NODE_RANK", "valueFrom": {"fieldRef": {"fieldPath": field_path}}}]


def pod_spec(
    spec: ClusterSpec,
    *,
    rdzv: str,
    node_rank: str,
    container: str = "pytorch",
    rank_env: list[dict[str, Any]] | None = None,
    port_name: str | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """One node's pod: an init container that makes (or finds) the run folder, then the
    node's launcher. `node_rank` and `rdzv` may be $(VAR) references Kubernetes expands."""
    volumes, mounts = pod.train_volumes(spec.name, spec.data_key_secret, spec.shared_volume)
    folder = run_dir(spec.name, spec.runs_dir)
    env = pod.train_env(spec.s3_secret_name)
    security = pod.container_security(read_only_root=False)
    prepare = {
        "name": "prepare",
        "image": spec.image,
        "imagePullPolicy": "IfNotPresent",
        "command": ["deepfleet"],
        "args": prepare_args(JOB_FILE, folder),
        "env": env,
        "volumeMounts": mounts,
        "securityContext": security,
    }
    train: dict[str, Any] = {
        # The operator finds the training container by this name.
        "name": container,
        "image": spec.image,
        "imagePullPolicy": "IfNotPresent",
        "command": ["deepfleet"],
        "args": train_args(
            folder,
            nproc=spec.nproc,
            nnodes=spec.nodes,
            node_rank=node_rank,
            rdzv=rdzv,
            max_restarts=spec.max_restarts,
            resume=spec.resume,
        ),
        "env": (rank_env or []) + env,
    }
    if port_name:
        train["ports"] = [{"name": port_name, "containerPort": spec.rdzv_port, "protocol": "TCP"}]
    train |= {"volumeMounts": mounts, "securityContext": security}
    resources = pod.gpu_resources(spec.gpus_per_node)
    if resources:
        train["resources"] = resources
    body: dict[str, Any] = {
        **extra,
        "restartPolicy": restart_policy(spec),
        "securityContext": pod.pod_security(),
        "initContainers": ([pod.copy_key_container(spec.image)] if spec.data_key_secret else [])
        + [prepare],
        "containers": [train],
        "volumes": volumes,
    }
    tolerations = pod.gpu_tolerations(spec.gpus_per_node)
    if tolerations:
        body["tolerations"] = tolerations
    return body


def pytorchjob(spec: ClusterSpec) -> dict[str, Any]:
    """kubeflow.org/v1 PyTorchJob in elastic mode: `nodes` Worker pods, one launcher each,
    the rendezvous on worker 0 (the operator gives each worker pod a Service of its name)."""
    rdzv = f"{spec.name}-worker-0:{spec.rdzv_port}"
    template = {
        "metadata": {"labels": pod.labels(spec.name, "train")},
        # The operator reads the rendezvous port from the port named pytorchjob-port.
        "spec": pod_spec(
            spec,
            rdzv=rdzv,
            node_rank="$(NODE_RANK)",
            rank_env=_node_rank_env(REPLICA_INDEX),
            port_name="pytorchjob-port",
        ),
    }
    return {
        "apiVersion": "kubeflow.org/v1",
        "kind": "PyTorchJob",
        "metadata": pod.metadata(spec.name, spec.namespace, spec.name, "train"),
        "spec": {
            "runPolicy": {"backoffLimit": backoff(spec), "cleanPodPolicy": "Running"},
            "elasticPolicy": {
                "rdzvBackend": "c10d",
                "rdzvPort": spec.rdzv_port,
                "minReplicas": spec.nodes,
                "maxReplicas": spec.nodes,
                "maxRestarts": spec.max_restarts,
                "nProcPerNode": spec.nproc,
            },
            "pytorchReplicaSpecs": {
                "Worker": {
                    "replicas": spec.nodes,
                    "restartPolicy": restart_policy(spec),
                    "template": template,
                },
            },
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
            "ports": [
                {
                    "name": "rdzv",
                    "port": spec.rdzv_port,
                    "targetPort": spec.rdzv_port,
                    "protocol": "TCP",
                }
            ],
        },
    }


def indexed_job(spec: ClusterSpec) -> dict[str, Any]:
    """batch/v1 Job in Indexed mode: pod i is node i; pod 0 hosts the rendezvous."""
    rdzv = f"{spec.name}-0.{rdzv_service_name(spec)}:{spec.rdzv_port}"
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": pod.metadata(spec.name, spec.namespace, spec.name, "train"),
        "spec": {
            "completionMode": "Indexed",
            "completions": spec.nodes,
            "parallelism": spec.nodes,
            "backoffLimit": backoff(spec),
            "template": {
                "metadata": {"labels": pod.labels(spec.name, "train")},
                # subdomain + the Service above = DNS names for the pods.
                "spec": pod_spec(
                    spec,
                    rdzv=rdzv,
                    node_rank="$(NODE_RANK)",
                    rank_env=_node_rank_env(COMPLETION_INDEX),
                    port_name="rdzv",
                    subdomain=rdzv_service_name(spec),
                ),
            },
        },
    }
