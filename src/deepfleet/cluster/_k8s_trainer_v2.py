"""Training under Kubeflow Trainer v2: a TrainJob and the TrainingRuntime it runs.

Trainer v2 builds a JobSet from a runtime (the pod template, the torch ML policy) and the
TrainJob (image, command, arguments, environment, nodes, resources). deepfleet writes its own
namespaced TrainingRuntime per job because its pods need what the shipped `torch-distributed`
runtime lacks: the `prepare` init container, the job file, the data key, the shared volume
and the security context. TrainJob patches cannot add init containers or volumes, so they
live in the runtime.

The Trainer's torch plugin injects into the container named `node`: PET_NNODES,
PET_NPROC_PER_NODE, PET_NODE_RANK (the Job completion index), PET_MASTER_ADDR (pod 0 of the
JobSet, `<job>-node-0-0.<job>`) and PET_MASTER_PORT (29500). The launcher's command line names
them as $(VAR), which Kubernetes expands, so the rendezvous and ranks are the Trainer's own.
"""

from __future__ import annotations

from typing import Any

from deepfleet.cluster import _k8s_pod as pod
from deepfleet.cluster import _k8s_train
from deepfleet.cluster._spec import ClusterSpec

API = "trainer.kubeflow.org/v1alpha1"
GROUP = "trainer.kubeflow.org"
# The Trainer finds the training Job and container by these (pkg/constants in kubeflow/trainer).
ANCESTOR = {"trainer.kubeflow.org/trainjob-ancestor-step": "trainer"}
NODE = "node"
TRAINER_PORT = 29500
RDZV = "$(PET_MASTER_ADDR):$(PET_MASTER_PORT)"
NODE_RANK = "$(PET_NODE_RANK)"


def runtime_name(spec: ClusterSpec) -> str:
    return f"{spec.name}-runtime"


def _pod_spec(spec: ClusterSpec) -> dict[str, Any]:
    return _k8s_train.pod_spec(spec, rdzv=RDZV, node_rank=NODE_RANK, container=NODE)


def training_runtime(spec: ClusterSpec) -> dict[str, Any]:
    """TrainingRuntime (namespaced): one replicated Job `node` whose pods run deepfleet's
    prepare step, then the node's launcher; the TrainJob fills in the launcher."""
    body = _pod_spec(spec)
    node = body["containers"][0]
    # What the TrainJob's trainer sets is left out here, so it is written in one place.
    for key in ("command", "args", "env", "resources"):
        node.pop(key, None)
    return {
        "apiVersion": API,
        "kind": "TrainingRuntime",
        "metadata": pod.metadata(runtime_name(spec), spec.namespace, spec.name, "train"),
        "spec": {
            "mlPolicy": {"numNodes": spec.nodes, "torch": {}},
            "template": {
                "spec": {
                    "replicatedJobs": [
                        {
                            "name": NODE,
                            "template": {
                                "metadata": {"labels": dict(ANCESTOR)},
                                "spec": {
                                    "backoffLimit": _k8s_train.backoff(spec),
                                    "template": {
                                        # The NetworkPolicy selects the pods by these.
                                        "metadata": {"labels": pod.labels(spec.name, "train")},
                                        "spec": body,
                                    },
                                },
                            },
                        }
                    ]
                }
            },
        },
    }


def trainjob(spec: ClusterSpec) -> dict[str, Any]:
    """TrainJob: the same image, command line, environment and GPUs as the PyTorchJob."""
    node = _pod_spec(spec)["containers"][0]
    trainer: dict[str, Any] = {
        "image": spec.image,
        "command": node["command"],
        "args": node["args"],
        "env": node["env"],
        "numNodes": spec.nodes,
        "numProcPerNode": spec.nproc,
    }
    if "resources" in node:
        trainer["resourcesPerNode"] = node["resources"]
    return {
        "apiVersion": API,
        "kind": "TrainJob",
        "metadata": pod.metadata(spec.name, spec.namespace, spec.name, "train"),
        "spec": {
            "runtimeRef": {
                "name": runtime_name(spec),
                "apiGroup": GROUP,
                "kind": "TrainingRuntime",
            },
            "trainer": trainer,
        },
    }
