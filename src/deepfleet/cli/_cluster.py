"""`deepfleet cluster k8s` and `deepfleet cluster slurm`: manifests for running on clusters."""

from __future__ import annotations

from pathlib import Path

import typer

from deepfleet.cli._app import app, console

# The generators are imported by the commands that run them, not by `deepfleet --help`.

cluster = typer.Typer(
    help="Kubernetes manifests and Slurm scripts for running on clusters.", no_args_is_help=True
)
app.add_typer(cluster, name="cluster")

JOB_HELP = "Job file, or a shipped example's name."
RESUME_HELP = (
    "Restart failed nodes and continue from the latest checkpoint (every start "
    "passes --resume to deepfleet train); without it a failed node fails the job."
)


@cluster.command("k8s")
def k8s(
    job: str = typer.Argument(..., help=JOB_HELP),
    nodes: int = typer.Option(1, "--nodes", help="Nodes (one launcher pod per node)."),
    gpus_per_node: int = typer.Option(1, "--gpus-per-node", help="GPUs per node (0: CPU)."),
    image: str = typer.Option(..., "--image", help="Container image with deepfleet."),
    out: Path = typer.Option(Path("k8s"), "--out", help="Folder for the YAML files."),
    namespace: str = typer.Option("default", "--namespace", help="Kubernetes namespace."),
    storage: str = typer.Option("50Gi", "--storage", help="Size of the shared volume."),
    storage_class: str = typer.Option(
        None, "--storage-class", help="StorageClass of the shared volume (ReadWriteMany)."
    ),
    resume: bool = typer.Option(False, "--resume", help=RESUME_HELP),
    max_restarts: int = typer.Option(
        3, "--max-restarts", help="Worker restarts per node, and pod restarts."
    ),
    port: int = typer.Option(29500, "--port", help="Rendezvous port."),
    data_key_secret: str = typer.Option(
        None, "--data-key-secret", help="Secret holding the data key (item `key`)."
    ),
    trainer: str = typer.Option(
        "v1",
        "--trainer",
        help="v1: Kubeflow PyTorchJob and an Indexed Job; v2: a Kubeflow Trainer TrainJob.",
    ),
    s3_secret: str = typer.Option(
        None,
        "--s3-secret",
        help="Secret with AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY for s3:// data or runs "
        "(default NAME-s3).",
    ),
    serve: str = typer.Option(
        None,
        "--serve",
        help="Instead: serve this bundle (a path on the shared volume, or absolute in the image).",
    ),
    replicas: int = typer.Option(2, "--replicas", help="--serve: minimum replicas."),
    max_replicas: int = typer.Option(8, "--max-replicas", help="--serve: autoscaler maximum."),
    token_secret: str = typer.Option(
        None, "--token-secret", help="--serve: Secret holding the API token (item `token`)."
    ),
) -> None:
    """Kubernetes manifests: a PyTorchJob and an Indexed Job for training (--trainer v2: a
    TrainJob), or with --serve a Deployment, Service and HorizontalPodAutoscaler."""
    from deepfleet.cluster import (
        ClusterSpec,
        ServeSpec,
        job_name,
        k8s_name,
        write_k8s,
        write_serve,
    )

    name = k8s_name(job_name(job))
    if serve:
        written = write_serve(
            ServeSpec(
                name=name,
                bundle=serve,
                image=image,
                namespace=namespace,
                gpus=gpus_per_node,
                replicas=replicas,
                max_replicas=max_replicas,
                token_secret=token_secret,
            ),
            out,
        )
    else:
        written = write_k8s(
            job,
            ClusterSpec(
                name=name,
                nodes=nodes,
                gpus_per_node=gpus_per_node,
                image=image,
                namespace=namespace,
                storage=storage,
                storage_class=storage_class,
                resume=resume,
                max_restarts=max_restarts,
                rdzv_port=port,
                data_key_secret=data_key_secret,
                trainer=trainer,
                s3_secret=s3_secret,
            ),
            out,
        )
    for path in written:
        console.print(f"wrote {path}")


@cluster.command("slurm")
def slurm(
    job: str = typer.Argument(..., help=JOB_HELP),
    nodes: int = typer.Option(1, "--nodes", help="Nodes (one launcher task per node)."),
    gpus_per_node: int = typer.Option(1, "--gpus-per-node", help="GPUs per node (0: CPU)."),
    out: Path = typer.Option(Path("deepfleet.sbatch"), "--out", help="Script to write."),
    cpus_per_task: int = typer.Option(8, "--cpus-per-task", help="CPUs for each node's task."),
    time: str = typer.Option("24:00:00", "--time", help="Wall-time limit [D-]HH:MM:SS."),
    partition: str = typer.Option(None, "--partition", help="Slurm partition."),
    resume: bool = typer.Option(False, "--resume", help=RESUME_HELP),
    max_restarts: int = typer.Option(3, "--max-restarts", help="Worker restarts per node."),
    port: int = typer.Option(29500, "--port", help="Rendezvous port on the first node."),
    run_dir: Path = typer.Option(
        None,
        "--run-dir",
        help="The shared run folder (default runs/NAME in the folder sbatch is run from).",
    ),
) -> None:
    """An sbatch script running one `deepfleet train` launcher per node with srun."""
    from deepfleet.cluster import SlurmSpec, write_sbatch
    from deepfleet.config import load_job, resolve_job_path

    path = write_sbatch(
        SlurmSpec(
            name=load_job(job).run.name,
            job_file=str(resolve_job_path(job)),
            run_dir=str(run_dir.resolve()) if run_dir else None,
            nodes=nodes,
            gpus_per_node=gpus_per_node,
            cpus_per_task=cpus_per_task,
            time=time,
            partition=partition,
            resume=resume,
            max_restarts=max_restarts,
            rdzv_port=port,
        ),
        out,
    )
    console.print(f"wrote {path}")


@cluster.command("prepare")
def prepare(
    job: str = typer.Argument(..., help=JOB_HELP),
    run_dir: Path = typer.Option(..., "--run-dir", help="Where the run folder must be."),
) -> None:
    """Make the run folder at a fixed path (or find it there): what every node of a cluster
    job runs before `deepfleet train RUN_DIR`. Safe when many nodes run it at once."""
    from deepfleet.cluster import prepare_run_at

    paths = prepare_run_at(job, run_dir)
    console.print(str(paths.root), soft_wrap=True)
