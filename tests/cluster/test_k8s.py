"""Kubernetes manifests: schema-valid (offline OpenAPI + the PyTorchJob CRD schema), snapshot
stable, and saying what they must: GPUs, shared volume, secrets as files, resume ties."""

from __future__ import annotations

import copy
import tomllib

import jsonschema
import pytest
import yaml
from cluster_support import check_snapshot, validate_object, walk

from deepfleet.cluster import ClusterSpec, ServeSpec, k8s_name, render_k8s, render_serve
from deepfleet.errors import UserError

JOB_TOML = '[run]\nname = "digits"\nruns_dir = "/workspace/runs"\n\n[data]\nsource = "digits"\n'

CASES = {
    "k8s-2x4-resume": ClusterSpec(
        name="digits",
        nodes=2,
        gpus_per_node=4,
        image="registry.example.com/deepfleet:0.1.0",
        resume=True,
        max_restarts=2,
        data_key_secret="digits-data-key",
        storage="200Gi",
        storage_class="nfs",
    ),
    "k8s-1x0": ClusterSpec(name="digits", nodes=1, gpus_per_node=0, image="deepfleet:0.1.0"),
    "k8s-4x8": ClusterSpec(
        name="big", nodes=4, gpus_per_node=8, image="deepfleet:0.1.0", namespace="ml", resume=True
    ),
}
SERVE = ServeSpec(
    name="digits",
    bundle="runs/digits/bundle",
    image="deepfleet:0.1.0",
    gpus=1,
    replicas=2,
    max_replicas=6,
)


def docs(text: str) -> list[dict]:
    return [d for d in yaml.safe_load_all(text) if d]


def rendered(case: str) -> dict[str, list[dict]]:
    """The objects of each file, less the NetworkPolicy that heads each training file
    (test_k8s_network.py covers it)."""
    return {
        name: [o for o in docs(text) if o["kind"] != "NetworkPolicy"]
        for name, text in render_k8s(CASES[case], JOB_TOML).items()
    }


@pytest.mark.parametrize("case", sorted(CASES))
def test_training_manifests_are_valid_and_match_snapshots(case):
    files = render_k8s(CASES[case], JOB_TOML)
    assert sorted(files) == ["common.yaml", "indexed-job.yaml", "pytorchjob.yaml"]
    for name, text in files.items():
        objects = docs(text)
        assert objects, name
        for obj in objects:
            validate_object(obj)
        check_snapshot(case, name, text)


def test_serve_manifests_are_valid_and_match_snapshot():
    files = render_serve(SERVE)
    objects = docs(files["serve.yaml"])
    assert [o["kind"] for o in objects] == ["Deployment", "Service", "HorizontalPodAutoscaler"]
    for obj in objects:
        validate_object(obj)
    check_snapshot("k8s-serve", "serve.yaml", files["serve.yaml"])


def _pytorchjob() -> dict:
    return rendered("k8s-2x4-resume")["pytorchjob.yaml"][0]


def _master_too(o: dict) -> None:
    specs = o["spec"]["pytorchReplicaSpecs"]
    specs["Master"] = {**copy.deepcopy(specs["Worker"]), "replicas": 2}


@pytest.mark.parametrize(
    "breakage",
    [
        _master_too,
        lambda o: o["spec"]["pytorchReplicaSpecs"].__setitem__(
            "Master", o["spec"]["pytorchReplicaSpecs"].pop("Worker")
        ),
        lambda o: o["spec"]["pytorchReplicaSpecs"]["Worker"]["template"]["spec"]["containers"][
            0
        ].__setitem__("name", "trainer"),
        lambda o: o["spec"]["runPolicy"].__setitem__("cleanPodPolicy", "Sometimes"),
        lambda o: o["spec"]["elasticPolicy"].__setitem__("rdzvBackend", "zookeeper"),
        lambda o: o["spec"]["pytorchReplicaSpecs"]["Worker"]["template"]["spec"]["containers"][
            0
        ].__setitem__("gpus", 4),
        lambda o: o["spec"].__setitem__("replicas", 2),
    ],
)
def test_crd_schema_rejects_what_the_operator_rejects(breakage):
    obj = copy.deepcopy(_pytorchjob())
    validate_object(obj)
    breakage(obj)
    with pytest.raises(jsonschema.ValidationError):
        validate_object(obj)


