"""OIP v2 gRPC messages to and from what the HTTP side already speaks.

An infer request becomes the same JSON-shaped payload the REST route parses, so one parser
(_protocol.parse_infer) validates both protocols and names problems the same way. Input
values come either typed (`contents`, the field that matches the datatype) or as
`raw_input_contents` (little-endian bytes in row-major order, one entry per input). Answers
always carry `raw_output_contents`, as Triton's do and as tritonclient reads them.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from deepfleet.deploy.serve._errors import RequestError
from deepfleet.deploy.serve._outputs import Output
from deepfleet.deploy.serve._proto import grpc_predict_v2_pb2 as pb
from deepfleet.deploy.serve._protocol import output_tensors

# Which typed field of InferTensorContents holds each datatype (FP16 travels raw only).
CONTENTS_FIELD = {
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
    "BYTES": "bytes_contents",  # encoded image files, one entry each
}


def _typed_values(tensor: pb.ModelInferRequest.InferInputTensor) -> list:
    if tensor.datatype == "FP16":
        raise RequestError(400, f"input {tensor.name!r}: FP16 values travel as raw contents")
    field = CONTENTS_FIELD.get(tensor.datatype)
    return list(getattr(tensor.contents, field)) if field else []


def infer_payload(request: pb.ModelInferRequest) -> dict[str, Any]:
    """The request as the REST JSON body (parse_infer checks names, shape and values)."""
    raw = list(request.raw_input_contents)
    if raw and len(raw) != len(request.inputs):
        raise RequestError(
            400,
            f"raw_input_contents has {len(raw)} entries for {len(request.inputs)} inputs "
            "(one per input, in order)",
        )
    inputs = []
    for i, tensor in enumerate(request.inputs):
        if raw and tensor.HasField("contents"):
            raise RequestError(
                400, f"input {tensor.name!r}: give contents or raw_input_contents, not both"
            )
        # Raw bytes go to the parser as they are: it checks their size against the shape.
        values = raw[i] if raw else _typed_values(tensor)
        inputs.append(
            {
                "name": tensor.name,
                "datatype": tensor.datatype,
                "shape": list(tensor.shape),
                "data": values,
            }
        )
    payload: dict[str, Any] = {"inputs": inputs}
    if request.id:
        payload["id"] = request.id
    if request.outputs:
        payload["outputs"] = [{"name": o.name} for o in request.outputs]
    return payload


def infer_response(
    outputs: np.ndarray,
    wanted: list[str],
    offered: dict[str, Output],
    model: str,
    version: str,
    request_id: str | None,
) -> pb.ModelInferResponse:
    """The wanted output tensors, each as raw little-endian bytes (the same bytes the REST
    binary extension sends)."""
    answer = pb.ModelInferResponse(model_name=model, model_version=version, id=request_id or "")
    tensors, parts = output_tensors(outputs, wanted, offered, frozenset(wanted))
    for tensor, part in zip(tensors, parts, strict=True):
        answer.outputs.add(name=tensor["name"], datatype=tensor["datatype"], shape=tensor["shape"])
        answer.raw_output_contents.append(part)
    return answer


def metadata_response(meta: dict[str, Any]) -> pb.ModelMetadataResponse:
    """The REST model metadata as the gRPC message (which has no `parameters`)."""
    answer = pb.ModelMetadataResponse(
        name=meta["name"], versions=meta["versions"], platform=meta["platform"]
    )
    for spec, target in ((meta["inputs"], answer.inputs), (meta["outputs"], answer.outputs)):
        for tensor in spec:
            target.add(name=tensor["name"], datatype=tensor["datatype"], shape=tensor["shape"])
    return answer
