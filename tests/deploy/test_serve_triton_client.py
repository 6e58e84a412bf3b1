"""The server as Triton's own HTTP client sees it: the OIP binary tensor data extension
(tritonclient's default), JSON tensors, spec-conformant metadata, and every malformed
request answered 4xx with a JSON error naming the problem. A real `deepfleet serve` in a
subprocess on 127.0.0.1; `tritonclient.http` is the independent implementation of the
protocol, `deepfleet predict` the independent answer."""

from __future__ import annotations

import json
import secrets

import httpx
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import tritonclient.http as triton
from _deploy_helpers import Server
from tritonclient.utils import InferenceServerException

from conftest import run_deepfleet
from deepfleet.data import decode_raw, open_shard, read_manifest

pytestmark = pytest.mark.e2e
ROWS = 64  # the server's default max batch size: the whole test split in a few requests


@pytest.fixture(scope="module")
def server(trained_run, tmp_path_factory):
    log = tmp_path_factory.mktemp("triton") / "server.log"
    with Server(trained_run.bundle, log=log, token=secrets.token_hex(16)) as srv:
        yield srv


@pytest.fixture(scope="module")
def client(server):
    client = triton.InferenceServerClient(server.url.removeprefix("http://"))
    yield client
    client.close()


@pytest.fixture(scope="module")
def test_rows(trained_run) -> tuple[np.ndarray, np.ndarray]:
    """(ids, raw samples) of the test split, as the shards store them."""
    manifest = read_manifest(trained_run.data_dir())
    parts = [decode_raw(open_shard(manifest, e).read()) for e in manifest.shards("test")]
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


@pytest.fixture(scope="module")
def predicted(trained_run, tmp_path_factory) -> dict[int, int]:
    """id -> class, as `deepfleet predict` writes them for the test split."""
    out = tmp_path_factory.mktemp("preds")
    done = run_deepfleet(
        "predict",
        str(trained_run.bundle),
        str(trained_run.data_dir()),
        "--split",
        "test",
        "--out",
        str(out),
    )
    assert done.returncode == 0, done.stderr
    table = pa.concat_tables([pq.read_table(f) for f in sorted(out.glob("*.parquet"))])
    return dict(zip(table["id"].to_pylist(), table["label"].to_pylist(), strict=True))


def _triton_classes(client, server, raw: np.ndarray, binary: bool) -> tuple[list[int], dict]:
    classes, last = [], None
    for start in range(0, len(raw), ROWS):
        x = raw[start : start + ROWS]
        tensor = triton.InferInput("input", list(x.shape), "UINT8")
        tensor.set_data_from_numpy(x, binary_data=binary)
        outputs = None  # tritonclient's default: every output, as binary data
        if not binary:
            outputs = [triton.InferRequestedOutput(n, binary_data=False) for n in ("label",)]
        last = client.infer("tiny", [tensor], outputs=outputs, headers=server.headers)
        classes += last.as_numpy("label").tolist()
    return classes, last.get_response()


@pytest.mark.parametrize("binary", [True, False], ids=["binary-default", "json-tensors"])
def test_tritonclient_classes_equal_deepfleet_predict(client, server, test_rows, predicted, binary):
    ids, raw = test_rows
    classes, response = _triton_classes(client, server, raw, binary)
    assert classes == [predicted[i] for i in ids.tolist()]
    by_name = {o["name"]: o for o in response["outputs"]}
    if binary:  # every output came back as binary data, sized as the spec says
        assert set(by_name) == {"logits", "probabilities", "label"}
        rows = by_name["label"]["shape"][0]
        assert by_name["label"]["parameters"] == {"binary_data_size": rows * 8}  # INT64
        assert by_name["logits"]["parameters"] == {"binary_data_size": rows * 10 * 4}
        assert all("data" not in o for o in by_name.values())
    else:
        assert set(by_name) == {"label"} and "parameters" not in by_name["label"]