@pytest.mark.parametrize(
    "breakage",
    [
        lambda j: j["spec"].__setitem__("completionMode", 3),
        lambda j: j["spec"]["template"]["spec"]["containers"][0].__setitem__("gpu", 1),
        lambda j: j["spec"]["template"]["spec"].__setitem__("restartPolicy", ["Never"]),
    ],
)
def test_kubernetes_schema_is_strict(breakage):
    job = copy.deepcopy(rendered("k8s-2x4-resume")["indexed-job.yaml"][1])
    validate_object(job)
    breakage(job)
    with pytest.raises(jsonschema.ValidationError):
        validate_object(job)


def _containers(template: dict) -> tuple[dict, dict]:
    """(the prepare init container, the training container)."""
    prepare = template["spec"]["initContainers"][-1]
    assert prepare["name"] == "prepare"
    (train,) = template["spec"]["containers"]
    return prepare, train


def _train_pods(case: str) -> list[tuple[str, dict]]:
    files = rendered(case)
    job = files["indexed-job.yaml"][1]
    pods = [("indexed", job["spec"]["template"])]
    for role, replica in files["pytorchjob.yaml"][0]["spec"]["pytorchReplicaSpecs"].items():
        pods.append((role, replica["template"]))
    return pods


def test_gpus_launchers_and_shared_volume():
    for _, template in _train_pods("k8s-4x8"):
        prepare, container = _containers(template)
        assert container["resources"] == {"limits": {"nvidia.com/gpu": 8}}
        assert "resources" not in prepare
        # Every pod makes or finds the same run folder, then trains it.
        assert prepare["args"] == [
            "cluster",
            "prepare",
            "/etc/deepfleet/job/job.toml",
            "--run-dir",
            "/workspace/runs/big",
        ]
        args = container["args"]
        assert args[:4] == ["train", "/workspace/runs/big", "--nproc", "8"]
        assert args[args.index("--nnodes") + 1] == "4"
        for c in (prepare, container):
            mounts = {m["name"]: m for m in c["volumeMounts"]}
            assert mounts["workspace"]["mountPath"] == "/workspace"
        claim = {v["name"]: v for v in template["spec"]["volumes"]}["workspace"]
        assert claim["persistentVolumeClaim"]["claimName"] == "big-workspace"
    files = rendered("k8s-4x8")
    pvc, config = files["common.yaml"]
    assert pvc["metadata"]["name"] == "big-workspace"
    assert pvc["spec"]["accessModes"] == ["ReadWriteMany"]
    # The job file travels in the ConfigMap with its run folders on the shared volume.
    assert 'runs_dir = "/workspace/runs"' in config["data"]["job.toml"]
    ptj = files["pytorchjob.yaml"][0]["spec"]
    assert list(ptj["pytorchReplicaSpecs"]) == ["Worker"]
    assert ptj["pytorchReplicaSpecs"]["Worker"]["replicas"] == 4
    assert (ptj["elasticPolicy"]["minReplicas"], ptj["elasticPolicy"]["maxReplicas"]) == (4, 4)
    assert ptj["elasticPolicy"]["nProcPerNode"] == 8
    assert files["indexed-job.yaml"][1]["spec"]["completions"] == 4


def test_cpu_only_single_node():
    files = rendered("k8s-1x0")
    assert files["pytorchjob.yaml"][0]["spec"]["pytorchReplicaSpecs"]["Worker"]["replicas"] == 1
    for _, template in _train_pods("k8s-1x0"):
        _, container = _containers(template)
        assert "resources" not in container and "tolerations" not in template["spec"]
        assert container["args"][2:4] == ["--nproc", "1"]
        assert "--nnodes" not in container["args"]


def test_rendezvous_is_c10d_on_pod_zero_of_the_indexed_job():
    service, job = rendered("k8s-2x4-resume")["indexed-job.yaml"]
    assert service["spec"]["clusterIP"] == "None"
    template = job["spec"]["template"]
    # Pods of an Indexed Job are named <job>-<index>; with subdomain = the headless Service
    # pod 0 is reachable as <job>-0.<service>.
    assert template["spec"]["subdomain"] == service["metadata"]["name"]
    args = template["spec"]["containers"][0]["args"]
    host = f"{job['metadata']['name']}-0.{service['metadata']['name']}"
    assert args[args.index("--rdzv") + 1] == f"{host}:29500"
    assert args[args.index("--node-rank") + 1] == "$(NODE_RANK)"
    env = {e["name"]: e for e in template["spec"]["containers"][0]["env"]}
    assert "job-completion-index" in env["NODE_RANK"]["valueFrom"]["fieldRef"]["fieldPath"]
    selector = service["spec"]["selector"]
    assert selector.items() <= template["metadata"]["labels"].items()
    assert job["spec"]["completionMode"] == "Indexed"


