"""OIP v2 over gRPC beside HTTP in one real `deepfleet serve BUNDLE --grpc-port P` process.

Requests are built with tritonclient's own protobuf modules (an independent definition of
the protocol), sent raw or typed; answers are compared with the HTTP route's on the same
rows; every bad request gets a gRPC status that names the problem.
"""

from __future__ import annotations

import json
import re
import secrets
import socket
import time
from pathlib import Path

import grpc
import httpx
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from _deploy_helpers import Server, infer_body, raw_split
from tritonclient.grpc import service_pb2 as pb
from tritonclient.grpc import service_pb2_grpc as pb_grpc

from deepfleet.deploy.serve import ServeConfig
from deepfleet.deploy.serve._loading import check_before_start
from deepfleet.errors import UserError

pytestmark = pytest.mark.e2e
TOKEN = secrets.token_hex(16)
AUTH = {"Authorization": f"Bearer {TOKEN}"}
METADATA = (("authorization", f"Bearer {TOKEN}"),)
BODY_LIMIT_KB = 64
MAX_BATCH = 32


@pytest.fixture(scope="module")
def server(trained_run, tmp_path_factory):
    log = tmp_path_factory.mktemp("grpc-log") / "server.log"
    args = ("--max-body-kb", str(BODY_LIMIT_KB), "--max-batch-size", str(MAX_BATCH))
    with Server(trained_run.bundle, *args, log=log, token=TOKEN, grpc=True) as srv:
        yield srv


@pytest.fixture(scope="module")
def stub(server):
    with grpc.insecure_channel(server.grpc_url) as channel:
        yield pb_grpc.GRPCInferenceServiceStub(channel)


@pytest.fixture(scope="module")
def raw(trained_run) -> np.ndarray:
    return raw_split(trained_run.data_dir(), "test")[:16].astype(np.uint8)


def request_of(raw: np.ndarray, typed: str | None = None, **fields) -> pb.ModelInferRequest:
    """A ModelInferRequest for model tiny: raw bytes, or typed contents in field `typed`."""
    request = pb.ModelInferRequest(model_name="tiny", **fields)
    tensor = request.inputs.add(name="input", datatype="UINT8", shape=list(raw.shape))
    if typed is None:
        request.raw_input_contents.append(raw.tobytes())
    else:
        tensor.datatype = {"uint_contents": "UINT8", "fp32_contents": "FP32"}[typed]
        getattr(tensor.contents, typed).extend(raw.ravel().tolist())
    return request


def outputs_of(response: pb.ModelInferResponse) -> dict[str, np.ndarray]:
    kinds = {"FP32": np.float32, "INT64": np.int64}
    return {
        o.name: np.frombuffer(data, kinds[o.datatype]).reshape(list(o.shape))
        for o, data in zip(response.outputs, response.raw_output_contents, strict=True)
    }


def test_raw_and_typed_requests_answer_as_http_does(server, stub, raw):
    reply = httpx.post(
        f"{server.url}/v2/models/tiny/infer",
        json=infer_body(raw, datatype="UINT8", id="r1"),
        headers=AUTH,
    )
    by_http = {o["name"]: np.array(o["data"]) for o in reply.json()["outputs"]}
    for typed in (None, "uint_contents", "fp32_contents"):
        response = stub.ModelInfer(request_of(raw, typed, id="r1"), metadata=METADATA)
        assert (response.model_name, response.model_version, response.id) == ("tiny", "1", "r1")
        got = outputs_of(response)
        assert list(got) == ["logits", "probabilities", "label"]
        assert got["label"].tolist() == by_http["label"].tolist()
        np.testing.assert_array_equal(got["logits"].ravel(), by_http["logits"].astype(np.float32))
    only = pb.ModelInferRequest.InferRequestedOutputTensor(name="probabilities")
    response = stub.ModelInfer(request_of(raw[:2], outputs=[only]), metadata=METADATA)
    assert [o.name for o in response.outputs] == ["probabilities"]
    np.testing.assert_allclose(outputs_of(response)["probabilities"].sum(1), 1, atol=1e-5)


