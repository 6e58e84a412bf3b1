"""Starting the server: check the bundle here (one clear error), then hand over to uvicorn."""

from __future__ import annotations

import os
import tempfile

from deepfleet.deploy.serve._config import CONFIG_ENV, TOKEN_ENV, ServeConfig
from deepfleet.deploy.serve._loading import check_before_start


def serve(config: ServeConfig) -> None:
    """Serve until interrupted. Blocks; several worker processes when config.workers > 1."""
    import uvicorn

    # Fail before binding a port: a missing, tampered or unsigned bundle is the user's error.
    check_before_start(config)
    os.environ[CONFIG_ENV] = config.to_env()
    if config.token:
        os.environ[TOKEN_ENV] = config.token
    if config.workers > 1 and not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="deepfleet-metrics-")
    uvicorn.run(
        "deepfleet.deploy.serve._app:app_from_env",
        factory=True,
        host=config.host,
        port=config.port,
        workers=config.workers,
        access_log=config.access_log,
        limit_concurrency=config.max_connections,
        timeout_graceful_shutdown=5,
        log_level="info",
    )