def test_pytorchjob_is_elastic_with_the_rendezvous_on_worker_zero():
    job = _pytorchjob()
    # Elastic mode, Worker replicas only: the operator then sets no RANK/WORLD_SIZE, which
    # would tell `deepfleet train` it is already one rank rather than the node's launcher.
    assert "Master" not in job["spec"]["pytorchReplicaSpecs"]
    policy = job["spec"]["elasticPolicy"]
    assert policy["rdzvBackend"] == "c10d" and policy["rdzvPort"] == 29500
    template = job["spec"]["pytorchReplicaSpecs"]["Worker"]["template"]
    _, container = _containers(template)
    args = container["args"]
    # The operator gives pod i of the Worker replicas the name and Service <job>-worker-i.
    assert args[args.index("--rdzv") + 1] == "digits-worker-0:29500"
    assert args[args.index("--node-rank") + 1] == "$(NODE_RANK)"
    env = {e["name"]: e for e in container["env"]}
    assert "replica-index" in env["NODE_RANK"]["valueFrom"]["fieldRef"]["fieldPath"]
    assert "RANK" not in env and "WORLD_SIZE" not in env
    assert container["ports"][0] == {
        "name": "pytorchjob-port",
        "containerPort": 29500,
        "protocol": "TCP",
    }


@pytest.mark.parametrize("case,resume", [("k8s-2x4-resume", True), ("k8s-1x0", False)])
def test_restarts_are_tied_to_resume(case, resume):
    files = rendered(case)
    job = files["indexed-job.yaml"][1]
    ptj = files["pytorchjob.yaml"][0]
    spec = CASES[case]
    expect_policy = "OnFailure" if resume else "Never"
    expect_backoff = spec.max_restarts if resume else 0
    assert job["spec"]["backoffLimit"] == expect_backoff
    assert ptj["spec"]["runPolicy"]["backoffLimit"] == expect_backoff
    for role, template in _train_pods(case):
        assert template["spec"]["restartPolicy"] == expect_policy, role
        args = template["spec"]["containers"][0]["args"]
        assert ("--resume" in args) is resume
        assert args[args.index("--max-restarts") + 1] == str(spec.max_restarts)
    for replica in ptj["spec"]["pytorchReplicaSpecs"].values():
        assert replica["restartPolicy"] == expect_policy


def test_secrets_are_mounted_files_never_values():
    everything = [o for objs in rendered("k8s-2x4-resume").values() for o in objs]
    everything += docs(render_serve(SERVE)["serve.yaml"])
    assert not [o for o in everything if o["kind"] == "Secret"]
    # No secret value or secretKeyRef in any environment: only paths to mounted files.
    for key, value in walk(everything):
        assert key != "secretKeyRef"
        if key == "env" and isinstance(value, list):
            for var in value:
                if "KEY" in var["name"] or "TOKEN" in var["name"]:
                    assert var["value"].startswith("/etc/deepfleet/secrets/"), var
    for _, template in _train_pods("k8s-2x4-resume"):
        volumes = {v["name"]: v for v in template["spec"]["volumes"]}
        assert volumes["data-key"]["secret"]["secretName"] == "digits-data-key"
        assert volumes["keys"]["emptyDir"]["medium"] == "Memory"
        # First the key is copied from its Secret into memory, private to the pod's user...
        copy_key = template["spec"]["initContainers"][0]
        assert copy_key["command"] == [
            "install",
            "-m",
            "0600",
            "/etc/deepfleet/secrets/data-key/key",
            "/run/deepfleet/keys/data.key",
        ]
        # ...then preparing and training read it there (the job's data.key names it).
        for container in _containers(template):
            mounts = {m["name"]: m for m in container["volumeMounts"]}
            assert mounts["keys"] == {
                "name": "keys",
                "mountPath": "/run/deepfleet/keys",
                "readOnly": True,
            }
            assert "data-key" not in mounts
    deployment = docs(render_serve(SERVE)["serve.yaml"])[0]
    volumes = {v["name"]: v for v in deployment["spec"]["template"]["spec"]["volumes"]}
    assert volumes["api-token"]["secret"]["secretName"] == "digits-api-token"
    # Without --data-key-secret nothing refers to a data key.
    assert "data-key" not in yaml.safe_dump(rendered("k8s-1x0"))