def test_binary_outputs_are_the_json_outputs_bit_for_bit(client, server, test_rows):
    """One request with each output as binary data, one as JSON: the same float32 values."""
    x = test_rows[1][:5]
    answers = {}
    for binary in (True, False):
        tensor = triton.InferInput("input", list(x.shape), "UINT8")
        tensor.set_data_from_numpy(x, binary_data=binary)
        outputs = [triton.InferRequestedOutput(n, binary_data=binary) for n in ("logits", "label")]
        result = client.infer("tiny", [tensor], outputs=outputs, headers=server.headers)
        answers[binary] = (result.as_numpy("logits"), result.as_numpy("label"))
    assert answers[True][0].dtype == np.float32 and answers[True][0].shape == (5, 10)
    np.testing.assert_array_equal(answers[True][0], answers[False][0])
    np.testing.assert_array_equal(answers[True][1], answers[False][1])


def test_metadata_as_tritonclient_reads_it(client, server):
    assert client.is_server_live() and client.is_model_ready("tiny", headers=server.headers)
    assert "binary_tensor_data" in client.get_server_metadata()["extensions"]
    meta = client.get_model_metadata("tiny", headers=server.headers)
    assert meta["platform"] == "onnx_onnxv1"
    parameters = meta["parameters"]
    # Parameter values are scalars: the class names travel as one JSON string.
    assert all(isinstance(v, str | int | float | bool) for v in parameters.values())
    assert json.loads(parameters["class_names"]) == [str(k) for k in range(10)]


def test_torch_backend_is_pytorch_libtorch(trained_run, tmp_path):
    with Server(trained_run.bundle, "--backend", "torch", log=tmp_path / "torch.log") as srv:
        meta = httpx.get(f"{srv.url}/v2/models/tiny").json()
    assert meta["platform"] == "pytorch_libtorch"


def test_tritonclient_classification_request_is_refused_by_name(client, server, test_rows):
    x = test_rows[1][:2]
    tensor = triton.InferInput("input", list(x.shape), "UINT8")
    tensor.set_data_from_numpy(x)
    wanted = [triton.InferRequestedOutput("probabilities", class_count=3)]
    with pytest.raises(InferenceServerException) as caught:
        client.infer("tiny", [tensor], outputs=wanted, headers=server.headers)
    assert caught.value.status() == "400"
    assert 'unsupported parameter "classification"' in caught.value.message()


GOOD_JSON = {"name": "input", "shape": [1, 1, 8, 8], "datatype": "UINT8"}
PIXELS = bytes([8] * 64)


def _binary_body(tensor: dict, tail: bytes, **extra) -> tuple[bytes, int]:
    head = json.dumps({"inputs": [tensor], **extra}).encode()
    return head + tail, len(head)


def _binary_tensor(size: int = 64, **change) -> dict:
    return {**GOOD_JSON, "parameters": {"binary_data_size": size}, **change}


