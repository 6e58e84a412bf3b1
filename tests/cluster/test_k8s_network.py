"""The NetworkPolicy in every training manifest: valid, and admitting to the job's pods only
the job's own pods (torch's rendezvous store and collectives have no authentication)."""

from __future__ import annotations

import pytest
import yaml
from cluster_support import validate_object

from deepfleet.cluster import ClusterSpec, render_k8s

JOB_TOML = '[run]\nname = "digits"\nruns_dir = "/workspace/runs"\n'
SPECS = {
    "v1": ClusterSpec(name="digits", nodes=2, gpus_per_node=4, namespace="ml"),
    "v2": ClusterSpec(name="digits", nodes=2, gpus_per_node=4, namespace="ml", trainer="v2"),
}
TRAINING_FILES = {"v1": ["indexed-job.yaml", "pytorchjob.yaml"], "v2": ["trainjob.yaml"]}


def _pod_templates(objects: list[dict]) -> list[dict]:
    """Every pod template in the objects, wherever the kind keeps it."""
    found = []

    def walk(node):
        if isinstance(node, dict):
            if "spec" in node and "containers" in node.get("spec", {}):
                found.append(node)
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(objects)
    return found


def _matches(selector: dict, labels: dict) -> bool:
    """Kubernetes' matchLabels rule: every selector label present with the same value."""
    assert set(selector) == {"matchLabels"}, "only matchLabels is expected here"
    return selector["matchLabels"].items() <= labels.items()


@pytest.mark.parametrize("trainer", sorted(SPECS))
def test_each_training_file_admits_only_the_jobs_own_pods(trainer):
    files = render_k8s(SPECS[trainer], JOB_TOML)
    assert sorted(f for f in files if f != "common.yaml") == TRAINING_FILES[trainer]
    for name in TRAINING_FILES[trainer]:
        objects = [o for o in yaml.safe_load_all(files[name]) if o]
        (policy,) = [o for o in objects if o["kind"] == "NetworkPolicy"]
        validate_object(policy)
        assert objects[0] is policy, "the policy comes first, before any pod can start"
        spec = policy["spec"]
        assert policy["metadata"]["namespace"] == "ml"
        # Ingress only: the pods still reach DNS, object storage and the image registry.
        assert spec["policyTypes"] == ["Ingress"]
        (rule,) = spec["ingress"]
        assert "ports" not in rule, "collectives pick their ports at run time: all ports"
        (peer,) = rule["from"]
        assert set(peer) == {"podSelector"}, "no namespaceSelector / ipBlock: same namespace"
        templates = _pod_templates(objects)
        assert templates, name
        for template in templates:
            labels = template["metadata"]["labels"]
            # The policy covers every training pod and admits each of them as a peer...
            assert _matches(spec["podSelector"], labels), name
            assert _matches(peer["podSelector"], labels), name
        # ...and no pod of another deepfleet job (same labels but its instance name).
        other = dict(templates[0]["metadata"]["labels"], **{"app.kubernetes.io/instance": "x"})
        assert not _matches(peer["podSelector"], other)
        assert not _matches(spec["podSelector"], other)


def test_the_policy_refuses_what_the_api_refuses():
    import copy

    import jsonschema

    files = render_k8s(SPECS["v1"], JOB_TOML)
    policy = next(yaml.safe_load_all(files["pytorchjob.yaml"]))
    bad = copy.deepcopy(policy)
    bad["spec"]["ingress"][0]["from"][0]["podSelector"]["matchLabel"] = {"a": "b"}
    with pytest.raises(jsonschema.ValidationError):
        validate_object(bad)
