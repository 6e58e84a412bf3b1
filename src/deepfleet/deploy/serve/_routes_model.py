"""Routes behind the bearer token: model metadata and inference (OIP v2 and /predict)."""

from __future__ import annotations

import time

from fastapi import APIRouter, Depends, Request

from deepfleet.deploy._onnx import INPUT_NAME
from deepfleet.deploy.serve import _schemas as schemas
from deepfleet.deploy.serve._http import json_response, read_body
from deepfleet.deploy.serve._protocol import (
    datatype_of,
    infer_response,
    parse_infer,
    parse_json,
    parse_predict,
    predict_response,
)
from deepfleet.deploy.serve._state import (
    Served,
    config_of,
    metrics_of,
    model_named,
    require_token,
    served,
)

# Every route of this router needs the token: a route added here cannot forget it.
router = APIRouter(dependencies=[Depends(require_token)])


def _metadata(s: Served) -> dict:
    classes = len(s.bundle.class_names)
    return {
        "name": s.bundle.name,
        "versions": [s.version],
        "platform": s.platform,
        "inputs": [
            {
                "name": INPUT_NAME,
                "datatype": datatype_of(s.preprocessing.raw_dtype),
                "shape": [-1, *s.bundle.input_shape],
            }
        ],
        "outputs": [
            {"name": "logits", "datatype": "FP32", "shape": [-1, classes]},
            {"name": "probabilities", "datatype": "FP32", "shape": [-1, classes]},
            {"name": "label", "datatype": "INT64", "shape": [-1]},
        ],
        "parameters": {
            "class_names": s.bundle.class_names,
            "max_batch_size": s.config.max_batch_size,
            # raw input -> model input: float32(raw) x input_scale
            "input_scale": s.preprocessing.scale,
        },
    }


META_DOC = {200: {"model": schemas.ModelMetadata}, 404: {"model": schemas.ErrorBody}}


@router.get("/v2/models/{name}", tags=["models"], responses=META_DOC)
async def model_metadata(name: str, request: Request):
    return json_response(_metadata(model_named(request, name)))


@router.get("/v2/models/{name}/versions/{version}", tags=["models"], responses=META_DOC)
async def model_version_metadata(name: str, version: str, request: Request):
    return json_response(_metadata(model_named(request, name, version)))


INFER_DOC = {
    "responses": {
        200: {"model": schemas.InferResponse},
        400: {"model": schemas.ErrorBody},
        401: {"model": schemas.ErrorBody},
        413: {"model": schemas.ErrorBody},
        503: {"model": schemas.ErrorBody},
    },
    "openapi_extra": schemas.request_body(schemas.InferRequest),
}


async def _infer(request: Request, name: str, version: str | None):
    arrived = time.perf_counter()
    s, config = model_named(request, name, version), config_of(request)
    with s.batcher.arriving():
        payload = parse_json(await read_body(request, config.max_body_bytes))
        x, request_id, wanted = parse_infer(
            payload, s.bundle.input_shape, config.max_batch_size, s.preprocessing
        )
    logits = await s.run(x, arrived, metrics_of(request))
    return json_response(infer_response(logits, wanted, s.bundle.name, s.version, request_id))


@router.post("/v2/models/{name}/infer", tags=["inference"], **INFER_DOC)
async def model_infer(name: str, request: Request):
    return await _infer(request, name, None)


@router.post("/v2/models/{name}/versions/{version}/infer", tags=["inference"], **INFER_DOC)
async def model_version_infer(name: str, version: str, request: Request):
    return await _infer(request, name, version)


@router.post(
    "/predict",
    tags=["inference"],
    responses={200: {"model": schemas.PredictResponse}, 400: {"model": schemas.ErrorBody}},
    openapi_extra=schemas.request_body(schemas.PredictRequest),
)
async def predict(request: Request):
    arrived = time.perf_counter()
    s, config = served(request), config_of(request)
    with s.batcher.arriving():
        payload = parse_json(await read_body(request, config.max_body_bytes))
        x = parse_predict(payload, s.bundle.input_shape, config.max_batch_size, s.preprocessing)
    logits = await s.run(x, arrived, metrics_of(request))
    return json_response(predict_response(logits, s.bundle.class_names, s.bundle.name))