def test_every_pod_runs_as_non_root():
    templates = [t for _, t in _train_pods("k8s-2x4-resume")]
    templates.append(docs(render_serve(SERVE)["serve.yaml"])[0]["spec"]["template"])
    for template in templates:
        assert template["spec"]["securityContext"]["runAsNonRoot"] is True
        assert template["spec"]["securityContext"]["runAsUser"] != 0
        for container in template["spec"]["containers"] + template["spec"].get(
            "initContainers", []
        ):
            security = container["securityContext"]
            assert security["allowPrivilegeEscalation"] is False
            assert security["capabilities"]["drop"] == ["ALL"]


def test_serve_probes_autoscaler_and_service_agree():
    deployment, service, hpa = docs(render_serve(SERVE)["serve.yaml"])
    pod = deployment["spec"]["template"]
    (container,) = pod["spec"]["containers"]
    assert container["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
    assert container["livenessProbe"]["httpGet"]["path"] == "/v2/health/live"
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["args"][:2] == ["serve", "/workspace/runs/digits/bundle"]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert service["spec"]["selector"].items() <= pod["metadata"]["labels"].items()
    assert deployment["spec"]["selector"]["matchLabels"] == service["spec"]["selector"]
    assert hpa["spec"]["scaleTargetRef"]["name"] == deployment["metadata"]["name"]
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (2, 6)
    # The HPA's utilisation is relative to the CPU request, so there must be one.
    assert container["resources"]["requests"]["cpu"]


def test_names_and_bad_specs():
    assert k8s_name("Digits_V2.run") == "digits-v2-run"
    assert k8s_name("9lives") == "df-9lives"
    assert len(k8s_name("x" * 100)) <= 40
    with pytest.raises(UserError, match="--nodes"):
        ClusterSpec(name="a", nodes=0)
    with pytest.raises(UserError, match="--storage"):
        ClusterSpec(name="a", storage="lots")
    with pytest.raises(UserError, match="--image"):
        ClusterSpec(name="a", image="has space")
    with pytest.raises(UserError, match="--data-key-secret"):
        ClusterSpec(name="a", data_key_secret="Bad_Name")
    with pytest.raises(UserError, match="--replicas"):
        ServeSpec(name="a", bundle="b", replicas=9, max_replicas=8)


def test_job_file_names_the_mounted_key_only_with_a_secret(tmp_path):
    from deepfleet.cluster import cluster_job_toml
    from deepfleet.config import DataSection

    job = tmp_path / "job.toml"
    job.write_text('[run]\nname = "enc"\n\n[data]\nsource = "digits"\n')
    assert "key" not in tomllib.loads(cluster_job_toml(job))["data"]
    if "key" not in DataSection.model_fields:
        pytest.skip("this build has no encryption at rest (data.key)")
    with_key = tomllib.loads(cluster_job_toml(job, data_key=True))
    assert with_key["data"]["key"] == "/run/deepfleet/keys/data.key"
    # A job that encrypts (data.key set) cannot be sent without the key's Secret.
    job.write_text('[run]\nname = "enc"\n\n[data]\nsource = "digits"\nkey = "my.key"\n')
    with pytest.raises(UserError, match="--data-key-secret"):
        cluster_job_toml(job)


def test_why_the_pytorchjob_is_elastic(monkeypatch):
    """A Master-mode PyTorchJob gives every pod RANK and WORLD_SIZE (per node), which tells
    `deepfleet train` it is already a rank; elastic mode sets only PET_* variables, so the
    launcher starts its per-GPU workers."""
    from deepfleet.parallel import LaunchOptions, in_worker, must_launch

    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "TORCHELASTIC_RUN_ID", "SLURM_PROCID"):
        monkeypatch.delenv(name, raising=False)
    options = LaunchOptions(nproc=4, nnodes=2, node_rank=0, rdzv="digits-worker-0:29500")
    monkeypatch.setenv("PET_RDZV_ENDPOINT", "digits-worker-0:29500")
    monkeypatch.setenv("PET_NNODES", "2:2")
    assert not in_worker() and must_launch(options)
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert in_worker() and not must_launch(options)
