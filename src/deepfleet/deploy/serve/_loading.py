"""One bundle folder into one served model version, and back out.

`open_version` does the slow part (verify the signature when a public key is configured and
every file's sha256 always, build the backends, warm them up) and is called in a worker
thread, so the server keeps answering while a new version loads. `start_version` then
attaches a batcher on the event loop; `stop_version` ends it once it has drained.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from deepfleet.deploy._backends import Backend, cpu_threads_per_process, make_backend
from deepfleet.deploy._bundle import LoadedBundle
from deepfleet.deploy._signing import open_bundle
from deepfleet.deploy.serve._batcher import DynamicBatcher
from deepfleet.deploy.serve._config import ServeConfig
from deepfleet.deploy.serve._generation import generation_for
from deepfleet.deploy.serve._layout import layout_of
from deepfleet.deploy.serve._metrics import Metrics
from deepfleet.deploy.serve._state import Served
from deepfleet.errors import UserError


@dataclass
class Opened:
    bundle: LoadedBundle
    backends: list[Backend]


def _backends(config: ServeConfig, bundle: LoadedBundle) -> list[Backend]:
    threads = cpu_threads_per_process(config.replicas * config.workers)
    backends = [
        make_backend(bundle, config.backend, config.device, config.compiled, threads)
        for _ in range(config.replicas)
    ]
    dtype = np.dtype(bundle.input_dtype)
    for backend in backends:  # warm up: first calls allocate (and compile, when compiled)
        for rows in sorted({1, config.max_batch_size}):
            backend(np.zeros((rows, *bundle.input_shape), dtype))
    return backends


def open_version(config: ServeConfig, path: Path) -> Opened:
    """Verify and load the bundle at `path`; raises (UserError naming the problem) when it
    fails verification. Blocking: call it in a worker thread."""
    bundle = open_bundle(path, config.public_key, device="cpu")
    return Opened(bundle, _backends(config, bundle))


def start_version(
    config: ServeConfig, metrics: Metrics, opened: Opened, name: str, version: int
) -> Served:
    """The opened bundle behind a running batcher (on the event loop)."""
    batcher = DynamicBatcher(
        opened.backends,
        metrics,
        max_batch_size=config.max_batch_size,
        max_delay_s=config.max_delay_ms / 1000,
        max_queue=config.max_queue,
        batching=config.batching,
    )
    batcher.start()
    generation = generation_for(opened.bundle, config, metrics)
    platform = opened.backends[0].name
    return Served(config, opened.bundle, batcher, platform, generation, name, str(version))


async def stop_version(served: Served) -> None:
    await served.batcher.stop()
    if served.generation is not None:
        served.generation.stop()


def check_before_start(config: ServeConfig) -> None:
    """The user's mistakes, found before any port is bound: a path that is neither a bundle
    nor a repository, a single bundle that fails verification (in a repository such a
    version is UNAVAILABLE instead, and the rest serve), a gRPC port already taken."""
    layout = layout_of(config.bundle)
    if layout.single is not None:
        open_bundle(config.bundle, config.public_key)
    if config.grpc_port:
        with socket.socket() as sock:
            try:
                sock.bind((config.host, config.grpc_port))
            except OSError as err:
                raise UserError(
                    f"--grpc-port {config.grpc_port}: cannot bind {config.host} ({err.strerror})"
                ) from None
