"""The real server in a subprocess on 127.0.0.1, driven over HTTP with httpx."""

from __future__ import annotations

import asyncio
import json
import re
import secrets
import time

import httpx
import numpy as np
import pytest
import torch
from _deploy_helpers import Server, copy_bundle, infer_body, raw_split

from deepfleet.config import ModelSection
from deepfleet.data import read_split
from deepfleet.deploy import export_bundle, load_bundle, new_signing_key, sign_bundle
from deepfleet.deploy._backends import BACKEND_TOLERANCE, make_backend
from deepfleet.models import resnet

pytestmark = pytest.mark.e2e
BODY_LIMIT_KB = 64


@pytest.fixture(scope="module")
def signed_bundle(trained_run, tmp_path_factory):
    base = tmp_path_factory.mktemp("serve")
    root = copy_bundle(trained_run.bundle, base / "bundle")
    private, public = new_signing_key(base / "keys")
    sign_bundle(root, private)
    return root, public


@pytest.fixture(scope="module")
def server(signed_bundle, tmp_path_factory):
    root, public = signed_bundle
    log = tmp_path_factory.mktemp("log") / "server.log"
    with Server(
        root,
        "--public-key",
        str(public),
        "--max-body-kb",
        str(BODY_LIMIT_KB),
        "--replicas",
        "2",
        log=log,
        token=secrets.token_hex(16),
    ) as srv:
        yield srv


@pytest.fixture(scope="module")
def test_x(trained_run) -> np.ndarray:
    """Model input: the test split after the data set's preprocessing."""
    return read_split(trained_run.data_dir(), "test").x.numpy()


@pytest.fixture(scope="module")
def raw_x(trained_run) -> np.ndarray:
    """What clients send: the same samples raw, as the shards store them."""
    return raw_split(trained_run.data_dir(), "test")


def infer(server, body, name="tiny", **kw) -> httpx.Response:
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    headers = {**server.headers, "Content-Type": "application/json", **kw.pop("headers", {})}
    return httpx.post(
        f"{server.url}/v2/models/{name}/infer", content=content, headers=headers, timeout=30, **kw
    )


def test_health_and_model_metadata(server):
    assert httpx.get(f"{server.url}/v2/health/live").json() == {"live": True}
    assert httpx.get(f"{server.url}/v2/health/ready").json() == {"ready": True}
    assert httpx.get(f"{server.url}/v2").json()["name"] == "deepfleet"
    meta = httpx.get(f"{server.url}/v2/models/tiny", headers=server.headers).json()
    # The raw input spec: digits pixels are uint8 (0..16), scaled by 1/16 in the server.
    assert meta["inputs"] == [{"name": "input", "datatype": "UINT8", "shape": [-1, 1, 8, 8]}]
    assert meta["parameters"]["input_scale"] == 1 / 16
    assert {o["name"] for o in meta["outputs"]} == {"logits", "probabilities", "label"}
    assert meta["platform"] == "onnx_onnxv1"  # the OIP's name for an ONNX model
    version = meta["versions"][0]
    assert (
        httpx.get(
            f"{server.url}/v2/models/tiny/versions/{version}", headers=server.headers
        ).status_code
        == 200
    )
    assert httpx.get(f"{server.url}/v2/models/tiny/ready").json()["ready"] is True
    missing = httpx.get(f"{server.url}/v2/models/tiny/versions/nope", headers=server.headers)
    assert missing.status_code == 404 and "unknown version" in missing.json()["error"]


def test_oip_round_trip_matches_in_process_inference(server, trained_run, test_x, raw_x):
    x = test_x[:16]
    reply = infer(server, infer_body(raw_x[:16], datatype="UINT8", id="req-7"))
    assert reply.status_code == 200, reply.text
    answer = reply.json()
    assert answer["model_name"] == "tiny" and answer["id"] == "req-7"
    out = {o["name"]: o for o in answer["outputs"]}
    logits = np.array(out["logits"]["data"], np.float32).reshape(out["logits"]["shape"])
    expected = make_backend(load_bundle(trained_run.bundle), "torch")(x)
    np.testing.assert_allclose(logits, expected, atol=BACKEND_TOLERANCE, rtol=0)
    assert out["label"]["datatype"] == "INT64"
    assert out["label"]["data"] == expected.argmax(1).tolist()
    probs = np.array(out["probabilities"]["data"]).reshape(16, 10)
    np.testing.assert_allclose(probs.sum(1), 1, atol=1e-5)
    # Nested data, FP64, and a chosen output.
    nested = {
        "inputs": [
            {"name": "input", "shape": [2, 1, 8, 8], "datatype": "FP64", "data": raw_x[:2].tolist()}
        ],
        "outputs": [{"name": "label"}],
    }
    only = infer(server, nested).json()["outputs"]
    assert [o["name"] for o in only] == ["label"]
    assert only[0]["data"] == expected[:2].argmax(1).tolist()


