"""Serving on Kubernetes: a Deployment of `deepfleet serve`, its Service and an autoscaler."""

from __future__ import annotations

import posixpath
from typing import Any

from deepfleet.cluster import _k8s_pod as pod
from deepfleet.cluster._commands import TOKEN_DIR, TOKEN_ITEM, WORKSPACE, serve_args
from deepfleet.cluster._spec import ServeSpec

# Open Inference Protocol v2 health endpoints.
READY = "/v2/health/ready"
LIVE = "/v2/health/live"


def serve_name(spec: ServeSpec) -> str:
    return f"{spec.name}-serve"


def bundle_path(spec: ServeSpec) -> str:
    """A relative bundle path is inside the shared volume, where training exported it."""
    if posixpath.isabs(spec.bundle):
        return spec.bundle
    return posixpath.normpath(posixpath.join(WORKSPACE, spec.bundle))


def _container(spec: ServeSpec) -> dict[str, Any]:
    token_file = f"{TOKEN_DIR}/{TOKEN_ITEM}"
    probe = {"port": "http", "scheme": "HTTP"}
    container: dict[str, Any] = {
        "name": "serve",
        "image": spec.image,
        "imagePullPolicy": "IfNotPresent",
        "command": ["deepfleet"],
        "args": serve_args(
            bundle_path(spec), port=spec.port, token_file=token_file, gpu=spec.gpus > 0
        ),
        "env": [
            {"name": "PYTHONUNBUFFERED", "value": "1"},
            # The root file system is read-only; caches go to the /tmp volume.
            {"name": "HOME", "value": "/tmp"},
        ],
        "ports": [{"name": "http", "containerPort": spec.port, "protocol": "TCP"}],
        # Ready only once the bundle is loaded (and its signature checked), so no request
        # reaches a replica that cannot answer; live as long as the event loop answers.
        "readinessProbe": {
            "httpGet": {"path": READY, **probe},
            "initialDelaySeconds": 5,
            "periodSeconds": 5,
            "failureThreshold": 3,
        },
        "livenessProbe": {
            "httpGet": {"path": LIVE, **probe},
            "initialDelaySeconds": 15,
            "periodSeconds": 10,
            "failureThreshold": 3,
        },
        # The autoscaler divides CPU use by this request.
        "resources": {
            "requests": {"cpu": "1", "memory": "2Gi"},
            "limits": {"memory": "4Gi", **({pod.GPU: spec.gpus} if spec.gpus else {})},
        },
        "volumeMounts": [
            {"name": "workspace", "mountPath": WORKSPACE, "readOnly": True},
            {"name": "api-token", "mountPath": TOKEN_DIR, "readOnly": True},
            {"name": "tmp", "mountPath": "/tmp"},
        ],
        "securityContext": pod.container_security(read_only_root=True),
    }
    return container


def deployment(spec: ServeSpec) -> dict[str, Any]:
    name = serve_name(spec)
    body: dict[str, Any] = {
        "securityContext": pod.pod_security(),
        "automountServiceAccountToken": False,
        "containers": [_container(spec)],
        "volumes": [
            {
                "name": "workspace",
                "persistentVolumeClaim": {
                    "claimName": pod.workspace_claim(spec.name),
                    "readOnly": True,
                },
            },
            pod.secret_volume("api-token", spec.token_secret_name, TOKEN_ITEM),
            {"name": "tmp", "emptyDir": {}},
        ],
    }
    tolerations = pod.gpu_tolerations(spec.gpus)
    if tolerations:
        body["tolerations"] = tolerations
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": pod.metadata(name, spec.namespace, spec.name, "serve"),
        "spec": {
            "replicas": spec.replicas,
            "selector": {"matchLabels": pod.labels(spec.name, "serve")},
            "template": {"metadata": {"labels": pod.labels(spec.name, "serve")}, "spec": body},
        },
    }


def service(spec: ServeSpec) -> dict[str, Any]:
    name = serve_name(spec)
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": pod.metadata(name, spec.namespace, spec.name, "serve"),
        "spec": {
            "type": "ClusterIP",
            "selector": pod.labels(spec.name, "serve"),
            "ports": [{"name": "http", "port": spec.port, "targetPort": "http", "protocol": "TCP"}],
        },
    }


def autoscaler(spec: ServeSpec) -> dict[str, Any]:
    name = serve_name(spec)
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": pod.metadata(name, spec.namespace, spec.name, "serve"),
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": name},
            "minReplicas": spec.replicas,
            "maxReplicas": spec.max_replicas,
            "metrics": [
                {
                    "type": "Resource",
                    "resource": {
                        "name": "cpu",
                        "target": {
                            "type": "Utilization",
                            "averageUtilization": spec.target_cpu_percent,
                        },
                    },
                }
            ],
        },
    }
