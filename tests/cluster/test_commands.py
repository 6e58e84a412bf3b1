"""The command lines inside the manifests are the real CLI: each parses with deepfleet's own
command definitions (placeholders replaced by what Kubernetes or the shell puts there)."""

from __future__ import annotations

import shlex

import pytest
import yaml
from typer.main import get_command

from deepfleet.cli import app
from deepfleet.cluster import (
    ClusterSpec,
    ServeSpec,
    SlurmSpec,
    render_k8s,
    render_serve,
    sbatch_script,
)

EXPANSIONS = {
    "$(NODE_RANK)": "1",
    '"$SLURM_NODEID"': "1",
    '"$RUN_DIR"': "/shared/runs/x",
    '"$RDZV_ENDPOINT"': "node1:29500",
    '"$DEEPFLEET_JOB"': "/shared/job.toml",
}


def parse(argv: list[str]) -> tuple[str, dict]:
    """(command path, parsed options) for `deepfleet ARGV`, without running it."""
    command, args, parent, name = get_command(app), list(argv), None, "deepfleet"
    path = []
    while True:
        ctx = command.make_context(name, args, parent=parent)
        if not hasattr(command, "resolve_command"):
            return " ".join(path), ctx.params
        name, command, args = command.resolve_command(ctx, ctx._protected_args + ctx.args)
        path.append(name)
        parent = ctx


def _expand(args: list[str]) -> list[str]:
    return [EXPANSIONS.get(a, a) for a in args]


def _k8s_containers() -> list[dict]:
    spec = ClusterSpec(name="digits", nodes=2, gpus_per_node=4, resume=True)
    containers = []
    for text in render_k8s(spec, '[run]\nname = "digits"\n').values():
        for obj in yaml.safe_load_all(text):
            for key in ("containers", "initContainers"):
                containers += _find(obj, key)
    return containers


def _find(obj, key: str) -> list[dict]:
    if isinstance(obj, dict):
        found = list(obj.get(key, []))
        return found + [c for v in obj.values() for c in _find(v, key)]
    if isinstance(obj, list):
        return [c for v in obj for c in _find(v, key)]
    return []


def test_kubernetes_commands_parse():
    seen = {}
    for container in _k8s_containers():
        assert container["command"] == ["deepfleet"]
        path, params = parse(_expand(container["args"]))
        seen.setdefault(path, params)
    assert set(seen) == {"train", "cluster prepare"}
    train = seen["train"]
    assert (train["nproc"], train["nnodes"], train["node_rank"]) == (4, 2, 1)
    assert train["resume"] is True and train["max_restarts"] == 3
    assert train["rdzv"] in ("digits-worker-0:29500", "digits-0.digits-rdzv:29500")
    assert seen["cluster prepare"]["run_dir"].as_posix() == "/workspace/runs/digits"


def test_slurm_commands_parse():
    text = sbatch_script(
        SlurmSpec(name="x", job_file="/shared/job.toml", nodes=2, gpus_per_node=4, resume=True)
    )
    lines = [ln for ln in text.splitlines() if ln.startswith(("deepfleet ", "srun "))]
    prepare = shlex.split(lines[0], posix=False)
    assert parse(_expand(prepare[1:]))[0] == "cluster prepare"
    inner = shlex.split(lines[1])[-1]  # the bash -c command of each node's task
    words = shlex.split(inner.split("exec deepfleet ", 1)[1], posix=False)
    path, params = parse(_expand(words))
    assert path == "train" and params["node_rank"] == 1 and params["nnodes"] == 2


def test_serve_command_parses():
    group = get_command(app)
    if "serve" not in group.commands:
        pytest.skip("`deepfleet serve` is not part of this build yet")
    for gpus in (0, 1):
        text = render_serve(ServeSpec(name="d", bundle="runs/d/bundle", gpus=gpus))["serve.yaml"]
        deployment = next(yaml.safe_load_all(text))
        args = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
        path, params = parse(args)
        assert path == "serve" and params["host"] == "0.0.0.0" and params["port"] == 8000
        assert str(params["token_file"]) == "/etc/deepfleet/secrets/api-token/token"
        assert params["device"] == ("cuda" if gpus else "cpu")