def test_predict_endpoint(server, trained_run, test_x, raw_x):
    x, raw = test_x[:3], raw_x[:3]
    reply = httpx.post(
        f"{server.url}/predict",
        headers=server.headers,
        timeout=30,
        json={"instances": [raw[0].tolist(), raw[1].ravel().tolist(), raw[2].tolist()]},
    )
    assert reply.status_code == 200, reply.text
    predictions = reply.json()["predictions"]
    expected = make_backend(load_bundle(trained_run.bundle), "torch")(x).argmax(1)
    assert [p["label"] for p in predictions] == expected.tolist()
    assert [p["label_name"] for p in predictions] == [str(k) for k in expected]
    assert all(abs(sum(p["probabilities"]) - 1) < 1e-5 for p in predictions)


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Bearer wrong-token-0123456789"}, {"Authorization": "Basic abc"}],
    ids=["none", "wrong", "basic"],
)
def test_inference_needs_the_bearer_token(server, raw_x, headers):
    body = json.dumps(infer_body(raw_x[:1])).encode()
    for url in (f"{server.url}/v2/models/tiny/infer", f"{server.url}/predict"):
        reply = httpx.post(url, content=body, headers=headers)
        assert reply.status_code == 401
        assert reply.headers["www-authenticate"].startswith("Bearer")
        assert "bearer token" in reply.json()["error"]
    assert httpx.get(f"{server.url}/v2/models/tiny", headers=headers).status_code == 401


GOOD = {"name": "input", "shape": [1, 1, 8, 8], "datatype": "FP32", "data": [8] * 64}


def _with(**change) -> dict:
    return {"inputs": [{**GOOD, **change}]}


