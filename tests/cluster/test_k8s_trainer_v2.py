"""`deepfleet cluster k8s --trainer v2`: a Kubeflow Trainer TrainJob and its TrainingRuntime,
valid against the Trainer's own CRD schemas, running the same launcher as the PyTorchJob;
a run on object storage mounts no volume and takes its S3 credentials from a Secret."""

from __future__ import annotations

import copy
import re
import tomllib

import jsonschema
import pytest
import yaml
from cluster_support import check_snapshot, validate_object, walk
from test_commands import parse

from deepfleet.cli import run_cli
from deepfleet.cluster import ClusterSpec, render_k8s
from deepfleet.errors import UserError

JOB_TOML = '[run]\nname = "digits"\nruns_dir = "/workspace/runs"\n\n[data]\nsource = "digits"\n'
S3_JOB_TOML = (
    '[run]\nname = "digits"\nruns_dir = "s3://ml-runs/team"\n\n[data]\nsource = "digits"\n'
)
BASE = dict(name="digits", nodes=2, gpus_per_node=4, image="registry.example.com/deepfleet:0.1.0")
CASES = {
    "k8s-v2-2x4-resume": (
        ClusterSpec(
            **BASE, resume=True, max_restarts=2, data_key_secret="digits-data-key", trainer="v2"
        ),
        JOB_TOML,
    ),
    "k8s-v2-s3": (
        ClusterSpec(**BASE, trainer="v2", runs_dir="s3://ml-runs/team", s3_secret="team-s3"),
        S3_JOB_TOML,
    ),
}
# What the Trainer's torch plugin injects into the `node` container.
PET = {
    "$(PET_NODE_RANK)": "1",
    "$(PET_MASTER_ADDR):$(PET_MASTER_PORT)": "digits-node-0-0.digits:29500",
}


def objects(case: str) -> dict[str, list[dict]]:
    spec, job = CASES[case]
    return {
        name: [o for o in yaml.safe_load_all(text) if o]
        for name, text in render_k8s(spec, job).items()
    }


def _trainer_objects(case: str) -> tuple[dict, dict]:
    policy, runtime, trainjob = objects(case)["trainjob.yaml"]
    assert policy["kind"] == "NetworkPolicy"
    return runtime, trainjob


def _runtime_pod(runtime: dict) -> dict:
    (job,) = runtime["spec"]["template"]["spec"]["replicatedJobs"]
    return job["template"]["spec"]["template"]


@pytest.mark.parametrize("case", sorted(CASES))
def test_valid_against_the_trainer_crds_and_snapshots(case):
    spec, job = CASES[case]
    files = render_k8s(spec, job)
    assert sorted(files) == ["common.yaml", "trainjob.yaml"]
    for name, text in files.items():
        for obj in yaml.safe_load_all(text):
            validate_object(obj)
        check_snapshot(case, name, text)
    runtime, trainjob = _trainer_objects(case)
    # The CRDs' CEL rules, which the JSON schema cannot express.
    assert re.fullmatch(r"[a-z]([-a-z0-9]*[a-z0-9])?", trainjob["metadata"]["name"])
    assert len(trainjob["metadata"]["name"]) <= 63
    assert trainjob["spec"]["trainer"]["numProcPerNode"] >= 1
    assert list(runtime["spec"]["mlPolicy"]) == ["numNodes", "torch"]


@pytest.mark.parametrize(
    "kind,breakage",
    [
        ("TrainJob", lambda o: o["spec"]["trainer"].__setitem__("gpus", 4)),
        ("TrainJob", lambda o: o["spec"]["trainer"].__setitem__("numNodes", "2")),
        ("TrainJob", lambda o: o["spec"]["runtimeRef"].__setitem__("namespace", "x")),
        ("TrainJob", lambda o: o["spec"]["trainer"]["env"][0].__setitem__("value", 1)),
        ("TrainingRuntime", lambda o: o["spec"]["mlPolicy"].__setitem__("pytorch", {})),
        ("TrainingRuntime", lambda o: _runtime_pod(o)["spec"].__setitem__("initContainer", [])),
        ("TrainingRuntime", lambda o: _runtime_pod(o)["spec"]["containers"][0].pop("name")),
    ],
)
def test_crd_schemas_reject_what_the_api_server_rejects(kind, breakage):
    runtime, trainjob = _trainer_objects("k8s-v2-2x4-resume")
    obj = copy.deepcopy(trainjob if kind == "TrainJob" else runtime)
    validate_object(obj)
    breakage(obj)
    with pytest.raises(jsonschema.ValidationError):
        validate_object(obj)


