"""What a cluster deployment asks for, checked up front: nodes, GPUs, image, storage, secrets."""

from __future__ import annotations

import re
from dataclasses import dataclass

from deepfleet.cluster._commands import RUNS_DIR
from deepfleet.errors import UserError

# Kubernetes object names are DNS-1123 labels; pods of an Indexed Job are named
# `<job>-<index>` and the rendezvous host is `<job>-0.<job>-rdzv`, so the base name
# leaves room for those suffixes within the 63-character limit.
MAX_NAME = 40
_LABEL = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
_QUANTITY = re.compile(r"^[0-9]+(\.[0-9]+)?(Ki|Mi|Gi|Ti|Pi|k|M|G|T|P)?$")
TRAINERS = ("v1", "v2")
# Kubeflow Trainer v2 puts the rendezvous on this port (PET_MASTER_PORT, ContainerTrainerPort).
V2_PORT = 29500
_DURATION = re.compile(r"^([0-9]+-)?[0-9]{1,2}:[0-9]{2}:[0-9]{2}$")


def k8s_name(text: str) -> str:
    """A DNS-1123 label made from a job's run name (digits_v2 -> digits-v2)."""
    name = re.sub(r"[^a-z0-9-]+", "-", text.lower()).strip("-")[:MAX_NAME].rstrip("-")
    if not name or not name[0].isalpha():
        name = f"df-{name}".rstrip("-")
    return name


def check_name(name: str, what: str) -> str:
    if len(name) > MAX_NAME or not _LABEL.match(name):
        raise UserError(
            f"{what} {name!r}: expected lowercase letters, digits and '-', "
            f"starting with a letter, at most {MAX_NAME} characters"
        )
    return name


@dataclass(frozen=True)
class ClusterSpec:
    """The shape of one distributed training run on a cluster."""

    name: str
    nodes: int = 1
    gpus_per_node: int = 1
    image: str = "deepfleet:0.1.0"
    namespace: str = "default"
    storage: str = "50Gi"
    storage_class: str | None = None
    resume: bool = False
    max_restarts: int = 3
    rdzv_port: int = 29500
    data_key_secret: str | None = None
    # "v1": Kubeflow training operator PyTorchJob (and an Indexed Job); "v2": Kubeflow Trainer
    # TrainJob with a TrainingRuntime.
    trainer: str = "v1"
    # Where run folders live: the shared volume, or an s3:// URL (then no volume is mounted).
    runs_dir: str = RUNS_DIR
    # The job's data (data.prepared) is an s3:// URL.
    data_on_s3: bool = False
    # The Secret holding the S3 credentials (default `<name>-s3`), used when anything is on s3://.
    s3_secret: str | None = None

    def __post_init__(self) -> None:
        check_name(self.name, "name")
        check_name(self.namespace, "--namespace")
        if self.nodes < 1:
            raise UserError(f"--nodes must be >= 1, got {self.nodes}")
        if self.gpus_per_node < 0:
            raise UserError(f"--gpus-per-node must be >= 0, got {self.gpus_per_node}")
        if not self.image or any(c.isspace() for c in self.image):
            raise UserError(
                f"--image {self.image!r}: expected an image reference, e.g. "
                "registry.example.com/deepfleet:0.1.0"
            )
        if not _QUANTITY.match(self.storage):
            raise UserError(f"--storage {self.storage!r}: expected a size such as 50Gi")
        if self.max_restarts < 0:
            raise UserError(f"--max-restarts must be >= 0, got {self.max_restarts}")
        if not 1024 <= self.rdzv_port <= 65535:
            raise UserError(f"--port must be in 1024..65535, got {self.rdzv_port}")
        if self.data_key_secret is not None:
            check_name(self.data_key_secret, "--data-key-secret")
        if self.trainer not in TRAINERS:
            raise UserError(f"--trainer {self.trainer!r}: expected one of {', '.join(TRAINERS)}")
        if not (self.runs_dir.startswith(("/", "s3://")) and len(self.runs_dir) > len("s3://")):
            raise UserError(
                f"run.runs_dir {self.runs_dir!r}: on a cluster, expected an s3:// URL "
                "(or leave it unset for the shared volume)"
            )
        if self.s3_secret is not None:
            check_name(self.s3_secret, "--s3-secret")
        if self.trainer == "v2" and self.rdzv_port != V2_PORT:
            raise UserError(
                f"--port {self.rdzv_port}: with --trainer v2 the Kubeflow Trainer sets the "
                f"rendezvous port ({V2_PORT}); leave --port unset"
            )

    @property
    def nproc(self) -> int:
        """Processes per node: one per GPU, or one on a CPU-only node."""
        return max(self.gpus_per_node, 1)

    @property
    def shared_volume(self) -> bool:
        """Run folders on the shared volume; a run on object storage needs none."""
        return not self.runs_dir.startswith("s3://")

    @property
    def s3_secret_name(self) -> str | None:
        """The Secret with AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, when the job uses s3://."""
        if self.shared_volume and not self.data_on_s3:
            return None
        return self.s3_secret or f"{self.name}-s3"


