"""The deepfleet command lines that cluster manifests run: the real CLI, in one place.

Training goes through `deepfleet train JOB --nproc N --nnodes M --node-rank R --rdzv HOST:PORT
--max-restarts K [--resume]`, which hands the processes of one node to torch's elastic agent
with c10d rendezvous; serving is `deepfleet serve BUNDLE`. Values that only the node knows
(its rank, the rendezvous host) are passed in as placeholders that Kubernetes or the shell
expands, e.g. `$(RANK)` or `"$SLURM_NODEID"`.
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
# Environment variables that point at the mounted files (paths, never the secret values).
DATA_KEY_ENV = "DEEPFLEET_DATA_KEY_FILE"
TOKEN_ENV = "DEEPFLEET_API_TOKEN_FILE"


def train_args(job: str, *, nproc: int, nnodes: int, node_rank: str, rdzv: str,
               max_restarts: int, resume: bool) -> list[str]:
    """Arguments after `deepfleet` for one node's launcher."""
    args = ["train", job, "--nproc", str(nproc)]
    if nnodes > 1:
        args += ["--nnodes", str(nnodes), "--node-rank", node_rank, "--rdzv", rdzv]
    args += ["--max-restarts", str(max_restarts)]
    if resume:
        args.append("--resume")
    return args


def serve_args(bundle: str, *, port: int, token_file: str) -> list[str]:
    """Arguments after `deepfleet` for one server replica (all interfaces: it is in a pod)."""
    return ["serve", bundle, "--host", "0.0.0.0", "--port", str(port),
            "--token-file", token_file]