def test_same_launcher_image_env_and_gpus_as_the_pytorchjob():
    spec, job = CASES["k8s-v2-2x4-resume"]
    v1 = [
        o
        for o in yaml.safe_load_all(
            render_k8s(ClusterSpec(**{**spec.__dict__, "trainer": "v1"}), job)["pytorchjob.yaml"]
        )
        if o
    ]
    v1_pod = v1[1]["spec"]["pytorchReplicaSpecs"]["Worker"]["template"]
    (pytorch,) = v1_pod["spec"]["containers"]
    runtime, trainjob = _trainer_objects("k8s-v2-2x4-resume")
    trainer = trainjob["spec"]["trainer"]
    assert trainer["image"] == pytorch["image"] == spec.image
    assert trainer["command"] == pytorch["command"] == ["deepfleet"]

    # The same command line once each side's placeholders are expanded.
    def expand(args: list[str], rank: str, rdzv: str) -> list[str]:
        return [{rank: "R", rdzv: "HOST:PORT"}.get(a, a) for a in args]

    v1_args = expand(pytorch["args"], "$(NODE_RANK)", "digits-worker-0:29500")
    v2_args = expand(trainer["args"], *PET)
    assert v1_args == v2_args
    # The same environment less the node rank, which the Trainer injects (PET_NODE_RANK).
    assert trainer["env"] == [e for e in pytorch["env"] if e["name"] != "NODE_RANK"]
    assert not [e for e in trainer["env"] if e["name"].startswith("PET_")], (
        "reserved by the Trainer"
    )
    assert trainer["resourcesPerNode"] == pytorch["resources"] == {"limits": {"nvidia.com/gpu": 4}}
    assert (trainer["numNodes"], trainer["numProcPerNode"]) == (2, 4)
    # The pod around it: the same init containers, volumes, security and tolerations.
    pod = _runtime_pod(runtime)
    for key in ("initContainers", "volumes", "securityContext", "tolerations", "restartPolicy"):
        assert pod["spec"][key] == v1_pod["spec"][key], key
    assert pod["metadata"]["labels"] == v1_pod["metadata"]["labels"]
    (node,) = pod["spec"]["containers"]
    assert node["name"] == "node", "the Trainer injects its PET_* variables into `node`"
    assert node["volumeMounts"] == pytorch["volumeMounts"]
    assert not {"command", "args", "env", "resources"} & set(node), "set once, in the TrainJob"


def test_trainjob_runs_the_runtime_and_the_trainer_finds_its_job():
    runtime, trainjob = _trainer_objects("k8s-v2-2x4-resume")
    ref = trainjob["spec"]["runtimeRef"]
    assert ref == {
        "name": runtime["metadata"]["name"],
        "apiGroup": "trainer.kubeflow.org",
        "kind": "TrainingRuntime",
    }
    assert runtime["metadata"]["namespace"] == trainjob["metadata"]["namespace"]
    (job,) = runtime["spec"]["template"]["spec"]["replicatedJobs"]
    assert job["template"]["metadata"]["labels"] == {
        "trainer.kubeflow.org/trainjob-ancestor-step": "trainer"
    }
    # Restarts tied to resume, as for v1.
    assert job["template"]["spec"]["backoffLimit"] == 2
    assert _runtime_pod(runtime)["spec"]["restartPolicy"] == "OnFailure"
    path, params = parse([PET.get(a, a) for a in trainjob["spec"]["trainer"]["args"]])
    assert path == "train"
    assert (params["nproc"], params["nnodes"], params["node_rank"]) == (4, 2, 1)
    assert params["rdzv"] == "digits-node-0-0.digits:29500" and params["resume"] is True


