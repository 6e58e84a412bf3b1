"""The model repository extension over HTTP, as Triton documents it
(docs/protocol/extension_model_repository.md), behind the bearer token:

POST /v2/repository/index                  [{"name", "version", "state", "reason"}, ...]
POST /v2/repository/models/{name}/load     load (or reload) a model's versions from disk
POST /v2/repository/models/{name}/unload   stop serving a model once it has drained

Bodies are optional JSON objects: the index takes {"ready": true} (only READY versions);
unload takes Triton's {"parameters": {"unload_dependents": bool}} (no model here has
dependents); load refuses Triton's config and file overrides (a version is a signed bundle
on disk, never a body).
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request

from deepfleet.deploy.serve._errors import RequestError
from deepfleet.deploy.serve._http import json_response, read_body
from deepfleet.deploy.serve._protocol import parse_json
from deepfleet.deploy.serve._state import config_of, repository_of, require_token

router = APIRouter(dependencies=[Depends(require_token)], tags=["repository"])


async def _body(request: Request) -> dict[str, Any]:
    body = await read_body(request, config_of(request).max_body_bytes)
    if not body.strip():
        return {}
    payload = parse_json(body)
    if not isinstance(payload, dict):
        raise RequestError(400, "the request body must be a JSON object")
    parameters = payload.get("parameters", {})
    if not isinstance(parameters, dict):
        raise RequestError(400, "'parameters' must be a JSON object")
    return payload


@router.post("/v2/repository/index")
async def repository_index(request: Request):
    ready = (await _body(request)).get("ready", False)
    if not isinstance(ready, bool):
        raise RequestError(400, "'ready' must be true or false")
    return json_response(repository_of(request).index(ready_only=ready))


@router.post("/v2/repository/models/{name}/load")
async def repository_load(name: str, request: Request):
    parameters = (await _body(request)).get("parameters", {})
    if parameters:
        raise RequestError(
            400,
            f"load parameters are not supported (got {', '.join(sorted(parameters))[:80]}): "
            "a version is a bundle folder in the repository",
        )
    await repository_of(request).load(name)
    return json_response({})


@router.post("/v2/repository/models/{name}/unload")
async def repository_unload(name: str, request: Request):
    parameters = (await _body(request)).get("parameters", {})
    unknown = set(parameters) - {"unload_dependents"}
    if unknown:
        raise RequestError(400, f"unknown unload parameters: {', '.join(sorted(unknown))[:80]}")
    await repository_of(request).unload(name)
    return json_response({})
