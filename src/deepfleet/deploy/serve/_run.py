"""Starting the server: check the bundle here (one clear error), then hand over to uvicorn."""

from __future__ import annotations

import copy
import ipaddress
import os
import sys
import tempfile

from deepfleet.deploy.serve._config import CONFIG_ENV, TOKEN_ENV, ServeConfig
from deepfleet.deploy.serve._loading import check_before_start

# uvicorn builds one per connection in each worker: httptools with the bounds it lacks.
PROTOCOL = "deepfleet.deploy.serve._connection:GuardedHttpToolsProtocol"


def exposure_warning(config: ServeConfig) -> str | None:
    """The warning for serving without a token on an address other machines can reach."""
    if config.token is not None:
        return None
    try:
        loopback = ipaddress.ip_address(config.host).is_loopback
    except ValueError:  # a host name: only "localhost" is known to stay on this machine
        loopback = config.host == "localhost"
    if loopback:
        return None
    return (
        f"WARNING: serving on {config.host} WITHOUT AUTHENTICATION (--no-auth): anyone who "
        "can reach this address can run the model. Give a token (--token-file) or bind "
        "127.0.0.1."
    )


def _log_config() -> dict:
    """uvicorn's logging, with the server's own lines (deepfleet.serve) in the same format."""
    from uvicorn.config import LOGGING_CONFIG

    log_config = copy.deepcopy(LOGGING_CONFIG)
    log_config["loggers"]["deepfleet"] = {
        "handlers": ["default"],
        "level": "INFO",
        "propagate": False,
    }
    return log_config


def serve(config: ServeConfig) -> None:
    """Serve until interrupted. Blocks; several worker processes when config.workers > 1."""
    import uvicorn

    warning = exposure_warning(config)
    if warning:  # before uvicorn's own lines, so it is the first thing the operator sees
        print(warning, file=sys.stderr, flush=True)
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
        # Connection limits, head and body bounds are the protocol's (_connection), which
        # answers them as JSON; uvicorn's limit_concurrency would answer in plain text.
        http=PROTOCOL,
        ws="none",
        timeout_graceful_shutdown=5,
        log_level="info",
        log_config=_log_config(),
    )