def test_metadata_over_grpc_is_the_http_metadata(server):
    by_http = httpx.get(f"{server.url}/v2/models/tiny", headers=AUTH).json()
    with grpcclient.InferenceServerClient(server.grpc_url) as client:
        by_grpc = client.get_model_metadata("tiny", headers=dict(METADATA), as_json=True)
        assert client.get_server_metadata(as_json=True)["extensions"] == ["model_repository"]
    for spec in (*by_grpc["inputs"], *by_grpc["outputs"]):
        spec["shape"] = [int(d) for d in spec["shape"]]  # protobuf's JSON writes int64 as text
    for key in ("name", "versions", "platform", "inputs", "outputs"):
        assert by_grpc[key] == by_http[key], key


def _broken(raw: np.ndarray):
    """(request, status, words the message must contain) for each way to get it wrong."""
    yield request_of(raw[:1].reshape(1, 1, 64)[:, :, :56].copy()), "INVALID_ARGUMENT", "shape"
    short = request_of(raw[:1])
    short.raw_input_contents[0] = b"\x01" * 10
    yield short, "INVALID_ARGUMENT", "10 bytes of binary data, but shape [1, 1, 8, 8] of UINT8"
    renamed = request_of(raw[:1])
    renamed.inputs[0].name = "pixels"
    yield renamed, "INVALID_ARGUMENT", "unknown input tensor"
    scaled = request_of(raw[:1] / 16, "fp32_contents")
    yield scaled, "INVALID_ARGUMENT", "whole numbers"
    nan = request_of(raw[:1].astype(np.float32), "fp32_contents")
    nan.inputs[0].contents.fp32_contents[3] = float("nan")
    yield nan, "INVALID_ARGUMENT", "NaN"
    text = request_of(raw[:1])
    text.inputs[0].datatype = "BYTES"
    yield text, "INVALID_ARGUMENT", "datatype"
    half = request_of(raw[:1], "uint_contents")
    half.inputs[0].datatype = "FP16"
    yield half, "INVALID_ARGUMENT", "FP16 values travel as raw contents"
    both = request_of(raw[:1], "uint_contents")
    both.raw_input_contents.append(raw[:1].tobytes())
    yield both, "INVALID_ARGUMENT", "not both"
    unknown_output = request_of(raw[:1])
    unknown_output.outputs.add(name="embedding")
    yield unknown_output, "INVALID_ARGUMENT", "unknown output"
    too_many = np.zeros((MAX_BATCH + 1, 1, 8, 8), np.uint8)
    yield request_of(too_many), "INVALID_ARGUMENT", f"max batch size {MAX_BATCH}"
    nameless = request_of(raw[:1])
    nameless.model_name = ""
    yield nameless, "INVALID_ARGUMENT", "'model_name' is empty"
    other = request_of(raw[:1])
    other.model_name = "other"
    yield other, "NOT_FOUND", "unknown model 'other'"
    versioned = request_of(raw[:1], model_version="2")
    yield versioned, "NOT_FOUND", "unknown version '2'"
    huge = request_of(np.zeros((1200, 1, 8, 8), np.uint8))  # 77 KB > --max-body-kb 64
    yield huge, "RESOURCE_EXHAUSTED", "larger than max"


def test_bad_requests_get_a_status_naming_the_problem(server, stub, raw):
    for request, status, words in _broken(raw):
        with pytest.raises(grpc.RpcError) as refused:
            stub.ModelInfer(request, metadata=METADATA)
        error = refused.value
        assert error.code().name == status, (words, error.details())
        assert words in error.details(), (words, error.details())
        assert "Traceback" not in error.details()
    with pytest.raises(grpc.RpcError) as refused:
        stub.RepositoryIndex(
            pb.RepositoryIndexRequest(repository_name="elsewhere"), metadata=METADATA
        )
    assert refused.value.code() == grpc.StatusCode.NOT_FOUND
    # The server is unharmed.
    assert outputs_of(stub.ModelInfer(request_of(raw[:1]), metadata=METADATA))["label"].shape == (
        1,
    )