BAD = {
    # (body, Inference-Header-Content-Length or None, status, what the error names)
    "datatype-a-list": (
        json.dumps({"inputs": [{**GOOD_JSON, "datatype": ["FP32"], "data": [8] * 64}]}).encode(),
        None,
        400,
        'datatype ["FP32"] is not supported',
    ),
    "5000-digit-integer": (
        b'{"inputs": [{"name": "input", "shape": [1, 1, 8, 8], "datatype": "FP32", "data": ['
        + b"9" * 5000
        + b"]}]}",
        None,
        400,
        "too many digits",
    ),
    "huge-integer-in-range-of-json": (
        json.dumps({"inputs": [{**GOOD_JSON, "data": [10**300] + [8] * 63}]}).encode(),
        None,
        400,
        "numbers only",
    ),
    "request-parameter-unsupported": (
        json.dumps(
            {"inputs": [{**GOOD_JSON, "data": [8] * 64}], "parameters": {"priority": 1}}
        ).encode(),
        None,
        400,
        'request: unsupported parameter "priority"',
    ),
    "output-parameter-unsupported": (
        json.dumps(
            {
                "inputs": [{**GOOD_JSON, "data": [8] * 64}],
                "outputs": [{"name": "label", "parameters": {"classification": 2}}],
            }
        ).encode(),
        None,
        400,
        'output "label": unsupported parameter "classification"',
    ),
    "input-shared-memory": (
        json.dumps(
            {"inputs": [{**GOOD_JSON, "parameters": {"shared_memory_region": "r"}}]}
        ).encode(),
        None,
        400,
        'unsupported parameter "shared_memory_region"',
    ),
    "binary-data-output-not-bool": (
        json.dumps(
            {"inputs": [{**GOOD_JSON, "data": [8] * 64}], "parameters": {"binary_data_output": 1}}
        ).encode(),
        None,
        400,
        "'binary_data_output' must be true or false",
    ),
    "binary-without-header": (*_binary_body(_binary_tensor(), PIXELS)[:1], None, 400, "malformed"),
    "header-length-not-a-number": (_binary_body(_binary_tensor(), PIXELS)[0], "x1", 400, "must be"),
    "header-length-beyond-body": (
        _binary_body(_binary_tensor(), PIXELS)[0],
        "100000",
        400,
        "Inference-Header-Content-Length must be",
    ),
    "binary-size-beyond-data": (
        *_binary_body(_binary_tensor(128), PIXELS),
        400,
        "binary_data_size is 128 but only 64 bytes",
    ),
    "binary-size-wrong-for-shape": (
        *_binary_body(_binary_tensor(32), PIXELS[:32]),
        400,
        "32 bytes of binary data, but shape [1, 1, 8, 8] of UINT8 needs 64",
    ),
    "binary-bytes-left-over": (
        *_binary_body(_binary_tensor(), PIXELS + b"xx"),
        400,
        "2 bytes of binary data after the JSON belong to no input",
    ),
    "binary-and-data": (
        *_binary_body(_binary_tensor(data=[8] * 64), PIXELS),
        400,
        "both 'data' and parameters.binary_data_size",
    ),
    "binary-size-negative": (*_binary_body(_binary_tensor(-1), b""), 400, "non-negative"),
    "binary-nan-fp32": (
        *_binary_body(_binary_tensor(256, datatype="FP32"), np.full(64, np.nan, "<f4").tobytes()),
        400,
        "NaN or Inf",
    ),
    "binary-pixels-out-of-range": (
        *_binary_body(_binary_tensor(256, datatype="FP32"), np.full(64, 300, "<f4").tobytes()),
        400,
        "raw uint8 samples",
    ),
}


def test_compressed_body_is_refused_415(client, server, test_rows):
    """tritonclient's request compression: refused, since a compressed body would get past
    the body limit before it is inflated."""
    x = test_rows[1][:2]
    tensor = triton.InferInput("input", list(x.shape), "UINT8")
    tensor.set_data_from_numpy(x)
    with pytest.raises(InferenceServerException) as caught:
        client.infer("tiny", [tensor], headers=server.headers, request_compression_algorithm="gzip")
    assert caught.value.status() == "415"
    assert "Content-Encoding 'gzip' is not supported" in caught.value.message()


@pytest.mark.parametrize("case", list(BAD))
def test_malformed_request_gets_4xx_json_error(server, case):
    body, header_length, status, message = BAD[case]
    headers = {**server.headers, "Content-Type": "application/octet-stream"}
    if header_length is not None:
        headers["Inference-Header-Content-Length"] = str(header_length)
    reply = httpx.post(
        f"{server.url}/v2/models/tiny/infer", content=body, headers=headers, timeout=30
    )
    assert reply.status_code == status, reply.text
    assert reply.headers["content-type"] == "application/json"
    assert message in reply.json()["error"]


def test_binary_request_without_tritonclient(server):
    """The layout by hand: JSON, then the raw bytes; the answer's binary part by hand."""
    body, length = _binary_body(
        _binary_tensor(), PIXELS, outputs=[{"name": "label", "parameters": {"binary_data": True}}]
    )
    headers = {**server.headers, "Inference-Header-Content-Length": str(length)}
    reply = httpx.post(f"{server.url}/v2/models/tiny/infer", content=body, headers=headers)
    assert reply.status_code == 200, reply.text
    split = int(reply.headers["inference-header-content-length"])
    answer = json.loads(reply.content[:split])
    assert answer["outputs"][0]["parameters"] == {"binary_data_size": 8}
    label = np.frombuffer(reply.content[split:], "<i8")
    plain = httpx.post(
        f"{server.url}/v2/models/tiny/infer",
        headers=server.headers,
        json={"inputs": [{**GOOD_JSON, "data": [8] * 64}], "outputs": [{"name": "label"}]},
    )
    assert "inference-header-content-length" not in plain.headers
    assert label.tolist() == plain.json()["outputs"][0]["data"]
