"""The deepfleet command lines that cluster manifests run: the real CLI, in one place.

Every node first runs `deepfleet cluster prepare JOB --run-dir DIR` (one run folder at a fixed
path on shared storage, made once), then `deepfleet train DIR --nproc N --nnodes M --node-rank
R --rdzv HOST:PORT --max-restarts K [--resume]`, which hands the node's processes to torch's
elastic agent with c10d rendezvous. Serving is `deepfleet serve BUNDLE`. Values only the node
knows (its rank) are placeholders that Kubernetes or the shell expands, e.g. `$(NODE_RANK)`.
"""

from __future__ import annotations

# Where manifests put things inside the container. One shared volume holds prepared
# shards, run folders and checkpoints, so a restarted pod finds the checkpoint it resumes.
WORKSPACE = "/workspace"
RUNS_DIR = f"{WORKSPACE}/runs"
JOB_DIR = "/etc/deepfleet/job"
JOB_FILE = f"{JOB_DIR}/job.toml"
SECRETS_DIR = "/etc/deepfleet/secrets"
DATA_KEY_DIR = f"{SECRETS_DIR}/data-key"
TOKEN_DIR = f"{SECRETS_DIR}/api-token"
# The key inside each Secret: `kubectl create secret generic NAME --from-file=key=./data.key`.
DATA_KEY_ITEM = "key"
TOKEN_ITEM = "token"
# deepfleet refuses a key file that others than its owner can read, and a Secret volume's
# files are group-readable (fsGroup), so an init container copies the key, mode 0600 and
# owned by the pod's user, into a memory-backed folder; the job file's data.key names it.
KEYS_DIR = "/run/deepfleet/keys"
DATA_KEY_FILE = f"{KEYS_DIR}/data.key"


def run_dir(name: str, runs_dir: str = RUNS_DIR) -> str:
    """The run folder of a cluster job, on the shared volume or object storage: a fixed
    path every pod knows."""
    return f"{runs_dir.rstrip('/')}/{name}"


def prepare_args(job: str, run_folder: str) -> list[str]:
    """Arguments after `deepfleet` that make (or find) the shared run folder."""
    return ["cluster", "prepare", job, "--run-dir", run_folder]


def train_args(
    run_folder: str,
    *,
    nproc: int,
    nnodes: int,
    node_rank: str,
    rdzv: str,
    max_restarts: int,
    resume: bool,
) -> list[str]:
    """Arguments after `deepfleet` for one node's launcher."""
    args = ["train", run_folder, "--nproc", str(nproc)]
    if nnodes > 1:
        args += ["--nnodes", str(nnodes), "--node-rank", node_rank, "--rdzv", rdzv]
    args += ["--max-restarts", str(max_restarts)]
    if resume:
        args.append("--resume")
    return args


def serve_args(bundle: str, *, port: int, token_file: str, gpu: bool) -> list[str]:
    """Arguments after `deepfleet` for one server replica: all interfaces (it is in a pod),
    the bearer token read from the mounted Secret file."""
    args = ["serve", bundle, "--host", "0.0.0.0", "--port", str(port), "--token-file", token_file]
    if gpu:
        args += ["--device", "cuda"]
    return args
