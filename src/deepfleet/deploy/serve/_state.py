"""What one worker process serves, kept in `app.state`, and the FastAPI dependencies that
hand it to the routes: the loaded model, the token check, the model a path names."""

from __future__ import annotations

import asyncio
import hmac
import time
from dataclasses import dataclass, field

import numpy as np
from fastapi import Request

from deepfleet.data import Preprocessing
from deepfleet.deploy._bundle import LoadedBundle
from deepfleet.deploy.serve._batcher import DynamicBatcher
from deepfleet.deploy.serve._config import ServeConfig
from deepfleet.deploy.serve._errors import RequestError
from deepfleet.deploy.serve._generation import Generation
from deepfleet.deploy.serve._metrics import Metrics
from deepfleet.deploy.serve._outputs import Output, outputs_of
from deepfleet.deploy.serve._protocol import InputSpec


@dataclass
class Served:
    """The loaded bundle, its batcher, its outputs and (for a causal LM with a tokenizer)
    its text generation (set by the app's lifespan)."""

    config: ServeConfig
    bundle: LoadedBundle
    batcher: DynamicBatcher
    platform: str
    generation: Generation | None = None
    outputs: dict[str, Output] = field(init=False)
    input_spec: InputSpec = field(init=False)

    def __post_init__(self) -> None:
        self.outputs = outputs_of(self.bundle)
        b = self.bundle
        self.input_spec = InputSpec(
            b.input_shape, self.config.max_batch_size, b.preprocessing, b.vocab_size
        )

    @property
    def version(self) -> str:
        return self.bundle.version

    @property
    def preprocessing(self) -> Preprocessing:
        return self.bundle.preprocessing

    async def run(self, x: np.ndarray, arrived: float, metrics: Metrics) -> np.ndarray:
        """Logits for `x` through the batcher, within what is left of the request timeout."""
        timeout = self.config.timeout_s
        remaining = timeout - (time.perf_counter() - arrived)
        try:
            return await asyncio.wait_for(self.batcher.submit(x), max(remaining, 1e-3))
        except TimeoutError:
            metrics.rejected.labels("timeout").inc()
            raise RequestError(
                503, f"timed out after {timeout:g}s waiting for the model", {"Retry-After": "1"}
            ) from None


def config_of(request: Request) -> ServeConfig:
    return request.app.state.config


def metrics_of(request: Request) -> Metrics:
    return request.app.state.metrics


def served(request: Request) -> Served:
    return request.app.state.served


def require_token(request: Request) -> None:
    """The bearer-token check, a dependency of every router that is not open by design."""
    token = config_of(request).token
    if token is None:  # --no-auth
        return
    given = request.headers.get("authorization", "")
    scheme, _, credentials = given.partition(" ")
    # compare_digest: the time taken does not reveal how much of the token matched.
    if not (
        scheme.lower() == "bearer" and hmac.compare_digest(credentials.encode(), token.encode())
    ):
        metrics_of(request).rejected.labels("unauthorized").inc()
        raise RequestError(
            401, "missing or wrong bearer token", {"WWW-Authenticate": 'Bearer realm="deepfleet"'}
        )


def model_named(request: Request, name: str, version: str | None = None) -> Served:
    """The served model when the path names it (and its version), else 404."""
    s = served(request)
    if name != s.bundle.name:
        raise RequestError(404, f"unknown model {name!r}; this server serves {s.bundle.name!r}")
    if version is not None and version != s.version:
        raise RequestError(
            404, f"unknown version {version!r} of model {name!r}; it has {s.version!r}"
        )
    return s
