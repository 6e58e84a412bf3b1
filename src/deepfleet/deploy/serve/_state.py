"""What one worker process serves, kept in `app.state`, and the FastAPI dependencies that
hand it to the routes: the loaded models (a Repository of Served versions), the token check,
the model a path names."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hmac
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
from fastapi import Request

from deepfleet.data import Preprocessing
from deepfleet.deploy._bundle import LoadedBundle
from deepfleet.deploy.serve._batcher import DynamicBatcher
from deepfleet.deploy.serve._binary import BinaryData
from deepfleet.deploy.serve._config import ServeConfig
from deepfleet.deploy.serve._errors import RequestError
from deepfleet.deploy.serve._generation import Generation
from deepfleet.deploy.serve._inflight import InFlight
from deepfleet.deploy.serve._metrics import Metrics
from deepfleet.deploy.serve._outputs import Output, outputs_of
from deepfleet.deploy.serve._protocol import InferRequest, InputSpec, parse_infer

if TYPE_CHECKING:
    from deepfleet.deploy.serve._repository import Repository


@dataclass
class Served:
    """One served model version: the loaded bundle, its batcher, its outputs and (for a
    causal LM with a tokenizer) its text generation; `name` and `version` are the
    repository's (a single bundle: its own name, version "1"); `inflight` counts the
    requests admitted to it, which it answers before it is retired."""

    config: ServeConfig
    bundle: LoadedBundle
    batcher: DynamicBatcher
    platform: str
    generation: Generation | None = None
    name: str = ""
    version: str = "1"
    outputs: dict[str, Output] = field(init=False)
    inflight: InFlight = field(init=False)
    input_spec: InputSpec = field(init=False)

    def __post_init__(self) -> None:
        self.name = self.name or self.bundle.name
        self.outputs = outputs_of(self.bundle)
        self.inflight = InFlight()
        b = self.bundle
        self.input_spec = InputSpec(
            b.input_shape, self.config.max_batch_size, b.preprocessing, b.vocab_size
        )

    @property
    def preprocessing(self) -> Preprocessing:
        return self.bundle.preprocessing

    async def parse(self, payload: Any, binary: BinaryData | None = None) -> InferRequest:
        """An OIP infer request's payload, checked against this model (parse_infer). Image
        files take milliseconds each to decode, so they are decoded off the event loop."""
        call = functools.partial(
            parse_infer,
            payload,
            self.input_spec,
            offered=list(self.outputs),
            defaults=[o.name for o in self.outputs.values() if o.default],
            binary=binary,
        )
        return await asyncio.to_thread(call) if self.preprocessing.image else call()

    async def run(self, x: np.ndarray, arrived: float, metrics: Metrics) -> np.ndarray:
        """Logits for `x` through the batcher, within what is left of the request timeout."""
        timeout = self.config.timeout_s
        remaining = timeout - (time.perf_counter() - arrived)
        try:
            # asyncio.timeout, not wait_for: wait_for wraps the wait in a task of its own,
            # one more task and loop hop per request.
            async with asyncio.timeout(max(remaining, 1e-3)):
                return await self.batcher.submit(x)
        except TimeoutError:
            metrics.rejected.labels("timeout").inc()
            raise RequestError(
                503, f"timed out after {timeout:g}s waiting for the model", {"Retry-After": "1"}
            ) from None


def config_of(request: Request) -> ServeConfig:
    return request.app.state.config


def metrics_of(request: Request) -> Metrics:
    return request.app.state.metrics


def repository_of(request: Request) -> Repository:
    return request.app.state.repository


def served(request: Request) -> Served:
    """The model of the routes that name none (/predict, /generate): the only model's
    latest version; a 400 when the server holds several models."""
    return repository_of(request).get(None)


@contextlib.contextmanager
def admitted(request: Request, name: str | None, version: str | None = None) -> Iterator[Served]:
    """The model version a request runs on (`name` None: the only model), counted in flight
    until the request is answered, so a retiring version finishes it first."""
    s = repository_of(request).get(name, version)
    with s.inflight.admitted():
        yield s


async def require_token(request: Request) -> None:
    """The bearer-token check, a dependency of every router that is not open by design.
    A coroutine although it never awaits: FastAPI runs a plain function dependency in its
    thread pool, a thread hop per request for a check that takes microseconds."""
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


def ready_model_name(request: Request, name: str, version: str | None = None) -> str:
    """The model's name when that version answers; for the open readiness routes, so the
    error names no reason (the index, behind the token, has it)."""
    from deepfleet.deploy.serve._repository import NotReady

    try:
        return repository_of(request).get(name, version).name
    except NotReady:
        which = f"model {name!r}" + (f" version {version}" if version else "")
        raise RequestError(400, f"{which} is not ready") from None


def model_named(request: Request, name: str, version: str | None = None) -> Served:
    """The model version a path names (no version: the latest ready one); 404 when the
    repository has no such model or version, 400 when that version is not ready."""
    return repository_of(request).get(name, version)
