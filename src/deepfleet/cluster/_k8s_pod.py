"""Pieces every deepfleet pod shares: labels, security context, volumes, GPU resources."""

from __future__ import annotations

from typing import Any

from deepfleet.cluster._commands import (
    DATA_KEY_DIR,
    DATA_KEY_FILE,
    DATA_KEY_ITEM,
    JOB_DIR,
    KEYS_DIR,
    WORKSPACE,
)

# The image's non-root user (see the Dockerfile); fsGroup makes the shared volume writable.
RUN_AS = 10001
GPU = "nvidia.com/gpu"


def labels(name: str, component: str) -> dict[str, str]:
    return {
        "app.kubernetes.io/name": "deepfleet",
        "app.kubernetes.io/instance": name,
        "app.kubernetes.io/component": component,
    }


def metadata(name: str, namespace: str, instance: str, component: str) -> dict[str, Any]:
    return {"name": name, "namespace": namespace, "labels": labels(instance, component)}


def pod_security() -> dict[str, Any]:
    return {
        "runAsNonRoot": True,
        "runAsUser": RUN_AS,
        "runAsGroup": RUN_AS,
        "fsGroup": RUN_AS,
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def container_security(read_only_root: bool) -> dict[str, Any]:
    return {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": read_only_root,
        "capabilities": {"drop": ["ALL"]},
    }


def gpu_resources(gpus: int) -> dict[str, Any]:
    """GPUs as an extended resource: a limit, which Kubernetes also uses as the request."""
    return {"limits": {GPU: gpus}} if gpus else {}


def gpu_tolerations(gpus: int) -> list[dict[str, Any]]:
    """GPU nodes are commonly tainted so that only GPU pods land there."""
    if not gpus:
        return []
    return [{"key": GPU, "operator": "Exists", "effect": "NoSchedule"}]


def workspace_claim(name: str) -> str:
    return f"{name}-workspace"


def job_config_name(name: str) -> str:
    return f"{name}-job"


def train_volumes(name: str, data_key_secret: str | None, shared: bool = True) -> tuple[list, list]:
    """(volumes, mounts) of a training pod: the workspace (unless the run lives on object
    storage), the job file, shm, the data key."""
    volumes: list[dict[str, Any]] = []
    mounts: list[dict[str, Any]] = []
    if shared:
        volumes.append(
            {"name": "workspace", "persistentVolumeClaim": {"claimName": workspace_claim(name)}}
        )
        mounts.append({"name": "workspace", "mountPath": WORKSPACE})
    volumes += [
        {"name": "job", "configMap": {"name": job_config_name(name)}},
        # DataLoader workers pass batches through /dev/shm; the container default is 64 MiB.
        {"name": "dshm", "emptyDir": {"medium": "Memory"}},
    ]
    mounts += [
        {"name": "job", "mountPath": JOB_DIR, "readOnly": True},
        {"name": "dshm", "mountPath": "/dev/shm"},
    ]
    if data_key_secret:
        volumes += [
            secret_volume("data-key", data_key_secret, DATA_KEY_ITEM),
            {"name": "keys", "emptyDir": {"medium": "Memory", "sizeLimit": "1Mi"}},
        ]
        mounts.append({"name": "keys", "mountPath": KEYS_DIR, "readOnly": True})
    return volumes, mounts


def copy_key_container(image: str) -> dict[str, Any]:
    """Init container: the data key from its Secret into memory, 0600, owned by the pod user
    (no shell: coreutils `install` does the copy and the mode in one step)."""
    return {
        "name": "data-key",
        "image": image,
        "imagePullPolicy": "IfNotPresent",
        "command": ["install", "-m", "0600", f"{DATA_KEY_DIR}/{DATA_KEY_ITEM}", DATA_KEY_FILE],
        "volumeMounts": [
            {"name": "data-key", "mountPath": DATA_KEY_DIR, "readOnly": True},
            {"name": "keys", "mountPath": KEYS_DIR},
        ],
        "securityContext": container_security(read_only_root=True),
    }


def secret_volume(volume: str, secret: str, item: str) -> dict[str, Any]:
    """A Secret as a file readable by the pod's group only: the value is never in a manifest."""
    return {
        "name": volume,
        "secret": {
            "secretName": secret,
            "defaultMode": 0o440,
            "items": [{"key": item, "path": item}],
        },
    }


def train_env(s3_secret: str | None = None) -> list[dict[str, Any]]:
    """The training containers' environment; with an S3 Secret, its credentials as references
    (botocore reads AWS_* from the environment; the values never appear in a manifest)."""
    env: list[dict[str, Any]] = [{"name": "PYTHONUNBUFFERED", "value": "1"}]
    if s3_secret:
        env += [
            _secret_env("AWS_ACCESS_KEY_ID", s3_secret),
            _secret_env("AWS_SECRET_ACCESS_KEY", s3_secret),
            # Temporary credentials carry a session token; long-lived keys have none.
            _secret_env("AWS_SESSION_TOKEN", s3_secret, optional=True),
        ]
    return env


def _secret_env(var: str, secret: str, optional: bool = False) -> dict[str, Any]:
    ref: dict[str, Any] = {"name": secret, "key": var}
    if optional:
        ref["optional"] = True
    return {"name": var, "valueFrom": {"secretKeyRef": ref}}