def _count(metrics: str, name: str, labels: str) -> float:
    labelled = rf"\{{{re.escape(labels)}\}}" if labels else ""
    found = re.search(rf"^{name}{labelled} (\S+)$", metrics, re.M)
    return float(found.group(1)) if found else 0.0


def test_grpc_shares_the_batchers_and_metrics_of_http(server, stub, raw):
    infer = 'code="OK",method="GRPC",route="/inference.GRPCInferenceService/ModelInfer"'
    refused = (
        'code="UNAUTHENTICATED",method="GRPC",route="/inference.GRPCInferenceService/ModelInfer"'
    )
    before = httpx.get(f"{server.url}/metrics").text
    for n in range(1, 6):
        stub.ModelInfer(request_of(raw[:n]), metadata=METADATA)
    with pytest.raises(grpc.RpcError):
        stub.ModelInfer(request_of(raw[:1]))
    after = httpx.get(f"{server.url}/metrics").text
    assert (
        _count(after, "deepfleet_requests_total", infer)
        - _count(before, "deepfleet_requests_total", infer)
        == 5
    )
    assert (
        _count(after, "deepfleet_requests_total", refused)
        - _count(before, "deepfleet_requests_total", refused)
        == 1
    )
    # The five gRPC requests' 15 rows went through the model's one batcher.
    rows = _count(after, "deepfleet_batch_size_sum", "") - _count(
        before, "deepfleet_batch_size_sum", ""
    )
    assert rows == 1 + 2 + 3 + 4 + 5


def test_a_taken_grpc_port_is_refused_before_serving(trained_run):
    """The check `deepfleet serve` makes before uvicorn starts (a UserError: one line, exit 2)."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        config = ServeConfig(bundle=str(trained_run.bundle), grpc_port=port)
        with pytest.raises(UserError, match=f"--grpc-port {port}: cannot bind 127.0.0.1"):
            check_before_start(config)
    with pytest.raises(UserError, match="is also the HTTP --port"):
        ServeConfig(bundle=str(trained_run.bundle), port=port, grpc_port=port)


def _listeners(port: int) -> int:
    """Listening TCP sockets on `port`, from /proc/net (gRPC listens on IPv6 sockets that
    also take IPv4)."""
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if int(fields[1].split(":")[1], 16) == port and fields[3] == "0A":
                count += 1
    return count


@pytest.mark.slow
def test_every_worker_serves_grpc_on_the_one_port(trained_run, tmp_path, raw):
    """--workers 2: each worker binds the gRPC port (SO_REUSEPORT), answers with its own
    copy of the models, and /metrics sums both; load and unload are refused, since they
    would reach one worker only."""
    with Server(
        trained_run.bundle, "--workers", "2", log=tmp_path / "log", token=TOKEN, grpc=True
    ) as srv:
        # HTTP is ready once one worker is; the other may still be loading its models.
        deadline = time.monotonic() + 90
        while _listeners(srv.grpc_port) < 2 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert _listeners(srv.grpc_port) == 2
        labels = []
        for _ in range(6):  # a new channel, a new connection, each time
            with grpc.insecure_channel(srv.grpc_url) as channel:
                response = pb_grpc.GRPCInferenceServiceStub(channel).ModelInfer(
                    request_of(raw[:4]), metadata=METADATA
                )
                labels.append(outputs_of(response)["label"].tolist())
        with (
            grpc.insecure_channel(srv.grpc_url) as channel,
            pytest.raises(grpc.RpcError) as refused,
        ):
            pb_grpc.GRPCInferenceServiceStub(channel).RepositoryModelLoad(
                pb.RepositoryModelLoadRequest(model_name="tiny"), metadata=METADATA
            )
        reply = httpx.post(f"{srv.url}/v2/repository/models/tiny/unload", headers=AUTH)
        metrics = httpx.get(f"{srv.url}/metrics").text
    assert all(got == labels[0] for got in labels)
    assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "--workers 2" in refused.value.details()
    assert reply.status_code == 409 and "--poll-interval" in json.loads(reply.text)["error"]
    infer = 'code="OK",method="GRPC",route="/inference.GRPCInferenceService/ModelInfer"'
    assert _count(metrics, "deepfleet_requests_total", infer) == 6
