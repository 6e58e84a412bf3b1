"""Open Inference Protocol v2 (tensors as JSON or as binary data) and the simple /predict
body: parsing, validation and answers. Every way a body can be wrong becomes a
RequestError(400) that names the problem; nothing a client sends reaches the model unless it
is a finite array of exactly the model's input shape.

model_input(name, datatype, shape, data, spec) is the one check of an input tensor, whatever
carried it (JSON values, raw bytes, a NumPy array), so every front end validates alike.
Parameters this server does not implement are refused by name (check_parameters).

Clients send raw samples, as the data set stores them (digits: whole numbers 0..16, declared
UINT8 in the metadata; token ids for a model of text); the bundle's preprocessing
(float32(raw) x scale, or int64(raw) for token ids, which must lie below the vocabulary size)
turns them into the model's input here, as evaluate and predict do, so the same sample gets
the same answer. Which outputs there are follows the bundle's task (_outputs). A bundle
trained on encoded images also takes the image files themselves, as a BYTES tensor (_images).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from deepfleet.data import Preprocessing
from deepfleet.deploy._onnx import INPUT_NAME
from deepfleet.deploy.serve._binary import BinaryData
from deepfleet.deploy.serve._errors import RequestError
from deepfleet.deploy.serve._images import BYTES, image_pixels
from deepfleet.deploy.serve._outputs import Output
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
    except ValueError:  # Python refuses integers of more than sys.get_int_max_str_digits()
        raise RequestError(
            400, "malformed JSON: a number has too many digits to be a tensor value"
        ) from None


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


@dataclass(frozen=True)
class InputSpec:
    """What the served model takes: the raw sample shape, the most rows per request, the
    preprocessing that turns raw values into its input, and the vocabulary (token ids)."""

    shape: tuple[int, ...]
    max_rows: int
    preprocessing: Preprocessing
    vocab: int | None = None


@dataclass(frozen=True)
class InferRequest:
    """A validated OIP v2 inference request: the model input batch, the request id, the
    output names wanted (in order) and those to send as binary data."""

    x: np.ndarray
    id: str | None
    outputs: list[str]
    binary_outputs: frozenset[str]


# The parameters this server implements (the binary tensor data extension); any other is
# refused with 400 rather than silently ignored.
REQUEST_PARAMETERS = {"binary_data_output": bool}
INPUT_PARAMETERS = {"binary_data_size": int}
OUTPUT_PARAMETERS = {"binary_data": bool}


def check_parameters(parameters: Any, allowed: dict[str, type], where: str) -> dict[str, Any]:
    """`parameters` as a dict of the names this server implements, with their types checked."""
    if parameters is None:
        return {}
    if not isinstance(parameters, dict):
        raise RequestError(400, f"{where}: 'parameters' must be a JSON object")
    unknown = sorted(k for k in parameters if k not in allowed)
    if unknown:
        raise RequestError(
            400,
            f"{where}: unsupported parameter{'s' if len(unknown) > 1 else ''} "
            f"{', '.join(json.dumps(k) for k in unknown)} (this server implements "
            f"{', '.join(allowed) or 'none'})",
        )
    for key, kind in allowed.items():
        value = parameters.get(key)
        if value is not None and (type(value) is not kind or (kind is int and value < 0)):
            wanted = "true or false" if kind is bool else "a non-negative integer"
            raise RequestError(400, f"{where}: parameter '{key}' must be {wanted}")
    return parameters


def raw_tensor(data: bytes | memoryview, datatype: str, shape: list[int], what: str) -> np.ndarray:
    """Raw tensor bytes (row-major, little-endian, as the binary extension and gRPC's
    raw_input_contents carry them) -> a flat array, refused unless the size is exact."""
    dtype = np.dtype(NUMERIC_TYPES[datatype]).newbyteorder("<")
    needed = math.prod(shape) * dtype.itemsize
    if len(data) != needed:
        raise RequestError(
            400,
            f"{what}: {len(data)} bytes of binary data, but shape {shape} of {datatype} "
            f"needs {needed}",
        )
    return np.frombuffer(data, dtype)


def model_input(name: Any, datatype: Any, shape: Any, data: Any, spec: InputSpec) -> np.ndarray:
    """One input tensor -> the validated model input batch, for any front end.

    `data` is JSON values (a flat or nested list), a NumPy array, or raw little-endian bytes.
    Every way the tensor can be wrong becomes RequestError(400) naming the problem.
    """
    _check_input_name(name)
    what = f"input '{INPUT_NAME}'"
    # Encoded image files, decoded by the transform the bundle records (_images).
    if datatype == BYTES and spec.preprocessing.image:
        pixels = image_pixels(_shape(shape, what), data, spec.preprocessing, what, spec.max_rows)
        return _model_input(pixels, what, spec.preprocessing)
    if not isinstance(datatype, str) or datatype not in NUMERIC_TYPES:
        raise RequestError(
            400,
            f"{what}: datatype {json.dumps(datatype)[:40]} is not "
            f"supported; send {datatype_of(spec.preprocessing.raw_dtype)} (any "
            "numeric type is read as raw values)"
            + (" or BYTES (encoded image files)" if spec.preprocessing.image else ""),
        )
    shape = _shape(shape, what)
    expected = [-1, *spec.shape]
    if len(shape) != len(expected) or list(shape[1:]) != list(spec.shape) or shape[0] < 1:
        raise RequestError(400, f"{what}: shape {shape} does not match the model's {expected}")
    if shape[0] > spec.max_rows:
        raise RequestError(
            400,
            f"{what}: batch of {shape[0]} rows exceeds the server's max batch size {spec.max_rows}",
        )
    if isinstance(data, bytes | bytearray | memoryview):
        array = raw_tensor(data, datatype, shape, what)
    elif isinstance(data, np.ndarray):
        array = data
        if array.dtype.kind not in "fiu":
            raise RequestError(400, f"{what}: data must hold numbers only")
    else:
        array = to_array(data, what)
    if array.size != math.prod(shape):
        raise RequestError(
            400, f"{what}: data has {array.size} values but shape {shape} needs {math.prod(shape)}"
        )
    return _model_input(array.reshape(shape), what, spec.preprocessing, spec.vocab)


def parse_infer(
    payload: Any,
    spec: InputSpec,
    offered: Sequence[str] = OUTPUTS,
    defaults: Sequence[str] | None = None,
    binary: BinaryData | None = None,
) -> InferRequest:
    """An OIP v2 inference request (its JSON part, and the binary data after it when the
    request uses the binary tensor data extension) -> InferRequest.

    `offered` are the output names the model has; `defaults` those sent when the request
    names none (all offered when None).
    """
    if not isinstance(payload, dict):
        raise RequestError(400, "request body must be a JSON object with an 'inputs' list")
    request_id = payload.get("id")
    if request_id is not None and not isinstance(request_id, str):
        raise RequestError(400, "'id' must be a string")
    parameters = check_parameters(payload.get("parameters"), REQUEST_PARAMETERS, "request")
    inputs = payload.get("inputs")
    if not isinstance(inputs, list) or not inputs:
        raise RequestError(
            400, f"missing input tensor '{INPUT_NAME}' (the request has no 'inputs')"
        )
    for tensor in inputs:
        _check_input_name(tensor.get("name") if isinstance(tensor, dict) else None)
    if len(inputs) > 1:
        raise RequestError(400, f"input tensor '{INPUT_NAME}' is given {len(inputs)} times")
    tensor, what = inputs[0], f"input '{INPUT_NAME}'"
    size = check_parameters(tensor.get("parameters"), INPUT_PARAMETERS, what).get(
        "binary_data_size"
    )
    for key in ("shape", "datatype") if size is not None else ("shape", "datatype", "data"):
        if key not in tensor:
            raise RequestError(400, f"{what}: '{key}' is missing")
    binary = binary if binary is not None else BinaryData(b"")
    if size is not None and "data" in tensor:
        raise RequestError(400, f"{what}: has both 'data' and parameters.binary_data_size")
    data = binary.take(size, what) if size is not None else tensor["data"]
    binary.check_all_taken()
    x = model_input(INPUT_NAME, tensor["datatype"], tensor["shape"], data, spec)
    wanted, binary_outputs = _wanted_outputs(
        payload.get("outputs"), offered, defaults, parameters.get("binary_data_output", False)
    )
    return InferRequest(x, request_id, wanted, binary_outputs)


def _check_input_name(name: Any) -> None:
    if name != INPUT_NAME:
        raise RequestError(
            400,
            f"unknown input tensor {json.dumps(name)[:80]} (the model takes one input, "
            f"'{INPUT_NAME}')",
        )


def _wanted_outputs(
    outputs: Any, offered: Sequence[str], defaults: Sequence[str] | None, all_binary: bool
) -> tuple[list[str], frozenset[str]]:
    """The output names wanted, in order, and those to send as binary data (per output
    `binary_data`, else the request's `binary_data_output`)."""
    if outputs is None:
        names = list(offered if defaults is None else defaults)
        return names, frozenset(names if all_binary else ())
    if not isinstance(outputs, list) or not all(isinstance(o, dict) for o in outputs):
        raise RequestError(400, "'outputs' must be a list of objects with a 'name'")
    names, binary = [], set()
    for output in outputs:
        name = output.get("name")
        if not isinstance(name, str) or name not in offered:
            raise RequestError(
                400,
                f"unknown output {json.dumps(name)[:80]} (the model has {', '.join(offered)})",
            )
        where = f"output {json.dumps(name)}"
        wanted = check_parameters(output.get("parameters"), OUTPUT_PARAMETERS, where)
        names.append(name)
        if wanted.get("binary_data", all_binary):
            binary.add(name)
    return names, frozenset(binary)


def output_tensors(
    outputs: np.ndarray, wanted: list[str], offered: dict[str, Output], binary: frozenset[str]
) -> tuple[list[dict[str, Any]], list[bytes]]:
    """The OIP output tensors named in `wanted`, and the raw bytes of those sent as binary
    data (their JSON carries parameters.binary_data_size instead of data), in order."""
    tensors, parts = [], []
    for name in wanted:
        out = offered[name]
        dtype = np.dtype(NUMERIC_TYPES[out.datatype]).newbyteorder("<")
        value = np.asarray(out.compute(outputs)).astype(dtype, copy=False)
        tensor: dict[str, Any] = {
            "name": name,
            "datatype": out.datatype,
            "shape": list(value.shape),
        }
        if name in binary:
            raw = np.ascontiguousarray(value).tobytes()
            tensor["parameters"] = {"binary_data_size": len(raw)}
            parts.append(raw)
        else:
            tensor["data"] = value.ravel().tolist()
        tensors.append(tensor)
    return tensors, parts


def infer_response(
    tensors: list[dict[str, Any]], model: str, version: str, request_id: str | None
) -> dict[str, Any]:
    """The OIP v2 answer around the output tensors (see output_tensors)."""
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
