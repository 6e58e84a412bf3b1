"""sign, verify, serve: one small function each (predict and export live with the job stages)."""

from __future__ import annotations

from pathlib import Path

import typer

from deepfleet.cli._app import app, console

PUBLIC_KEY_ENV = "DEEPFLEET_PUBLIC_KEY"
PUBLIC_KEY_HELP = (
    f"Verify the bundle's signature with this EC public key first "
    f"(default ${PUBLIC_KEY_ENV} when set)."
)


@app.command()
def sign(
    bundle: Path = typer.Argument(..., help="A bundle folder."),
    key: Path = typer.Option(..., "--key", help="EC private key (deepfleet keys new --signing)."),
) -> None:
    """Sign a bundle with OpenSSF model signing; writes BUNDLE/model.sig."""
    from deepfleet.deploy import sign_bundle

    console.print(f"signature: {sign_bundle(bundle, key)}")


@app.command()
def verify(
    bundle: Path = typer.Argument(..., help="A signed bundle folder."),
    public_key: Path = typer.Option(..., "--public-key", help="The signer's EC public key."),
) -> None:
    """Verify a bundle's signature and that no file was changed, added or removed."""
    from deepfleet.deploy import verify_bundle

    verify_bundle(bundle, public_key)
    console.print(f"{bundle}: signature valid; every file matches")


@app.command()
def serve(
    bundle: str = typer.Argument(
        ...,
        help="A bundle folder or URL (s3://...), or a model repository of "
        "REPO/<model>/<version>/ bundles.",
    ),
    host: str = typer.Option("127.0.0.1", "--host", help="Address to bind (loopback by default)."),
    port: int = typer.Option(8000, "--port", help="TCP port."),
    grpc_port: int = typer.Option(
        0, "--grpc-port", help="Also serve OIP v2 over gRPC on this port of --host (0: no gRPC)."
    ),
    poll_interval: float = typer.Option(
        0.0,
        "--poll-interval",
        help="Rescan the repository for new, changed or removed versions every this many "
        "seconds (0: only on a repository load call).",
    ),
    max_versions: int = typer.Option(
        0, "--max-versions", help="Serve the latest N versions of each model (0: all)."
    ),
    backend: str = typer.Option(
        "auto",
        "--backend",
        help="auto (onnxruntime when the bundle has ONNX), torch or onnxruntime.",
    ),
    device: str = typer.Option("cpu", "--device", help="cpu, cuda, cuda:N, xpu, mps or auto."),
    compiled: bool = typer.Option(False, "--compile", help="torch backend: torch.compile."),
    batching: bool = typer.Option(
        True, "--batching/--no-batching", help="Dynamic micro-batching of concurrent requests."
    ),
    max_batch_size: int = typer.Option(
        64, "--max-batch-size", help="Rows per model call (and per request)."
    ),
    max_delay_ms: float = typer.Option(
        2.0, "--max-delay-ms", help="Longest a batch waits for more requests."
    ),
    max_queue: int = typer.Option(256, "--max-queue", help="Queued requests before 503."),
    max_body_kb: int = typer.Option(8192, "--max-body-kb", help="Body limit (413 above)."),
    timeout: float = typer.Option(10.0, "--timeout", help="Per-request timeout in seconds."),
    replicas: int = typer.Option(1, "--replicas", help="Model copies per worker process."),
    workers: int = typer.Option(1, "--workers", help="uvicorn worker processes."),
    max_connections: int = typer.Option(
        1024, "--max-connections", help="Open connections per worker before 503."
    ),
    max_client_connections: int = typer.Option(
        256,
        "--max-connections-per-client",
        help="Open connections from one client address per worker before 503.",
    ),
    max_header_kb: int = typer.Option(
        32, "--max-header-kb", help="Request line and header fields (431 above)."
    ),
    max_headers: int = typer.Option(100, "--max-headers", help="Header fields (431 above)."),
    header_timeout: float = typer.Option(
        10.0, "--header-timeout", help="Seconds for a request's head to arrive (then 408)."
    ),
    body_timeout: float = typer.Option(
        60.0, "--body-timeout", help="Seconds for a request's body to arrive (then 408)."
    ),
    token_file: Path = typer.Option(
        None, "--token-file", help="File holding the bearer token (default $DEEPFLEET_SERVE_TOKEN)."
    ),
    no_auth: bool = typer.Option(False, "--no-auth", help="Serve without a bearer token."),
    public_key: Path = typer.Option(
        None, "--public-key", envvar=PUBLIC_KEY_ENV, help=PUBLIC_KEY_HELP
    ),
    access_log: bool = typer.Option(False, "--access-log", help="Log every request."),
) -> None:
    """Serve a bundle or a model repository: Open Inference Protocol v2 over HTTP (and gRPC
    with --grpc-port), the repository API, /predict, /metrics."""
    from deepfleet.deploy.serve import ServeConfig, read_token
    from deepfleet.deploy.serve import serve as run_server

    config = ServeConfig(
        bundle=str(local_bundle(bundle)),
        host=host,
        port=port,
        grpc_port=grpc_port,
        poll_interval_s=poll_interval,
        max_versions=max_versions,
        backend=backend,
        device=device,
        compiled=compiled,
        batching=batching,
        max_batch_size=max_batch_size,
        max_delay_ms=max_delay_ms,
        max_queue=max_queue,
        max_body_bytes=max_body_kb * 1024,
        timeout_s=timeout,
        replicas=replicas,
        workers=workers,
        max_connections=max_connections,
        max_client_connections=max_client_connections,
        max_header_bytes=max_header_kb * 1024,
        max_headers=max_headers,
        header_timeout_s=header_timeout,
        body_timeout_s=body_timeout,
        token=read_token(token_file, no_auth),
        public_key=str(public_key) if public_key else None,
        access_log=access_log,
    )
    run_server(config)


def local_bundle(bundle: str) -> Path:
    """A bundle folder, or a bundle URL fetched into this node's cache (checked as a
    folder is by whoever opens it; the endpoint from $AWS_ENDPOINT_URL, as for every URL)."""
    from deepfleet.storage import is_remote

    if not is_remote(bundle):
        return Path(bundle)
    from deepfleet.deploy._bundle import fetch_bundle

    return fetch_bundle(bundle)