BAD_INPUTS = {
    "malformed-json": (b'{"inputs": [', 400, "malformed JSON"),
    "empty-body": (b"", 400, "body is empty"),
    "not-utf8": (b'\xff\xfe{"inputs": 1}', 400, "malformed JSON"),
    "not-an-object": (b"[1, 2, 3]", 400, "JSON object"),
    "no-inputs": ({"outputs": []}, 400, "missing input tensor 'input'"),
    "empty-inputs": ({"inputs": []}, 400, "missing input tensor 'input'"),
    "wrong-input-name": (_with(name="pixels"), 400, 'unknown input tensor "pixels"'),
    "missing-data": (
        {"inputs": [{k: v for k, v in GOOD.items() if k != "data"}]},
        400,
        "'data' is missing",
    ),
    "wrong-shape": (_with(shape=[1, 8, 8]), 400, "shape [1, 8, 8] does not match"),
    "wrong-inner-shape": (_with(shape=[1, 1, 4, 16]), 400, "does not match the model"),
    "zero-rows": (_with(shape=[0, 1, 8, 8], data=[]), 400, "does not match"),
    "shape-not-ints": (_with(shape=["1", 1, 8, 8]), 400, "list of integers"),
    "wrong-datatype": (_with(datatype="BOOL"), 400, 'datatype "BOOL" is not supported'),
    "bytes-datatype": (_with(datatype="BYTES"), 400, "not supported"),
    "too-few-values": (_with(data=[8] * 63), 400, "data has 63 values but shape"),
    "too-many-values": (_with(data=[8] * 128), 400, "data has 128 values"),
    "strings": (_with(data=["a"] * 64), 400, "numbers only (found strings)"),
    "booleans": (_with(data=[8] * 63 + [True]), 400, "numbers only"),
    "ragged": (_with(data=[[8] * 8] * 7 + [[8] * 7]), 400, "ragged"),
    "data-not-list": (_with(data=0.5), 400, "JSON array"),
    "nan-literal": (
        b'{"inputs": [{"name": "input", "shape": [1, 1, 8, 8], "datatype": '
        b'"FP32", "data": [' + b"8, " * 63 + b"NaN]}]}",
        400,
        "NaN",
    ),
    "infinity-literal": (
        b'{"inputs": [{"name": "input", "shape": [1, 1, 8, 8], '
        b'"datatype": "FP32", "data": [' + b"8, " * 63 + b"-Infinity]}]}",
        400,
        "Infinity",
    ),
    "overflow-to-inf": (_with(data=[8] * 63 + [1e39]), 400, "raw uint8 samples"),
    "already-scaled": (_with(data=[0.5] * 64), 400, "send the data unscaled"),
    "too-many-rows": (
        _with(shape=[65, 1, 8, 8], data=[8] * 64 * 65),
        400,
        "exceeds the server's max batch size 64",
    ),
    "duplicate-input": ({"inputs": [GOOD, GOOD]}, 400, "given 2 times"),
    "unknown-output": (
        {"inputs": [GOOD], "outputs": [{"name": "embedding"}]},
        400,
        'unknown output "embedding"',
    ),
    "id-not-string": ({"inputs": [GOOD], "id": 5}, 400, "'id' must be a string"),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_gets_a_4xx_json_error_naming_the_problem(server, case):
    body, status, message = BAD_INPUTS[case]
    reply = infer(server, body)
    assert reply.status_code == status, reply.text
    assert message in reply.json()["error"]


@pytest.mark.parametrize(
    "body, message",
    [
        ({"instances": [[8] * 64, [8] * 63]}, "instance 1 has shape [63]; the model takes"),
        ({"rows": []}, "'instances' list"),
        ({"instances": []}, "non-empty"),
        ({"instances": [[float("nan")] * 64]}, "NaN"),
    ],
)
def test_bad_predict_bodies(server, body, message):
    content = json.dumps(body).encode()  # json.dumps writes NaN as the NaN literal
    reply = httpx.post(f"{server.url}/predict", content=content, headers=server.headers)
    assert reply.status_code == 400 and message in reply.json()["error"]


def test_unknown_model_and_route(server, raw_x):
    reply = infer(server, infer_body(raw_x[:1]), name="resnet")
    assert reply.status_code == 404
    assert reply.json()["error"] == "unknown model 'resnet'; this server serves 'tiny'"
    reply = httpx.get(f"{server.url}/v3/nothing")
    assert reply.status_code == 404 and "error" in reply.json()


def test_oversized_body_gets_413_with_or_without_content_length(server):
    big = b"[" + b"0.5," * (BODY_LIMIT_KB * 1024 // 4) + b"0.5]"
    reply = infer(server, b'{"inputs": [{"data": ' + big + b"}]}")
    assert reply.status_code == 413 and "exceeds the limit" in reply.json()["error"]

    def chunks():  # no Content-Length: the body is streamed in chunks
        for _ in range(BODY_LIMIT_KB + 8):
            yield b" " * 1024

    reply = httpx.post(
        f"{server.url}/v2/models/tiny/infer", content=chunks(), headers=server.headers
    )
    assert reply.status_code == 413


def test_server_survives_everything_above(server, raw_x):
    # Runs after the bad-input tests (file order): the one worker still answers.
    assert infer(server, infer_body(raw_x[:1])).status_code == 200


def test_concurrent_requests_are_batched(server, raw_x):
    async def burst() -> list[int]:
        async with httpx.AsyncClient(headers=server.headers, timeout=30) as client:
            replies = await asyncio.gather(
                *[
                    client.post(
                        f"{server.url}/v2/models/tiny/infer", json=infer_body(raw_x[i : i + 1])
                    )
                    for i in range(48)
                ]
            )
        return [r.status_code for r in replies]

    before = _metric(server, "deepfleet_batch_requests_count")
    calls_before = _metric(server, "deepfleet_batch_size_count")
    assert asyncio.run(burst()) == [200] * 48
    served = _metric(server, "deepfleet_batch_requests_sum") - before
    calls = _metric(server, "deepfleet_batch_size_count") - calls_before
    assert served >= 48 and calls < 48  # at least one model call served several requests


def _metric(server, name: str, labels: str = "") -> float:
    text = httpx.get(f"{server.url}/metrics").text
    pattern = (
        rf"^{re.escape(name)}{re.escape(labels)} (\S+)$"
        if labels
        else rf"^{re.escape(name)}(?:{{[^}}]*}})? (\S+)$"
    )
    values = [float(v) for v in re.findall(pattern, text, re.M)]
    return sum(values)


def test_prometheus_metrics(server, raw_x):
    infer_route = 'route="/v2/models/{name}/infer"'
    ok_before = _metric(
        server, "deepfleet_requests_total", f'{{code="200",method="POST",{infer_route}}}'
    )
    for i in range(3):
        assert infer(server, infer_body(raw_x[i : i + 2])).status_code == 200
    text = httpx.get(f"{server.url}/metrics").text
    ok_after = _metric(
        server, "deepfleet_requests_total", f'{{code="200",method="POST",{infer_route}}}'
    )
    assert ok_after - ok_before == 3
    assert 'deepfleet_requests_total{code="400",method="POST",' + infer_route in text
    assert 'deepfleet_request_seconds_bucket{le="0.005",' + infer_route in text
    assert re.search(r"^deepfleet_batch_size_bucket\{le=\"2.0\"\} [1-9]", text, re.M)
    assert re.search(r"^deepfleet_queue_depth 0\.0$", text, re.M)
    assert 'deepfleet_rejected_total{reason="unauthorized"}' in text


def test_openapi_schema_is_served(server):
    schema = httpx.get(f"{server.url}/openapi.json").json()
    assert "/v2/models/{name}/infer" in schema["paths"] and "/predict" in schema["paths"]
    assert "InferRequest" in schema["components"]["schemas"]
    body = schema["paths"]["/v2/models/{name}/infer"]["post"]["requestBody"]
    assert body["content"]["application/json"]["schema"]["$ref"].endswith("/InferRequest")
    assert httpx.get(f"{server.url}/docs").status_code == 200


@pytest.fixture(scope="module")
def slow_bundle(tmp_path_factory):
    """A heavy model (wide ResNet) so one request keeps the single replica busy for a while."""
    model = resnet((1, 32, 32), 10, widths=(64, 128, 256))
    return export_bundle(
        model,
        tmp_path_factory.mktemp("slow") / "bundle",
        name="slow",
        model_section=ModelSection(name="resnet", params={"widths": [64, 128, 256]}),
        input_shape=(1, 32, 32),
        class_names=[str(i) for i in range(10)],
        onnx=False,
    )


def test_full_queue_gets_503_with_retry_after_and_slow_requests_time_out(slow_bundle, tmp_path):
    args = ["--no-batching", "--max-queue", "1", "--max-batch-size", "128", "--timeout", "0.5"]
    with Server(slow_bundle, *args, log=tmp_path / "slow.log") as srv:
        one = {"inputs": [{**GOOD, "shape": [1, 1, 32, 32], "data": [0.5] * 1024}]}
        # Seconds of work for the one replica, whatever the machine: far beyond the timeout.
        heavy = {"inputs": [{**GOOD, "shape": [128, 1, 32, 32], "data": [0.5] * 1024 * 128}]}

        async def scenario():
            async with httpx.AsyncClient(timeout=30) as client:
                url = f"{srv.url}/v2/models/slow/infer"
                started = time.perf_counter()
                first = asyncio.create_task(client.post(url, json=heavy))
                await asyncio.sleep(0.3)  # the heavy request now occupies the replica
                small = await asyncio.gather(*[client.post(url, json=one) for _ in range(6)])
                return await first, small, time.perf_counter() - started

        first, small, seconds = asyncio.run(scenario())
        busy = [r for r in small if r.status_code == 503 and "busy" in r.json()["error"]]
        assert len(busy) >= 4, [r.text for r in small]
        assert all(r.headers["retry-after"] == "1" for r in busy)
        assert first.status_code == 503 and "timed out after 0.5s" in first.json()["error"]
        assert seconds < 10
        text = httpx.get(f"{srv.url}/metrics").text
        assert re.search(r'deepfleet_rejected_total\{reason="queue_full"\} [4-6]', text)
        # Once the backlog clears, the same worker answers normally again.
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            reply = httpx.post(f"{srv.url}/v2/models/slow/infer", json=one, timeout=30)
            if reply.status_code == 200:
                break
            time.sleep(0.5)
        assert reply.status_code == 200


def test_raw_digits_pixels_get_the_classes_evaluate_and_predict_give(server, trained_run, tmp_path):
    """scikit-learn's own raw images (floats 0..16, never through our shards) sent to
    /predict get the classes evaluate scored and `deepfleet predict` wrote."""
    from sklearn.datasets import load_digits

    from deepfleet.deploy import predict_dataset
    from deepfleet.evaluate import predict_proba

    split = read_split(trained_run.data_dir(), "test")
    raw = load_digits().images[split.ids.numpy()].reshape(-1, 1, 8, 8)
    labels = []
    for start in range(0, len(raw), 64):
        reply = httpx.post(
            f"{server.url}/predict",
            headers=server.headers,
            timeout=30,
            json={"instances": raw[start : start + 64].tolist()},
        )
        assert reply.status_code == 200, reply.text
        labels += [p["label"] for p in reply.json()["predictions"]]
    bundle = load_bundle(trained_run.bundle)
    evaluated = predict_proba(bundle.model, split.x, torch.device("cpu"), 256).argmax(1)
    assert labels == evaluated.tolist()
    report = json.loads((trained_run.report / "metrics.json").read_text())
    assert np.mean(np.array(labels) == split.y.numpy()) == pytest.approx(report["accuracy"])
    predict_dataset(bundle, trained_run.data_dir(), tmp_path / "preds", splits=["test"])
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.concat_tables([pq.read_table(f) for f in (tmp_path / "preds").glob("*.parquet")])
    by_id = dict(
        zip(table.column("id").to_pylist(), table.column("label").to_pylist(), strict=True)
    )
    assert [by_id[i] for i in split.ids.tolist()] == labels
