"""The ASGI app: Open Inference Protocol v2 REST, /predict, /generate, /metrics, behind
bearer auth, and (with a gRPC port) OIP v2 over gRPC in the same process.

The routes live in three routers: _routes_model (model metadata, infer, /predict,
generate) and _routes_repository (the repository index, load, unload), every route of which
depends on the token check, and _routes_open (health, readiness, server metadata, /metrics),
open by design; FastAPI's own OpenAPI schema and docs are open too. This module assembles
them: the lifespan that loads the models into `app.state.repository` and starts the gRPC
server on the same event loop (so both protocols share the models, batchers, limits and
metrics), the error handlers that answer every error as JSON, and the request metrics.
"""

from __future__ import annotations

import gc
import logging
import time
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect
from starlette.responses import Response

from deepfleet import __version__
from deepfleet.deploy.serve import _routes_model, _routes_open, _routes_repository
from deepfleet.deploy.serve import _schemas as schemas
from deepfleet.deploy.serve._config import ServeConfig
from deepfleet.deploy.serve._connection import CUT_OFF, METRICS_STATE
from deepfleet.deploy.serve._errors import RequestError
from deepfleet.deploy.serve._hot import HotRoutes
from deepfleet.deploy.serve._http import json_response
from deepfleet.deploy.serve._metrics import Metrics
from deepfleet.deploy.serve._repository import Repository

log = logging.getLogger("deepfleet.serve")

# The routes that answer without a token, as docs/deploy.md lists them (tested).
OPEN_ROUTES = frozenset(
    {
        "/v2",
        "/v2/health/live",
        "/v2/health/ready",
        "/v2/models/{name}/ready",
        "/v2/models/{name}/versions/{version}/ready",
        "/metrics",
        "/openapi.json",
        "/docs",
        "/docs/oauth2-redirect",
        "/redoc",
    }
)


class _MetricsMiddleware:
    """Counts and times every HTTP request by route template (bounded label values)."""

    def __init__(self, app, metrics: Metrics):
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started = time.perf_counter()
        status = 500

        async def send_status(message):
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            route = getattr(scope.get("route"), "path", "unmatched")
            self.metrics.requests.labels(route, scope["method"], str(status)).inc()
            self.metrics.latency.labels(route).observe(time.perf_counter() - started)


@asynccontextmanager
async def _lifespan(app: FastAPI):
    config: ServeConfig = app.state.config
    repository = Repository(config, app.state.metrics)
    await repository.start()
    app.state.repository = repository
    grpc_server = None
    if config.grpc_port:
        # Imported only when asked for: the generated protobuf modules stay out of processes
        # that serve HTTP alone.
        from deepfleet.deploy.serve._grpc import start_grpc

        grpc_server = await start_grpc(config, repository, app.state.metrics)
    # Everything loaded so far (torch, onnxruntime, the app) lives as long as the process:
    # freezing it keeps the collector from rescanning it in full collections, which
    # otherwise pause every request for hundreds of milliseconds under load.
    gc.collect()
    gc.freeze()
    ready = sum(row["state"] == "READY" for row in repository.index())
    log.info("serving %d model versions from %s", ready, config.bundle)
    try:
        # uvicorn hands this state to every connection too: the connection layer counts
        # its refusals in the same metrics.
        yield {METRICS_STATE: app.state.metrics}
    finally:
        if grpc_server is not None:
            await grpc_server.stop(grace=2)
        await repository.stop()


async def _request_error(request: Request, err: RequestError):
    return json_response({"error": err.message}, err.status, err.headers)


async def _http_error(request: Request, err: HTTPException):
    return json_response({"error": str(err.detail)}, err.status_code, err.headers)


async def _validation_error(request: Request, err: RequestValidationError):
    first = err.errors()[0] if err.errors() else {"msg": "invalid request"}
    return json_response(
        {"error": f"{'.'.join(map(str, first.get('loc', [])))}: {first['msg']}"}, 400
    )


# nginx's code for "client closed the request": no one reads the answer, but /metrics
# counts it apart from the server's errors.
CLIENT_CLOSED = 499


async def _client_gone(request: Request, err: ClientDisconnect):
    """The client left before its body was read: one line, not a traceback and not a 5xx.
    A body the connection layer cut off (408) was logged there already."""
    status = request.scope.get(CUT_OFF)
    if status is None:
        client = request.client.host if request.client else "a client"
        log.info("%s disconnected before sending the whole request body", client)
    return Response(status_code=status or CLIENT_CLOSED)


async def _internal_error(request: Request, err: Exception):
    log.exception("internal error")
    return json_response({"error": f"internal error: {type(err).__name__}"}, 500)


def create_app(config: ServeConfig) -> FastAPI:
    """The app for one worker process; the models load (and are verified) at startup."""
    app = FastAPI(
        title="deepfleet",
        version=__version__,
        lifespan=_lifespan,
        description="Open Inference Protocol v2 (REST) for deepfleet bundles.",
        # The server's metrics are its own (Prometheus, /metrics). FastAPI's OpenTelemetry
        # instruments, left on, look up the global providers on every request.
        telemetry={"tracing": False, "metrics": False, "logs": False},
    )
    app.state.config = config
    app.state.metrics = Metrics()
    app.state.repository = None
    # Added first, so it runs inside the metrics: the inference routes skip FastAPI's router.
    app.add_middleware(HotRoutes)
    app.add_middleware(_MetricsMiddleware, metrics=app.state.metrics)
    app.add_exception_handler(RequestError, _request_error)
    app.add_exception_handler(HTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(ClientDisconnect, _client_gone)
    app.add_exception_handler(Exception, _internal_error)
    app.include_router(_routes_open.router)
    app.include_router(_routes_model.router)
    app.include_router(_routes_repository.router)

    def openapi():
        if app.openapi_schema is None:
            schema = get_openapi(
                title=app.title, version=app.version, description=app.description, routes=app.routes
            )
            schema.setdefault("components", {}).setdefault("schemas", {}).update(
                schemas.component_schemas()
            )
            schema["components"]["securitySchemes"] = {
                "bearer": {"type": "http", "scheme": "bearer"}
            }
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi
    return app


def app_from_env() -> FastAPI:
    """uvicorn's app factory in each worker process (settings come from the environment)."""
    return create_app(ServeConfig.from_env())
