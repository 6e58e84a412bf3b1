"""Render cluster files from data (YAML via PyYAML, the sbatch script from argument lists) and
write them atomically."""

from __future__ import annotations

import tomllib
from dataclasses import replace
from pathlib import Path
from typing import Any

import tomli_w
import yaml

from deepfleet._atomic import write_text_atomic
from deepfleet.cluster import _k8s_network, _k8s_serve, _k8s_shared, _k8s_train, _k8s_trainer_v2
from deepfleet.cluster._commands import DATA_KEY_FILE, RUNS_DIR
from deepfleet.cluster._slurm import sbatch_script
from deepfleet.cluster._spec import ClusterSpec, ServeSpec, SlurmSpec
from deepfleet.config import job_from_dict, load_job, resolve_job_path
from deepfleet.errors import UserError

COMMON = "common.yaml"
PYTORCHJOB = "pytorchjob.yaml"
INDEXED_JOB = "indexed-job.yaml"
TRAINJOB = "trainjob.yaml"
S3 = "s3://"
SERVE = "serve.yaml"


class _Dumper(yaml.SafeDumper):
    """Plain YAML a person can read: no &anchors for repeated parts, files as | blocks."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _str)


def to_yaml(docs: list[dict[str, Any]], header: list[str]) -> str:
    """Several objects as one multi-document YAML file, keys in the order they were built."""
    comment = "".join(f"# {line}\n" if line else "#\n" for line in header)
    return comment + yaml.dump_all(
        docs,
        Dumper=_Dumper,
        sort_keys=False,
        default_flow_style=False,
        width=100,
        explicit_start=True,
    )


def cluster_job_toml(job: str | Path, data_key: bool = False) -> str:
    """The job file as it runs in a pod: as written, with run folders on the shared volume
    and, with a data key Secret, data.key naming the key's file in the pod.

    The raw TOML is kept (not the locally resolved job) so that paths are not rewritten to
    this machine's absolute paths; data paths in it must name places inside the container.
    """
    path = resolve_job_path(job)
    load_job(path)  # every problem with the job file is reported here, before any output
    raw = tomllib.loads(path.read_text(encoding="utf-8"))
    run = raw.setdefault("run", {})
    # A run on object storage stays there; any other runs_dir names this machine's disk.
    if not str(run.get("runs_dir", "")).startswith(S3):
        run["runs_dir"] = RUNS_DIR
    if data_key:
        raw.setdefault("data", {})["key"] = DATA_KEY_FILE
    elif raw.get("data", {}).get("key"):
        raise UserError(
            f"{path}: data.key is set (encrypted shards); pass --data-key-secret "
            "NAME, a Secret holding the key as item `key`"
        )
    job_from_dict(raw)
    return tomli_w.dumps(raw)


def job_name(job: str | Path) -> str:
    return load_job(job).run.name


def render_k8s(spec: ClusterSpec, job_toml: str) -> dict[str, str]:
    """File name -> YAML: the shared objects and the ways to run training (v1: a PyTorchJob
    and an Indexed Job; v2: a Kubeflow Trainer TrainJob). Each training file carries the
    NetworkPolicy that admits only the job's own pods."""
    apply = "kubectl apply -f common.yaml -f"
    shared = [_k8s_shared.job_configmap(spec, job_toml)]
    if spec.shared_volume:
        shared.insert(0, _k8s_shared.workspace_pvc(spec))
    files = {
        COMMON: to_yaml(
            shared,
            [
                "Written by `deepfleet cluster k8s`: "
                + (
                    "the shared volume and the job file." if spec.shared_volume else "the job file."
                ),
                "Apply before the training manifest.",
            ],
        )
    }
    policy = _k8s_network.network_policy(spec)
    secret = spec.s3_secret_name
    credentials = (
        [
            f"S3 credentials come from the Secret {secret} (never from this file):",
            f"  kubectl create secret generic {secret} "
            "--from-literal=AWS_ACCESS_KEY_ID=... --from-literal=AWS_SECRET_ACCESS_KEY=...",
        ]
        if secret
        else []
    )
    if spec.trainer == "v2":
        files[TRAINJOB] = to_yaml(
            [policy, _k8s_trainer_v2.training_runtime(spec), _k8s_trainer_v2.trainjob(spec)],
            [
                "Written by `deepfleet cluster k8s --trainer v2`: training under Kubeflow "
                "Trainer v2",
                "(a TrainingRuntime and a TrainJob; only the job's pods may reach its pods).",
                *credentials,
                f"Run: {apply} {TRAINJOB}",
            ],
        )
        return files
    files[PYTORCHJOB] = to_yaml(
        [policy, _k8s_train.pytorchjob(spec)],
        [
            "Written by `deepfleet cluster k8s`: training under the Kubeflow training operator",
            "(only the job's pods may reach its pods).",
            *credentials,
            f"Run: {apply} {PYTORCHJOB}",
        ],
    )
    files[INDEXED_JOB] = to_yaml(
        [policy, _k8s_train.rdzv_service(spec), _k8s_train.indexed_job(spec)],
        [
            "Written by `deepfleet cluster k8s`: training without the operator",
            "(an Indexed Job; pod 0 hosts the c10d rendezvous; only the job's pods may reach "
            "its pods).",
            *credentials,
            f"Run: {apply} {INDEXED_JOB}",
        ],
    )
    return files


def render_serve(spec: ServeSpec) -> dict[str, str]:
    token = spec.token_secret_name
    return {
        SERVE: to_yaml(
            [_k8s_serve.deployment(spec), _k8s_serve.service(spec), _k8s_serve.autoscaler(spec)],
            [
                "Written by `deepfleet cluster k8s --serve`: the server, its Service and "
                "autoscaler.",
                "The bearer token comes from a Secret you create (never from this file):",
                f"  kubectl create secret generic {token} --from-file=token=./token",
                f"Run: kubectl apply -f {SERVE}",
            ],
        )
    }


def write_files(out: Path, files: dict[str, str]) -> list[Path]:
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise UserError(f"{out}: exists and is not a folder")
    written = []
    for name, text in files.items():
        write_text_atomic(out / name, text)
        written.append(out / name)
    return written


def write_k8s(job: str | Path, spec: ClusterSpec, out: Path) -> list[Path]:
    """Training manifests for `job` into the folder `out`; where the job keeps its data and
    runs (the shared volume or s3://) is read from the job file."""
    job_toml = cluster_job_toml(job, bool(spec.data_key_secret))
    raw = tomllib.loads(job_toml)
    spec = replace(
        spec,
        runs_dir=raw["run"]["runs_dir"],
        data_on_s3=str(raw.get("data", {}).get("prepared", "")).startswith(S3),
    )
    return write_files(out, render_k8s(spec, job_toml))


def write_serve(spec: ServeSpec, out: Path) -> list[Path]:
    """Serving manifests into the folder `out`."""
    return write_files(out, render_serve(spec))


def write_sbatch(spec: SlurmSpec, out: Path) -> Path:
    """The sbatch script, written to `out` and made executable."""
    out = Path(out)
    if out.is_dir():
        raise UserError(f"{out}: is a folder, expected a file name for the sbatch script")
    write_text_atomic(out, sbatch_script(spec))
    out.chmod(0o755)
    return out
