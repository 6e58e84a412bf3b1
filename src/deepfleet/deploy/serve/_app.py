"""The ASGI app: Open Inference Protocol v2 REST, /predict, /metrics, behind bearer auth.

Routes that need the token: model metadata, infer, /predict. Open: health, readiness,
server metadata, /metrics, the OpenAPI schema (/openapi.json, /docs).
"""

from __future__ import annotations

import asyncio
import gc
import hmac
import logging
import time
from contextlib import asynccontextmanager
from dataclasses import dataclass

import numpy as np
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from starlette.exceptions import HTTPException
from starlette.responses import JSONResponse, Response

from deepfleet import __version__
from deepfleet.data import Preprocessing
from deepfleet.deploy._backends import Backend, cpu_threads_per_process, make_backend
from deepfleet.deploy._bundle import LoadedBundle
from deepfleet.deploy._onnx import INPUT_NAME
from deepfleet.deploy._signing import open_bundle
from deepfleet.deploy.serve import _schemas as schemas
from deepfleet.deploy.serve._batcher import DynamicBatcher
from deepfleet.deploy.serve._config import ServeConfig
from deepfleet.deploy.serve._errors import RequestError
from deepfleet.deploy.serve._metrics import Metrics
from deepfleet.deploy.serve._protocol import (
    datatype_of,
    infer_response,
    parse_infer,
    parse_json,
    parse_predict,
    predict_response,
)

log = logging.getLogger("deepfleet.serve")


@dataclass
class _State:
    config: ServeConfig
    bundle: LoadedBundle
    batcher: DynamicBatcher
    platform: str

    @property
    def version(self) -> str:
        return self.bundle.version

    @property
    def preprocessing(self) -> Preprocessing:
        return self.bundle.preprocessing


def _backends(config: ServeConfig, bundle: LoadedBundle) -> list[Backend]:
    threads = cpu_threads_per_process(config.replicas * config.workers)
    backends = [make_backend(bundle, config.backend, config.device, config.compiled, threads)
                for _ in range(config.replicas)]
    for backend in backends:  # warm up: first calls allocate (and compile, when compiled)
        for rows in sorted({1, config.max_batch_size}):
            backend(np.zeros((rows, *bundle.input_shape), np.float32))
    return backends


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


