"""Run deepfleet on clusters: Kubernetes manifests (Kubeflow PyTorchJob, Indexed Job, Kubeflow
Trainer v2 TrainJob, serving, a NetworkPolicy around training)
and Slurm sbatch scripts, rendered from data and written atomically."""

from deepfleet.cluster._commands import serve_args, train_args
from deepfleet.cluster._prepare import prepare_run_at
from deepfleet.cluster._render import (
    cluster_job_toml,
    job_name,
    render_k8s,
    render_serve,
    to_yaml,
    write_k8s,
    write_sbatch,
    write_serve,
)
from deepfleet.cluster._slurm import sbatch_script
from deepfleet.cluster._spec import ClusterSpec, ServeSpec, SlurmSpec, k8s_name

__all__ = [
    "ClusterSpec",
    "ServeSpec",
    "SlurmSpec",
    "cluster_job_toml",
    "job_name",
    "k8s_name",
    "prepare_run_at",
    "render_k8s",
    "render_serve",
    "sbatch_script",
    "serve_args",
    "to_yaml",
    "train_args",
    "write_k8s",
    "write_sbatch",
    "write_serve",
]
