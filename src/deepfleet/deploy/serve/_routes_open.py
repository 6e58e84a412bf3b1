"""Routes open by design (no token): health, readiness and Prometheus metrics, which probes
and scrapers call without credentials. Nothing here reveals the model's inputs or runs it."""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.responses import Response

from deepfleet import __version__
from deepfleet.deploy.serve._http import json_response
from deepfleet.deploy.serve._state import metrics_of, ready_model_name, repository_of

router = APIRouter()

# The OIP / Triton protocol extensions this server implements.
EXTENSIONS = ["binary_tensor_data", "model_repository"]


@router.get("/v2", tags=["health"])
async def server_metadata():
    return json_response({"name": "deepfleet", "version": __version__, "extensions": EXTENSIONS})


@router.get("/v2/health/live", tags=["health"])
async def live():
    return json_response({"live": True})


@router.get("/v2/health/ready", tags=["health"])
async def ready(request: Request):
    repository = getattr(request.app.state, "repository", None)
    return json_response({"ready": repository is not None and repository.ready})


@router.get("/v2/models/{name}/ready", tags=["models"])
async def model_ready(name: str, request: Request):
    return json_response({"name": ready_model_name(request, name), "ready": True})


@router.get("/v2/models/{name}/versions/{version}/ready", tags=["models"])
async def model_version_ready(name: str, version: str, request: Request):
    return json_response({"name": ready_model_name(request, name, version), "ready": True})


@router.get("/metrics", tags=["health"])
async def prometheus_metrics(request: Request):
    metrics = metrics_of(request)
    return Response(
        metrics.render(),
        media_type=metrics.content_type,
        headers={"X-Queue-Depth": str(repository_of(request).queue_depth)},
    )
