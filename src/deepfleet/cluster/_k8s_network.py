"""A NetworkPolicy that closes a training job's pods to everyone but the job itself.

torch's rendezvous store (TCPStore) and the gloo/NCCL collective connections have no
authentication: anything that can reach a training pod's ports can join the rendezvous or
write into the store. The policy admits traffic to the job's pods only from the job's own
pods (every port: the collectives pick theirs at run time). Egress stays open (DNS, object
storage, image pulls). It takes effect where the cluster's network plugin enforces
NetworkPolicy (Calico, Cilium, ...); elsewhere it is accepted and ignored.
"""

from __future__ import annotations

from typing import Any

from deepfleet.cluster import _k8s_pod as pod
from deepfleet.cluster._spec import ClusterSpec


def policy_name(spec: ClusterSpec) -> str:
    return f"{spec.name}-train-peers"


def network_policy(spec: ClusterSpec) -> dict[str, Any]:
    """networking.k8s.io/v1 NetworkPolicy: ingress to the job's pods from the job's pods only."""
    peers = {"matchLabels": pod.labels(spec.name, "train")}
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": pod.metadata(policy_name(spec), spec.namespace, spec.name, "train"),
        "spec": {
            "podSelector": peers,
            "policyTypes": ["Ingress"],
            "ingress": [{"from": [{"podSelector": peers}]}],
        },
    }