def test_run_on_object_storage_mounts_no_volume_and_reads_credentials_from_a_secret():
    files = objects("k8s-v2-s3")
    assert [o["kind"] for o in files["common.yaml"]] == ["ConfigMap"], "no shared volume"
    assert tomllib.loads(files["common.yaml"][0]["data"]["job.toml"])["run"]["runs_dir"] == (
        "s3://ml-runs/team"
    )
    runtime, trainjob = _trainer_objects("k8s-v2-s3")
    pod = _runtime_pod(runtime)
    assert "workspace" not in {v["name"] for v in pod["spec"]["volumes"]}
    prepare = pod["spec"]["initContainers"][-1]
    assert prepare["args"][-2:] == ["--run-dir", "s3://ml-runs/team/digits"]
    assert trainjob["spec"]["trainer"]["args"][1] == "s3://ml-runs/team/digits"
    for env in (prepare["env"], trainjob["spec"]["trainer"]["env"]):
        refs = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in env if "valueFrom" in e}
        assert refs == {
            "AWS_ACCESS_KEY_ID": {"name": "team-s3", "key": "AWS_ACCESS_KEY_ID"},
            "AWS_SECRET_ACCESS_KEY": {"name": "team-s3", "key": "AWS_SECRET_ACCESS_KEY"},
            "AWS_SESSION_TOKEN": {"name": "team-s3", "key": "AWS_SESSION_TOKEN", "optional": True},
        }
    # References only: no credential value and no Secret object anywhere.
    everything = [o for objs in files.values() for o in objs]
    assert not [o for o in everything if o["kind"] == "Secret"]
    for key, value in walk(everything):
        if key == "env":
            assert all("value" not in e for e in value if e["name"].startswith("AWS_"))


def test_bad_v2_options_are_one_line_errors():
    with pytest.raises(UserError, match="--trainer 'v3'"):
        ClusterSpec(name="a", trainer="v3")
    with pytest.raises(UserError, match="--port 29600: with --trainer v2"):
        ClusterSpec(name="a", trainer="v2", rdzv_port=29600)
    with pytest.raises(UserError, match="--s3-secret"):
        ClusterSpec(name="a", s3_secret="Bad_Name")
    with pytest.raises(UserError, match="run.runs_dir 'runs'"):
        ClusterSpec(name="a", runs_dir="runs")


def test_cli_writes_a_trainjob_for_an_s3_job(tmp_path, capsys):
    job = tmp_path / "job.toml"
    job.write_text(
        '[run]\nname = "lm"\nruns_dir = "s3://bucket/runs"\n\n'
        '[data]\nsource = "digits"\nprepared = "s3://bucket/data/digits"\n'
    )
    out = tmp_path / "k8s"
    argv = [
        "cluster",
        "k8s",
        str(job),
        "--nodes",
        "2",
        "--gpus-per-node",
        "0",
        "--image",
        "deepfleet:0.1.0",
        "--trainer",
        "v2",
        "--out",
        str(out),
    ]
    assert run_cli(argv) == 0
    assert sorted(p.name for p in out.iterdir()) == ["common.yaml", "trainjob.yaml"]
    docs = [o for p in sorted(out.iterdir()) for o in yaml.safe_load_all(p.read_text()) if o]
    for obj in docs:
        validate_object(obj)
    trainjob = docs[-1]
    names = {
        e["valueFrom"]["secretKeyRef"]["name"]
        for e in trainjob["spec"]["trainer"]["env"]
        if "valueFrom" in e
    }
    assert names == {"lm-s3"}, "the Secret's default name"
    assert "resourcesPerNode" not in trainjob["spec"]["trainer"]
    text = (out / "trainjob.yaml").read_text()
    assert "kubectl create secret generic lm-s3" in text
    # A bad option: one line, exit 2, no traceback.
    assert run_cli(argv[:-2] + ["--port", "30000", "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert "--trainer v2" in err and "Traceback" not in err


def test_data_on_s3_with_runs_on_the_volume(tmp_path):
    job = tmp_path / "job.toml"
    job.write_text('[run]\nname = "d"\n\n[data]\nsource = "digits"\nprepared = "s3://b/data/d"\n')
    out = tmp_path / "k8s"
    assert run_cli(["cluster", "k8s", str(job), "--image", "i:1", "--out", str(out)]) == 0
    common = [o for o in yaml.safe_load_all((out / "common.yaml").read_text()) if o]
    assert [o["kind"] for o in common] == ["PersistentVolumeClaim", "ConfigMap"]
    ptj = [o for o in yaml.safe_load_all((out / "pytorchjob.yaml").read_text()) if o][1]
    (container,) = ptj["spec"]["pytorchReplicaSpecs"]["Worker"]["template"]["spec"]["containers"]
    secrets = {
        e["valueFrom"]["secretKeyRef"]["name"]
        for e in container["env"]
        if "secretKeyRef" in e.get("valueFrom", {})
    }
    assert secrets == {"d-s3"}