async def _read_body(request: Request, limit: int) -> bytes:
    """The body, refused with 413 as soon as it is known to exceed `limit` bytes."""
    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > limit:
        raise RequestError(413, f"request body of {length} bytes exceeds the limit of "
                           f"{limit} bytes")
    chunks, size = [], 0
    async for chunk in request.stream():  # also bounds chunked bodies without a length
        size += len(chunk)
        if size > limit:
            raise RequestError(413, f"request body exceeds the limit of {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def _json(obj, status: int = 200, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(obj, status_code=status, headers=headers)


def create_app(config: ServeConfig) -> FastAPI:
    """The app for one worker process; the bundle loads (and is verified) at startup."""
    metrics = Metrics()
    expected = f"Bearer {config.token}".encode() if config.token else None
    holder: dict[str, _State] = {}

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        bundle = open_bundle(config.bundle, config.public_key, device="cpu")
        backends = _backends(config, bundle)
        batcher = DynamicBatcher(backends, metrics, max_batch_size=config.max_batch_size,
                                 max_delay_s=config.max_delay_ms / 1000,
                                 max_queue=config.max_queue, batching=config.batching)
        batcher.start()
        holder["state"] = _State(config, bundle, batcher, backends[0].name)
        # Everything loaded so far (torch, onnxruntime, the app) lives as long as the process:
        # freezing it keeps the collector from rescanning it in full collections, which
        # otherwise pause every request for hundreds of milliseconds under load.
        gc.collect()
        gc.freeze()
        log.info("serving %s (%s, %d replicas)", bundle.name, backends[0].name, len(backends))
        try:
            yield
        finally:
            await batcher.stop()

    app = FastAPI(title="deepfleet", version=__version__, lifespan=lifespan,
                  description="Open Inference Protocol v2 (REST) for one deepfleet bundle.")
    app.add_middleware(_MetricsMiddleware, metrics=metrics)

    def state() -> _State:
        return holder["state"]

    def authorize(request: Request) -> None:
        if expected is None:
            return
        given = request.headers.get("authorization", "").encode()
        # compare_digest: the time taken does not reveal how much of the token matched.
        if not hmac.compare_digest(given, expected):
            metrics.rejected.labels("unauthorized").inc()
            raise RequestError(401, "missing or wrong bearer token",
                               {"WWW-Authenticate": 'Bearer realm="deepfleet"'})

    def check_model(name: str, version: str | None = None) -> _State:
        s = state()
        if name != s.bundle.name:
            raise RequestError(404, f"unknown model {name!r}; this server serves "
                               f"{s.bundle.name!r}")
        if version is not None and version != s.version:
            raise RequestError(404, f"unknown version {version!r} of model {name!r}; "
                               f"it has {s.version!r}")
        return s

    async def run_model(s: _State, x: np.ndarray, arrived: float) -> np.ndarray:
        remaining = config.timeout_s - (time.perf_counter() - arrived)
        try:
            return await asyncio.wait_for(s.batcher.submit(x), max(remaining, 1e-3))
        except TimeoutError:
            metrics.rejected.labels("timeout").inc()
            raise RequestError(503, f"timed out after {config.timeout_s:g}s waiting for "
                               "the model", {"Retry-After": "1"}) from None

    @app.exception_handler(RequestError)
    async def _request_error(request: Request, err: RequestError):
        return _json({"error": err.message}, err.status, err.headers)

    @app.exception_handler(HTTPException)
    async def _http_error(request: Request, err: HTTPException):
        return _json({"error": str(err.detail)}, err.status_code, err.headers)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, err: RequestValidationError):
        first = err.errors()[0] if err.errors() else {"msg": "invalid request"}
        return _json({"error": f"{'.'.join(map(str, first.get('loc', [])))}: "
                               f"{first['msg']}"}, 400)

    @app.exception_handler(Exception)
    async def _internal_error(request: Request, err: Exception):
        log.exception("internal error")
        return _json({"error": f"internal error: {type(err).__name__}"}, 500)

    @app.get("/v2", tags=["health"])
    async def server_metadata():
        return _json({"name": "deepfleet", "version": __version__, "extensions": []})

    @app.get("/v2/health/live", tags=["health"])
    async def live():
        return _json({"live": True})

    @app.get("/v2/health/ready", tags=["health"])
    async def ready():
        return _json({"ready": "state" in holder})

    def metadata(s: _State) -> dict:
        return {"name": s.bundle.name, "versions": [s.version], "platform": s.platform,
                "inputs": [{"name": INPUT_NAME,
                            "datatype": datatype_of(s.preprocessing.raw_dtype),
                            "shape": [-1, *s.bundle.input_shape]}],
                "outputs": [
                    {"name": "logits", "datatype": "FP32",
                     "shape": [-1, len(s.bundle.class_names)]},
                    {"name": "probabilities", "datatype": "FP32",
                     "shape": [-1, len(s.bundle.class_names)]},
                    {"name": "label", "datatype": "INT64", "shape": [-1]}],
                "parameters": {"class_names": s.bundle.class_names,
                               "max_batch_size": config.max_batch_size,
                               # raw input -> model input: float32(raw) x input_scale
                               "input_scale": s.preprocessing.scale}}

    meta_doc = {200: {"model": schemas.ModelMetadata}, 404: {"model": schemas.ErrorBody}}

    @app.get("/v2/models/{name}", tags=["models"], responses=meta_doc)
    async def model_metadata(name: str, request: Request):
        authorize(request)
        return _json(metadata(check_model(name)))

    @app.get("/v2/models/{name}/versions/{version}", tags=["models"], responses=meta_doc)
    async def model_version_metadata(name: str, version: str, request: Request):
        authorize(request)
        return _json(metadata(check_model(name, version)))

    @app.get("/v2/models/{name}/ready", tags=["models"])
    async def model_ready(name: str):
        return _json({"name": check_model(name).bundle.name, "ready": True})

    @app.get("/v2/models/{name}/versions/{version}/ready", tags=["models"])
    async def model_version_ready(name: str, version: str):
        return _json({"name": check_model(name, version).bundle.name, "ready": True})

    infer_doc = {"responses": {200: {"model": schemas.InferResponse},
                               400: {"model": schemas.ErrorBody},
                               401: {"model": schemas.ErrorBody},
                               413: {"model": schemas.ErrorBody},
                               503: {"model": schemas.ErrorBody}},
                 "openapi_extra": schemas.request_body(schemas.InferRequest)}

    async def infer(request: Request, name: str, version: str | None) -> JSONResponse:
        arrived = time.perf_counter()
        authorize(request)
        s = check_model(name, version)
        with s.batcher.arriving():
            payload = parse_json(await _read_body(request, config.max_body_bytes))
            x, request_id, wanted = parse_infer(payload, s.bundle.input_shape,
                                                config.max_batch_size, s.preprocessing)
        logits = await run_model(s, x, arrived)
        return _json(infer_response(logits, wanted, s.bundle.name, s.version, request_id))

    @app.post("/v2/models/{name}/infer", tags=["inference"], **infer_doc)
    async def model_infer(name: str, request: Request):
        return await infer(request, name, None)

    @app.post("/v2/models/{name}/versions/{version}/infer", tags=["inference"], **infer_doc)
    async def model_version_infer(name: str, version: str, request: Request):
        return await infer(request, name, version)

    @app.post("/predict", tags=["inference"], responses={
        200: {"model": schemas.PredictResponse}, 400: {"model": schemas.ErrorBody}},
        openapi_extra=schemas.request_body(schemas.PredictRequest))
    async def predict(request: Request):
        arrived = time.perf_counter()
        authorize(request)
        s = state()
        with s.batcher.arriving():
            payload = parse_json(await _read_body(request, config.max_body_bytes))
            x = parse_predict(payload, s.bundle.input_shape, config.max_batch_size,
                              s.preprocessing)
        logits = await run_model(s, x, arrived)
        return _json(predict_response(logits, s.bundle.class_names, s.bundle.name))

    @app.get("/metrics", tags=["health"])
    async def prometheus_metrics():
        s = state()
        return Response(metrics.render(), media_type=metrics.content_type,
                        headers={"X-Queue-Depth": str(s.batcher.depth)})

    def openapi():
        if app.openapi_schema is None:
            schema = get_openapi(title=app.title, version=app.version,
                                 description=app.description, routes=app.routes)
            schema.setdefault("components", {}).setdefault("schemas", {}).update(
                schemas.component_schemas())
            schema["components"]["securitySchemes"] = {
                "bearer": {"type": "http", "scheme": "bearer"}}
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi
    return app


def app_from_env() -> FastAPI:
    """uvicorn's app factory in each worker process (settings come from the environment)."""
    return create_app(ServeConfig.from_env())
