"""Open Inference Protocol v2 (REST, JSON tensors) and the simple /predict body: parsing,
validation and answers. Every way a body can be wrong becomes a RequestError(400) that names
the problem; nothing a client sends reaches the model unless it is a finite array of exactly
the model's input shape.

Clients send raw samples, as the data set stores them (digits: whole numbers 0..16, declared
UINT8 in the metadata; token ids for a model of text); the bundle's preprocessing
(float32(raw) x scale, or int64(raw) for token ids, which must lie below the vocabulary size)
turns them into the model's input here, as evaluate and predict do, so the same sample gets
the same answer. Which outputs there are follows the bundle's task (_outputs).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from deepfleet.data import Preprocessing
from deepfleet.deploy._onnx import INPUT_NAME
from deepfleet.deploy.serve._errors import RequestError
from deepfleet.tasks import softmax

# Any numeric tensor type is accepted and read as raw values (the preprocessing decides what
# those may be); the metadata declares the data set's own type.
NUMERIC_TYPES = {
    "FP16": np.float16,
    "FP32": np.float32,
    "FP64": np.float64,
    "UINT8": np.uint8,
    "UINT16": np.uint16,
    "UINT32": np.uint32,
    "UINT64": np.uint64,
    "INT8": np.int8,
    "INT16": np.int16,
    "INT32": np.int32,
    "INT64": np.int64,
}


def datatype_of(dtype: str) -> str:
    """The OIP datatype name of a NumPy dtype name (uint8 -> UINT8)."""
    for name, kind in NUMERIC_TYPES.items():
        if np.dtype(kind) == np.dtype(dtype):
            return name
    return "FP32"


OUTPUTS = ("logits", "probabilities", "label")


def _reject_constant(name: str) -> Any:
    raise RequestError(400, f"{name} is not allowed: tensor data must be finite numbers")


def parse_json(body: bytes) -> Any:
    """The body as JSON; NaN and Infinity literals are refused, not silently accepted."""
    if not body:
        raise RequestError(400, "malformed JSON: the request body is empty")
    try:
        return json.loads(body, parse_constant=_reject_constant)
    except RequestError:
        raise
    except json.JSONDecodeError as err:
        raise RequestError(
            400, f"malformed JSON: {err.msg} at line {err.lineno} column {err.colno}"
        ) from None
    except UnicodeDecodeError:
        raise RequestError(400, "malformed JSON: the body is not UTF-8") from None
    except RecursionError:
        raise RequestError(400, "malformed JSON: nested too deeply") from None


def _has_bool(data: Any) -> bool:
    """JSON true/false would silently become 1.0/0.0 in numpy; find them instead."""
    if isinstance(data, list):
        return (
            any(_has_bool(v) for v in data)
            if data and isinstance(data[0], list)
            else any(v is True or v is False for v in data)
        )
    return data is True or data is False


def to_array(data: Any, what: str) -> np.ndarray:
    """Nested or flat JSON numbers -> float64 array, with a clear error for anything else."""
    if not isinstance(data, list):
        raise RequestError(400, f"{what}: data must be a JSON array of numbers")
    try:
        array = np.asarray(data)
    except ValueError:
        raise RequestError(
            400, f"{what}: data is a ragged array (rows of different lengths)"
        ) from None
    if array.dtype.kind not in "fiu" or _has_bool(data):
        raise RequestError(400, f"{what}: data must hold numbers only (found {_kind_name(array)})")
    return array


def _kind_name(array: np.ndarray) -> str:
    return {"b": "booleans", "U": "strings", "S": "strings"}.get(
        array.dtype.kind, "non-numeric values"
    )


def _model_input(
    array: np.ndarray, what: str, preprocessing: Preprocessing, vocab: int | None = None
) -> np.ndarray:
    """Raw values -> the model's input, refusing what the raw data cannot hold (and token ids
    outside the vocabulary)."""
    with np.errstate(over="ignore", invalid="ignore"):
        raw = np.ascontiguousarray(array, dtype=np.float64)
    if not np.isfinite(raw).all():
        raise RequestError(400, f"{what}: data contains NaN or Inf")
    problem = preprocessing.raw_problem(raw)
    if problem:
        raise RequestError(400, f"{what}: {problem}")
    if vocab is not None and raw.size and (raw.min() < 0 or raw.max() >= vocab):
        raise RequestError(
            400, f"{what}: token ids must be whole numbers in 0..{vocab - 1} (the vocabulary)"
        )
    with np.errstate(over="ignore", invalid="ignore"):
        x = preprocessing.apply(raw)
    if not np.isfinite(x).all():
        raise RequestError(400, f"{what}: data contains a value beyond float32 range")
    return x


def _shape(value: Any, what: str) -> list[int]:
    if not isinstance(value, list) or not all(
        isinstance(d, int) and not isinstance(d, bool) for d in value
    ):
        raise RequestError(
            400, f"{what}: shape must be a list of integers, got {json.dumps(value)[:80]}"
        )
    return value


def parse_infer(
    payload: Any,
    input_shape: tuple[int, ...],
    max_rows: int,
    preprocessing: Preprocessing,
    offered: Sequence[str] = OUTPUTS,
    defaults: Sequence[str] | None = None,
    vocab: int | None = None,
) -> tuple[np.ndarray, str | None, list[str]]:
    """An OIP v2 inference request -> (model input batch, request id, output names wanted).

    `offered` are the output names the model has; `defaults` those sent when the request
    names none (all offered when None); `vocab` bounds token ids.
    """
    if not isinstance(payload, dict):
        raise RequestError(400, "request body must be a JSON object with an 'inputs' list")
    request_id = payload.get("id")
    if request_id is not None and not isinstance(request_id, str):
        raise RequestError(400, "'id' must be a string")
    if not isinstance(payload.get("parameters", {}), dict):
        raise RequestError(400, "'parameters' must be a JSON object")
    inputs = payload.get("inputs")
    if not isinstance(inputs, list) or not inputs:
        raise RequestError(
            400, f"missing input tensor '{INPUT_NAME}' (the request has no 'inputs')"
        )
    names = [t.get("name") if isinstance(t, dict) else None for t in inputs]
    for name in names:
        if name != INPUT_NAME:
            raise RequestError(
                400,
                f"unknown input tensor {json.dumps(name)} (the model "
                f"takes one input, '{INPUT_NAME}')",
            )
    if len(names) > 1:
        raise RequestError(400, f"input tensor '{INPUT_NAME}' is given {len(names)} times")
    tensor = inputs[0]
    what = f"input '{INPUT_NAME}'"
    for key in ("shape", "datatype", "data"):
        if key not in tensor:
            raise RequestError(400, f"{what}: '{key}' is missing")
    datatype = tensor["datatype"]
    if datatype not in NUMERIC_TYPES:
        raise RequestError(
            400,
            f"{what}: datatype {json.dumps(datatype)[:40]} is not "
            f"supported; send {datatype_of(preprocessing.raw_dtype)} (any "
            "numeric type is read as raw values)",
        )
    shape = _shape(tensor["shape"], what)
    expected = [-1, *input_shape]
    if len(shape) != len(expected) or list(shape[1:]) != list(input_shape) or shape[0] < 1:
        raise RequestError(400, f"{what}: shape {shape} does not match the model's {expected}")
    if shape[0] > max_rows:
        raise RequestError(
            400, f"{what}: batch of {shape[0]} rows exceeds the server's max batch size {max_rows}"
        )
    array = to_array(tensor["data"], what)
    if array.size != math.prod(shape):
        raise RequestError(
            400, f"{what}: data has {array.size} values but shape {shape} needs {math.prod(shape)}"
        )
    x = _model_input(array.reshape(shape), what, preprocessing, vocab)
    wanted = _wanted_outputs(payload.get("outputs"), offered, defaults)
    return x, request_id, wanted


def _wanted_outputs(
    outputs: Any, offered: Sequence[str], defaults: Sequence[str] | None
) -> list[str]:
    if outputs is None:
        return list(offered if defaults is None else defaults)
    if not isinstance(outputs, list) or not all(isinstance(o, dict) for o in outputs):
        raise RequestError(400, "'outputs' must be a list of objects with a 'name'")
    names = [o.get("name") for o in outputs]
    for name in names:
        if name not in offered:
            raise RequestError(
                400, f"unknown output {json.dumps(name)} (the model has {', '.join(offered)})"
            )
    return names


def infer_response(
    tensors: list[dict[str, Any]], model: str, version: str, request_id: str | None
) -> dict[str, Any]:
    """The OIP v2 answer around the output tensors (see _outputs.infer_outputs)."""
    answer: dict[str, Any] = {"model_name": model, "model_version": version, "outputs": tensors}
    if request_id is not None:
        answer["id"] = request_id
    return answer


def parse_predict(
    payload: Any,
    input_shape: tuple[int, ...],
    max_rows: int,
    preprocessing: Preprocessing,
    vocab: int | None = None,
) -> np.ndarray:
    """{"instances": [raw sample, ...]}: each nested in the input shape, or flat."""
    if not isinstance(payload, dict) or "instances" not in payload:
        raise RequestError(400, "request body must be a JSON object with an 'instances' list")
    instances = payload["instances"]
    if not isinstance(instances, list) or not instances:
        raise RequestError(400, "'instances' must be a non-empty list of samples")
    if len(instances) > max_rows:
        raise RequestError(
            400, f"{len(instances)} instances exceed the server's max batch size {max_rows}"
        )
    flat = math.prod(input_shape)
    rows = []
    for i, instance in enumerate(instances):
        array = to_array(instance, f"instance {i}")
        if array.shape != tuple(input_shape) and array.shape != (flat,):
            raise RequestError(
                400,
                f"instance {i} has shape {list(array.shape)}; the model "
                f"takes {list(input_shape)} (or {flat} flat values)",
            )
        rows.append(_model_input(array.reshape(input_shape), f"instance {i}", preprocessing, vocab))
    return np.stack(rows)


def predict_response(logits: np.ndarray, class_names: list[str], model: str) -> dict[str, Any]:
    """/predict's answer for a classification bundle."""
    probs = softmax(logits)
    labels = probs.argmax(axis=1)
    return {
        "model_name": model,
        "predictions": [
            {
                "label": int(k),
                "label_name": class_names[k],
                "confidence": float(p[k]),
                "probabilities": p.tolist(),
            }
            for k, p in zip(labels, probs, strict=True)
        ],
    }
