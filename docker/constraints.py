"""Print exact pins of deepfleet's runtime dependencies as installed in this environment.

`make constraints` writes them to docker/constraints.txt, which the Dockerfile installs
with `pip --constraint`. torch and its CUDA wheels are left out: the image takes them from
PyTorch's CUDA index at TORCH_VERSION.
"""

from __future__ import annotations

import importlib.metadata as md
import re

from packaging.markers import default_environment
from packaging.requirements import Requirement

SKIP = {"deepfleet", "torch", "triton", "setuptools"}
HEADER = """\
# Exact versions the image installs (pip --constraint): the runtime dependencies of deepfleet
# and everything they pull in, as tested. torch comes from the CUDA wheel index (Dockerfile).
# Regenerate with: make constraints"""


def _key(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def runtime_pins(root: str = "deepfleet") -> dict[str, str]:
    env = {**default_environment(), "extra": ""}
    pins: dict[str, str] = {}
    todo = [root]
    while todo:
        name = todo.pop()
        if _key(name) in pins:
            continue
        try:
            dist = md.distribution(name)
        except md.PackageNotFoundError:
            continue
        pins[_key(name)] = dist.version
        for text in dist.requires or []:
            req = Requirement(text)
            if req.marker is None or req.marker.evaluate(env):
                todo.append(req.name)
    return {k: v for k, v in sorted(pins.items())
            if k not in SKIP and not k.startswith("nvidia-")}


if __name__ == "__main__":
    print(HEADER)
    for name, version in runtime_pins().items():
        print(f"{name}=={version}")
