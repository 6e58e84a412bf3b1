"""model_input, the one check of an input tensor for every front end: JSON values, raw
little-endian bytes (the binary extension, gRPC's raw contents) and NumPy arrays give the
same model input, and each way of being wrong is a 400 naming it."""

from __future__ import annotations

import numpy as np
import pytest

from deepfleet.data import Preprocessing
from deepfleet.deploy.serve import RequestError
from deepfleet.deploy.serve._binary import BinaryData, split_request
from deepfleet.deploy.serve._protocol import InputSpec, check_parameters, model_input

DIGITS = InputSpec((1, 8, 8), 4, Preprocessing.for_samples("uint8", 1 / 16, (1, 8, 8)))
PIXELS = np.arange(128).reshape(2, 1, 8, 8) % 17


@pytest.mark.parametrize("datatype", ["UINT8", "INT32", "FP32", "FP64"])
def test_json_bytes_and_arrays_give_the_same_input(datatype):
    dtype = {"UINT8": "<u1", "INT32": "<i4", "FP32": "<f4", "FP64": "<f8"}[datatype]
    shape = [2, 1, 8, 8]
    by_json = model_input("input", datatype, shape, PIXELS.ravel().tolist(), DIGITS)
    by_bytes = model_input("input", datatype, shape, PIXELS.astype(dtype).tobytes(), DIGITS)
    by_array = model_input("input", datatype, shape, PIXELS.astype(dtype), DIGITS)
    expected = (PIXELS / 16).astype(np.float32)  # the bundle's preprocessing, independently
    for x in (by_json, by_bytes, by_array):
        assert x.dtype == np.float32
        np.testing.assert_array_equal(x, expected)


@pytest.mark.parametrize(
    "name, datatype, shape, data, message",
    [
        ("pixels", "UINT8", [1, 1, 8, 8], [8] * 64, 'unknown input tensor "pixels"'),
        ("input", ["FP32"], [1, 1, 8, 8], [8] * 64, 'datatype ["FP32"] is not supported'),
        ("input", {"a": 1}, [1, 1, 8, 8], [8] * 64, "is not supported"),
        ("input", "UINT8", [1, 1, 8, 8], bytes(63), "63 bytes of binary data, but shape"),
        ("input", "FP32", [1, 1, 8, 8], bytes(64), "needs 256"),
        ("input", "UINT8", [1, 1, 8, 8], np.array(["a"] * 64), "numbers only"),
        ("input", "UINT8", [5, 1, 8, 8], bytes(320), "exceeds the server's max batch size 4"),
        ("input", "UINT8", "1,1,8,8", [8] * 64, "shape must be a list of integers"),
        ("input", "FP32", [1, 1, 8, 8], np.full(64, np.inf, "<f4").tobytes(), "NaN or Inf"),
    ],
)
def test_bad_tensors_are_400s_naming_the_problem(name, datatype, shape, data, message):
    with pytest.raises(RequestError) as caught:
        model_input(name, datatype, shape, data, DIGITS)
    assert caught.value.status == 400 and message in caught.value.message


def test_binary_part_is_handed_out_in_order_and_must_be_used_up():
    json_part, binary = split_request(b'{"a": 1}abcdef', "8")
    assert json_part == b'{"a": 1}'
    assert bytes(binary.take(2, "x")) == b"ab" and bytes(binary.take(3, "y")) == b"cde"
    with pytest.raises(RequestError, match="1 bytes of binary data after the JSON"):
        binary.check_all_taken()
    with pytest.raises(RequestError, match="binary_data_size is 5 but only 3 bytes"):
        BinaryData(b"abc").take(5, "x")
    for header in ("0", "-1", "15", "eight"):
        with pytest.raises(RequestError, match="Inference-Header-Content-Length must be"):
            split_request(b'{"a": 1}abcdef', header)


def test_parameters_not_implemented_are_named():
    assert check_parameters({"binary_data": True}, {"binary_data": bool}, "output") == {
        "binary_data": True
    }
    with pytest.raises(RequestError, match='unsupported parameters "a", "classification"'):
        check_parameters({"classification": 3, "a": 1}, {"binary_data": bool}, "output 'x'")
    with pytest.raises(RequestError, match="must be true or false"):
        check_parameters({"binary_data": "yes"}, {"binary_data": bool}, "output 'x'")
