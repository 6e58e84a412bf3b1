"""The environment a benchmark ran in: machine, versions, driver, git commit."""

from __future__ import annotations

import subprocess
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

from deepfleet.devices import describe_machine


def _git_commit() -> str | None:
    """The commit of the deepfleet source tree, with +dirty when it has local changes."""
    root = Path(__file__).resolve().parents[3]
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=root,
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=root,
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    return commit + ("+dirty" if dirty.strip() else "")


def _driver_version() -> str | None:
    try:
        import pynvml

        pynvml.nvmlInit()
        try:
            version = pynvml.nvmlSystemGetDriverVersion()
        finally:
            pynvml.nvmlShutdown()
        return version.decode() if isinstance(version, bytes) else str(version)
    except Exception:  # no NVIDIA driver on this machine
        return None


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def environment() -> dict[str, Any]:
    """describe_machine() plus what a benchmark result needs to be compared later."""
    return {
        **describe_machine(),
        "nvidia_driver": _driver_version(),
        "git_commit": _git_commit(),
        "deepfleet": _version("deepfleet"),
        "onnxruntime": _version("onnxruntime"),
        "zeus": _version("zeus"),
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