@dataclass(frozen=True)
class ServeSpec:
    """The server for a bundle: replicas, autoscaling bounds, the token's Secret."""

    name: str
    bundle: str
    image: str = "deepfleet:0.1.0"
    namespace: str = "default"
    gpus: int = 0
    replicas: int = 2
    max_replicas: int = 8
    target_cpu_percent: int = 70
    port: int = 8000
    token_secret: str | None = None

    def __post_init__(self) -> None:
        check_name(self.name, "name")
        check_name(self.namespace, "--namespace")
        if not self.bundle:
            raise UserError("--serve: a bundle path is required")
        if self.gpus < 0:
            raise UserError(f"--gpus-per-node must be >= 0, got {self.gpus}")
        if not 1 <= self.replicas <= self.max_replicas:
            raise UserError(
                f"--replicas must be in 1..--max-replicas ({self.max_replicas}), "
                f"got {self.replicas}"
            )
        if not 1 <= self.target_cpu_percent <= 100:
            raise UserError(f"target CPU must be in 1..100 percent, got {self.target_cpu_percent}")
        if self.token_secret is not None:
            check_name(self.token_secret, "--token-secret")

    @property
    def token_secret_name(self) -> str:
        return self.token_secret or f"{self.name}-api-token"


@dataclass(frozen=True)
class SlurmSpec:
    """An sbatch allocation: nodes, GPUs, CPUs, wall time, the job file and the run folder
    (both on a file system every node sees; the run folder defaults to runs/NAME in the
    folder the job was submitted from)."""

    name: str
    job_file: str
    run_dir: str | None = None
    nodes: int = 1
    gpus_per_node: int = 1
    cpus_per_task: int = 8
    time: str = "24:00:00"
    partition: str | None = None
    resume: bool = False
    max_restarts: int = 3
    rdzv_port: int = 29500

    def __post_init__(self) -> None:
        if self.nodes < 1:
            raise UserError(f"--nodes must be >= 1, got {self.nodes}")
        if self.gpus_per_node < 0:
            raise UserError(f"--gpus-per-node must be >= 0, got {self.gpus_per_node}")
        if self.cpus_per_task < 1:
            raise UserError(f"--cpus-per-task must be >= 1, got {self.cpus_per_task}")
        if not _DURATION.match(self.time):
            raise UserError(f"--time {self.time!r}: expected [D-]HH:MM:SS, e.g. 24:00:00")
        if self.partition is not None and not re.match(r"^[A-Za-z0-9_.,-]+$", self.partition):
            raise UserError(f"--partition {self.partition!r}: not a partition name")
        if self.max_restarts < 0:
            raise UserError(f"--max-restarts must be >= 0, got {self.max_restarts}")
        if not 1024 <= self.rdzv_port <= 65535:
            raise UserError(f"--port must be in 1024..65535, got {self.rdzv_port}")

    @property
    def nproc(self) -> int:
        return max(self.gpus_per_node, 1)
