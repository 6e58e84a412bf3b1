"""Settings of `deepfleet serve`, validated up front and passable to worker processes."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

from deepfleet.errors import UserError

CONFIG_ENV = "DEEPFLEET_SERVE_CONFIG"
TOKEN_ENV = "DEEPFLEET_SERVE_TOKEN"


@dataclass(frozen=True)
class ServeConfig:
    """Everything the server needs; every queue, body and pool has a bound."""

    bundle: str  # one bundle folder, or a model repository (<model>/<version>/ bundles)
    host: str = "127.0.0.1"
    port: int = 8000
    grpc_port: int = 0  # OIP v2 over gRPC on this port of `host`; 0: no gRPC
    poll_interval_s: float = 0.0  # rescan the repository this often; 0: only on load calls
    max_versions: int = 0  # serve the latest N versions of each model; 0: every version
    backend: str = "auto"  # auto: onnxruntime when the bundle has model.onnx, else torch
    device: str = "cpu"
    compiled: bool = False  # torch backend through torch.compile
    batching: bool = True  # dynamic micro-batching; off: one request per model call
    max_batch_size: int = 64  # rows per model call, and the most rows one request may hold
    max_delay_ms: float = 2.0  # longest a batch waits for requests already being received
    max_queue: int = 256  # queued requests; beyond it 503 with Retry-After
    max_body_bytes: int = 8 << 20  # larger bodies get 413
    timeout_s: float = 10.0  # per request, from arrival to answer; then 503
    replicas: int = 1  # model copies (threads) inside each worker process
    workers: int = 1  # uvicorn worker processes
    max_connections: int = 1024  # open connections per worker; beyond it 503
    # The connection layer's bounds (_connection): one client address cannot take every
    # slot, a request head is bounded in bytes, fields and time, a body in time.
    max_client_connections: int = 256  # open connections from one address, per worker
    max_header_bytes: int = 32 << 10  # request line and header fields; larger gets 431
    max_headers: int = 100  # header fields per request; more gets 431
    header_timeout_s: float = 10.0  # first byte of a request to the end of its head; 408
    body_timeout_s: float = 60.0  # end of the head to the end of the body; then 408
    max_new_tokens: int = 256  # the most tokens one generate request may ask for
    token: str | None = None  # bearer token for inference and model metadata
    public_key: str | None = None  # verify the bundle's signature at start
    access_log: bool = False

    def __post_init__(self) -> None:
        checks = [
            (self.port >= 0 and self.port < 65536, f"--port must be 0..65535, got {self.port}"),
            (
                0 <= self.grpc_port < 65536,
                f"--grpc-port must be 0..65535 (0: no gRPC), got {self.grpc_port}",
            ),
            (
                self.grpc_port == 0 or self.grpc_port != self.port,
                f"--grpc-port {self.grpc_port} is also the HTTP --port",
            ),
            (
                self.poll_interval_s >= 0,
                f"--poll-interval must be >= 0 (0: off), got {self.poll_interval_s}",
            ),
            (self.max_versions >= 0, f"--max-versions must be >= 0, got {self.max_versions}"),
            (self.max_batch_size >= 1, f"--max-batch-size must be >= 1, got {self.max_batch_size}"),
            (self.max_delay_ms >= 0, f"--max-delay-ms must be >= 0, got {self.max_delay_ms}"),
            (self.max_queue >= 1, f"--max-queue must be >= 1, got {self.max_queue}"),
            (self.max_body_bytes >= 1024, "--max-body-kb must be >= 1"),
            (self.timeout_s > 0, f"--timeout must be > 0, got {self.timeout_s}"),
            (self.replicas >= 1, f"--replicas must be >= 1, got {self.replicas}"),
            (self.workers >= 1, f"--workers must be >= 1, got {self.workers}"),
            (self.max_connections >= 1, "--max-connections must be >= 1"),
            (self.max_client_connections >= 1, "--max-connections-per-client must be >= 1"),
            (self.max_header_bytes >= 1024, "--max-header-kb must be >= 1"),
            (self.max_headers >= 8, f"--max-headers must be >= 8, got {self.max_headers}"),
            (self.header_timeout_s > 0, "--header-timeout must be > 0"),
            (self.body_timeout_s > 0, "--body-timeout must be > 0"),
            (
                self.max_new_tokens >= 1,
                f"--max-new-tokens must be >= 1, got {self.max_new_tokens}",
            ),
            (
                self.backend in ("auto", "torch", "onnxruntime"),
                f"--backend must be auto, torch or onnxruntime, got {self.backend!r}",
            ),
            (
                self.token is None or len(self.token) >= 16,
                "the bearer token must be at least 16 characters",
            ),
        ]
        for ok, message in checks:
            if not ok:
                raise UserError(message)

    def to_env(self) -> str:
        """JSON for worker processes; the token travels separately (TOKEN_ENV)."""
        return json.dumps({k: v for k, v in asdict(self).items() if k != "token"})

    @classmethod
    def from_env(cls) -> ServeConfig:
        raw = json.loads(os.environ[CONFIG_ENV])
        return cls(**raw, token=os.environ.get(TOKEN_ENV) or None)


def read_token(token_file: Path | None, no_auth: bool) -> str | None:
    """The bearer token from --token-file or $DEEPFLEET_SERVE_TOKEN; None only with --no-auth."""
    token = None
    if token_file is not None:
        if not token_file.is_file():
            raise UserError(f"{token_file}: token file not found")
        token = token_file.read_text(encoding="utf-8").strip()
    elif os.environ.get(TOKEN_ENV):
        token = os.environ[TOKEN_ENV].strip()
    if no_auth:
        if token:
            raise UserError("--no-auth was given together with a token; choose one")
        return None
    if not token:
        raise UserError(
            f"serving needs a bearer token: --token-file FILE or ${TOKEN_ENV} "
            "(or --no-auth to serve without authentication)"
        )
    return token
