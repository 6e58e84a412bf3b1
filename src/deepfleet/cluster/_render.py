"""Render cluster files from data (YAML via PyYAML, the sbatch script from argument lists) and
write them atomically."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import tomli_w
import yaml

from deepfleet._atomic import write_text_atomic
from deepfleet.cluster import _k8s_serve, _k8s_shared, _k8s_train
from deepfleet.cluster._commands import DATA_KEY_FILE, RUNS_DIR
from deepfleet.cluster._slurm import sbatch_script
from deepfleet.cluster._spec import ClusterSpec, ServeSpec, SlurmSpec
from deepfleet.config import job_from_dict, load_job, resolve_job_path
from deepfleet.errors import UserError

COMMON = "common.yaml"
PYTORCHJOB = "pytorchjob.yaml"
INDEXED_JOB = "indexed-job.yaml"
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
    raw.setdefault("run", {})["runs_dir"] = RUNS_DIR
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
    """File name -> YAML: the shared objects and the two ways to run training."""
    apply = "kubectl apply -f common.yaml -f"
    return {
        COMMON: to_yaml(
            [_k8s_shared.workspace_pvc(spec), _k8s_shared.job_configmap(spec, job_toml)],
            [
                "Written by `deepfleet cluster k8s`: the shared volume and the job file.",
                "Apply before either training manifest.",
            ],
        ),
        PYTORCHJOB: to_yaml(
            [_k8s_train.pytorchjob(spec)],
            [
                "Written by `deepfleet cluster k8s`: training under the Kubeflow training "
                "operator.",
                f"Run: {apply} {PYTORCHJOB}",
            ],
        ),
        INDEXED_JOB: to_yaml(
            [_k8s_train.rdzv_service(spec), _k8s_train.indexed_job(spec)],
            [
                "Written by `deepfleet cluster k8s`: training without the operator",
                "(an Indexed Job; pod 0 hosts the c10d rendezvous).",
                f"Run: {apply} {INDEXED_JOB}",
            ],
        ),
    }


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
    """Training manifests for `job` into the folder `out`."""
    return write_files(out, render_k8s(spec, cluster_job_toml(job, bool(spec.data_key_secret))))


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
