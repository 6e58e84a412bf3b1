"""Routes behind the bearer token: model metadata, inference (OIP v2 and /predict) and, for a
causal LM with a tokenizer, text generation streamed as Server-Sent Events."""

from __future__ import annotations

import json
import time

from fastapi import APIRouter, Depends, Request
from starlette.responses import StreamingResponse

from deepfleet.deploy._onnx import INPUT_NAME
from deepfleet.deploy.serve import _schemas as schemas
from deepfleet.deploy.serve._binary import HEADER as BINARY_HEADER
from deepfleet.deploy.serve._binary import split_request
from deepfleet.deploy.serve._errors import RequestError
from deepfleet.deploy.serve._generation import parse_generate
from deepfleet.deploy.serve._http import infer_answer, json_response, read_body
from deepfleet.deploy.serve._images import BYTES
from deepfleet.deploy.serve._outputs import predictions
from deepfleet.deploy.serve._protocol import (
    datatype_of,
    infer_response,
    output_tensors,
    parse_json,
    parse_predict,
    predict_response,
)
from deepfleet.deploy.serve._state import (
    Served,
    admitted,
    config_of,
    metrics_of,
    model_named,
    repository_of,
    require_token,
    served,
)

# Every route of this router needs the token: a route added here cannot forget it.
router = APIRouter(dependencies=[Depends(require_token)])


# The platform names the OIP and Triton use for the backends' model formats.
PLATFORMS = {"onnxruntime": "onnx_onnxv1", "torch": "pytorch_libtorch"}
PLATFORMS["torch-compiled"] = PLATFORMS["torch"]


def model_metadata_of(s: Served, versions: list[str]) -> dict:
    """OIP model metadata of one served version (`versions`: the model's READY ones)."""
    bundle = s.bundle
    # OIP parameter values are scalars: the class names travel as one JSON string.
    parameters = {
        "version": s.version,
        "digest": bundle.version,  # the weights' sha256 prefix: which bundle this version is
        "task": bundle.task.name,
        "class_names": json.dumps(bundle.class_names),
        "max_batch_size": s.config.max_batch_size,
        # raw input -> model input: float32(raw) x input_scale (token ids: int64(raw))
        "input_scale": s.preprocessing.scale,
    }
    if bundle.vocab_size is not None:
        parameters["vocab_size"] = bundle.vocab_size
    if s.generation is not None:
        parameters["generate_context_length"] = s.generation.context
        parameters["generate_max_new_tokens"] = s.config.max_new_tokens
    image = s.preprocessing.image
    if image:
        # Encoded image files (BYTES) are the input; decoded pixels as UINT8 [-1, C, H, W]
        # are accepted too, and this is the transform that makes them.
        parameters["image_transform"] = json.dumps(image)
        parameters["pixels_shape"] = json.dumps([-1, *bundle.input_shape])
    return {
        "name": s.name,
        "versions": versions,
        "platform": PLATFORMS.get(s.platform, s.platform),
        "inputs": [
            {
                "name": INPUT_NAME,
                "datatype": BYTES if image else datatype_of(s.preprocessing.raw_dtype),
                "shape": [-1] if image else [-1, *bundle.input_shape],
            }
        ],
        "outputs": [o.metadata() for o in s.outputs.values()],
        "parameters": parameters,
    }


META_DOC = {200: {"model": schemas.ModelMetadata}, 404: {"model": schemas.ErrorBody}}


@router.get("/v2/models/{name}", tags=["models"], responses=META_DOC)
async def model_metadata(name: str, request: Request):
    s = model_named(request, name)
    return json_response(model_metadata_of(s, repository_of(request).versions(name)))


@router.get("/v2/models/{name}/versions/{version}", tags=["models"], responses=META_DOC)
async def model_version_metadata(name: str, version: str, request: Request):
    s = model_named(request, name, version)
    return json_response(model_metadata_of(s, repository_of(request).versions(name)))


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
    config = config_of(request)
    # Admitted to one version for the whole request: a version swap lets it finish there.
    with admitted(request, name, version) as s:
        with s.batcher.arriving():
            body = await read_body(request, config.max_body_bytes)
            json_part, binary = split_request(body, request.headers.get(BINARY_HEADER))
            req = await s.parse(parse_json(json_part), binary)
        outputs = await s.run(req.x, arrived, metrics_of(request))
    tensors, parts = output_tensors(outputs, req.outputs, s.outputs, req.binary_outputs)
    return infer_answer(infer_response(tensors, s.name, s.version, req.id), parts)


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
    config = config_of(request)
    with admitted(request, None) as s:  # the only model (400 when there are several)
        with s.batcher.arriving():
            payload = parse_json(await read_body(request, config.max_body_bytes))
            x = parse_predict(
                payload,
                s.bundle.input_shape,
                config.max_batch_size,
                s.preprocessing,
                vocab=s.bundle.vocab_size,
            )
        outputs = await s.run(x, arrived, metrics_of(request))
    if s.bundle.task.name == "classification":
        return json_response(predict_response(outputs, s.bundle.class_names, s.name))
    return json_response({"model_name": s.name, "predictions": predictions(s.bundle, outputs)})


GENERATE_DOC = {
    "responses": {
        200: {
            "description": "Server-Sent Events: one per token, then one that says done.",
            "content": {"text/event-stream": {"schema": {"type": "string"}}},
        },
        400: {"model": schemas.ErrorBody},
        401: {"model": schemas.ErrorBody},
        404: {"model": schemas.ErrorBody},
        413: {"model": schemas.ErrorBody},
        503: {"model": schemas.ErrorBody},
    },
    "openapi_extra": schemas.request_body(schemas.GenerateRequest),
}
SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


async def _generate(request: Request, s: Served):
    arrived = time.perf_counter()
    config = config_of(request)
    generation = s.generation
    if generation is None:
        why = (
            "it has no tokenizer.json"
            if s.bundle.task.name == "causal_lm"
            else f"it is a {s.bundle.task.name} model"
        )
        raise RequestError(404, f"model {s.bundle.name!r} does not generate text ({why})")
    # In flight until the generation runs; from then on the version's retirement waits for
    # the generation itself (Generation.active) until its stream ends.
    with s.inflight.admitted():
        payload = parse_json(await read_body(request, config.max_body_bytes))
        body = parse_generate(payload, config.max_new_tokens)
        ids = generation.prompt_ids(body.prompt)
        events = await generation.start(body, ids, arrived)
    return StreamingResponse(events, media_type="text/event-stream", headers=SSE_HEADERS)


@router.post("/v2/models/{name}/generate", tags=["generation"], **GENERATE_DOC)
async def model_generate(name: str, request: Request):
    return await _generate(request, model_named(request, name))


@router.post("/generate", tags=["generation"], **GENERATE_DOC)
async def generate_text(request: Request):
    return await _generate(request, served(request))
