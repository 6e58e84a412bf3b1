"""Helpers for the deployment tests: bundle copies and a real server in a subprocess."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np

REPO = Path(__file__).resolve().parents[2]


def raw_split(data_dir: Path, split: str) -> np.ndarray:
    """A split's samples as the shards store them (digits: whole numbers 0..16): what a
    client sends, before the bundle's preprocessing."""
    from deepfleet.data import decode_raw, open_shard, read_manifest

    manifest = read_manifest(data_dir)
    return np.concatenate(
        [decode_raw(open_shard(manifest, entry).read())[1] for entry in manifest.shards(split)]
    )


def copy_bundle(source: Path, dest: Path) -> Path:
    shutil.copytree(source, dest)
    return dest


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Server:
    """`python -m deepfleet serve ...` on 127.0.0.1 and a free port, stopped on exit."""

    def __init__(
        self,
        bundle: Path,
        *args: str,
        log: Path,
        token: str | None = None,
        startup_s: float = 90,
        grpc: bool = False,
    ):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        # With grpc, OIP v2 over gRPC on a second free port (self.grpc_url, host:port).
        self.grpc_port = free_port() if grpc else 0
        self.grpc_url = f"127.0.0.1:{self.grpc_port}"
        if grpc:
            args = (*args, "--grpc-port", str(self.grpc_port))
        self.token = token
        env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
        env.pop("DEEPFLEET_SERVE_TOKEN", None)
        env.pop("DEEPFLEET_PUBLIC_KEY", None)
        if token:
            env["DEEPFLEET_SERVE_TOKEN"] = token
        cmd = [
            sys.executable,
            "-m",
            "deepfleet",
            "serve",
            str(bundle),
            "--port",
            str(self.port),
            *args,
        ]
        if token is None:
            cmd.append("--no-auth")
        self.log = log
        self._log_file = open(log, "wb")  # noqa: SIM115  (closed in stop())
        # A session of its own, so stop() also ends uvicorn's worker processes.
        self.proc = subprocess.Popen(
            cmd, env=env, stdout=self._log_file, stderr=subprocess.STDOUT, start_new_session=True
        )
        self._wait_ready(startup_s)

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}

    def _wait_ready(self, startup_s: float) -> None:
        deadline = time.monotonic() + startup_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"server exited {self.proc.returncode}: {self.log.read_text()[-2000:]}"
                )
            try:
                if httpx.get(f"{self.url}/v2/health/ready", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"server not ready in {startup_s}s: {self.log.read_text()[-2000:]}")

    def rss_kib(self) -> int:
        """Resident memory of the server process and its children (workers)."""
        pids = [self.proc.pid]
        children = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children")
        if children.exists():
            pids += [int(p) for p in children.read_text().split()]
        total = 0
        for pid in pids:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        return total

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(15)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)  # anything of the group still there
        self.proc.wait()
        self._log_file.close()

    def __enter__(self) -> Server:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def infer_body(x, name: str = "input", datatype: str = "FP32", **extra) -> dict:
    return {
        "inputs": [
            {"name": name, "shape": list(x.shape), "datatype": datatype, "data": x.ravel().tolist()}
        ],
        **extra,
    }


# A bundle trained on encoded images: 16 x 16 RGB, resize + centre crop, normalised.
IMAGE_SIZE = (16, 16)
IMAGE_TRANSFORM = {"mode": "RGB", "size": list(IMAGE_SIZE), "resize_ratio": 256 / 224}
IMAGE_MEAN, IMAGE_STD = [0.5, 0.4, 0.3], [0.25, 0.2, 0.3]


def image_bundle(folder: Path) -> Path:
    """An MLP over 3 classes (a, b, c) exported with the encoded-image preprocessing."""
    import torch

    from deepfleet.config import ModelSection
    from deepfleet.data import Preprocessing
    from deepfleet.deploy import export_bundle
    from deepfleet.models import mlp

    torch.manual_seed(0)
    prep = Preprocessing.for_samples(
        "uint8", 1 / 255, (3, *IMAGE_SIZE), image=IMAGE_TRANSFORM
    ).normalised(IMAGE_MEAN, IMAGE_STD)
    return export_bundle(
        mlp((3, *IMAGE_SIZE), 3, hidden=[16]),
        folder / "bundle",
        name="pictures",
        model_section=ModelSection(name="mlp", params={"hidden": [16]}),
        input_shape=(3, *IMAGE_SIZE),
        class_names=["a", "b", "c"],
        preprocessing=prep,
    )
