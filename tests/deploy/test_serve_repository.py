"""A model repository served by a real `deepfleet serve REPO/` on 127.0.0.1, checked with
Triton's own clients (tritonclient.http with JSON tensors, tritonclient.grpc) against
`deepfleet predict` and each bundle's own outputs.

The repository: alpha (versions 1 and 2) and beta (version 1), small digits classifiers,
all signed; gamma/1, a signed copy of alpha/1 whose weights were changed afterwards; and
folders a repository ignores (alpha/01, alpha/latest, alpha/.3.tmp).
"""

from __future__ import annotations

import json
import secrets

import httpx
import numpy as np
import pyarrow.parquet as pq
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from _deploy_helpers import Server, copy_bundle, infer_body, raw_split
from _repo_bundles import digits_classifier, own_logits
from tritonclient.utils import InferenceServerException

from deepfleet.cli import run_cli
from deepfleet.data import read_split
from deepfleet.deploy import new_signing_key, sign_bundle
from deepfleet.deploy._backends import BACKEND_TOLERANCE

pytestmark = pytest.mark.e2e
ROWS = 48
TOKEN = secrets.token_hex(16)
AUTH = {"Authorization": f"Bearer {TOKEN}"}
GRPC_AUTH = {"authorization": f"Bearer {TOKEN}"}
VERSIONS = [("alpha", "1"), ("alpha", "2"), ("beta", "1")]
LATEST = {"alpha": "2", "beta": "1"}


@pytest.fixture(scope="module")
def repo(digits_data, tmp_path_factory):
    base = tmp_path_factory.mktemp("repository")
    private, public = new_signing_key(base / "keys")
    root = base / "models"
    for (model, version), (seed, hidden) in zip(
        VERSIONS, [(1, [32]), (2, [32]), (3, [24, 16])], strict=True
    ):
        bundle = digits_classifier(root / model / version, digits_data, seed=seed, hidden=hidden)
        sign_bundle(bundle, private)
    gamma = copy_bundle(root / "alpha" / "1", root / "gamma" / "1")
    weights = gamma / "weights.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0x01  # one bit of one weight: the signature no longer matches
    weights.write_bytes(bytes(data))
    for ignored in ("01", "latest", ".3.tmp"):
        (root / "alpha" / ignored).mkdir()
    return root, public


@pytest.fixture(scope="module")
def server(repo, tmp_path_factory):
    root, public = repo
    log = tmp_path_factory.mktemp("repo-log") / "server.log"
    with Server(root, "--public-key", str(public), log=log, token=TOKEN, grpc=True) as srv:
        yield srv


@pytest.fixture(scope="module")
def rows(digits_data):
    """(ids, raw samples as clients send them, model input) of the first test rows."""
    split = read_split(digits_data, "test")
    raw = raw_split(digits_data, "test")[:ROWS].astype(np.uint8)
    return split.ids[:ROWS].tolist(), raw, split.x[:ROWS].numpy()


@pytest.fixture(scope="module")
def predicted(repo, digits_data, tmp_path_factory):
    """`deepfleet predict`'s classes on the test split, by (model, version) and row id."""
    root, public = repo
    out = tmp_path_factory.mktemp("predicted")
    classes = {}
    for model, version in VERSIONS:
        target = out / f"{model}-{version}"
        args = ["predict", str(root / model / version), str(digits_data), "--out", str(target)]
        assert run_cli([*args, "--split", "test", "--public-key", str(public)]) == 0
        manifest = json.loads((target / "manifest.json").read_text())
        labels = {}
        for entry in manifest["files"]:
            table = pq.read_table(target / entry["file"], columns=["id", "label"])
            labels.update(zip(table["id"].to_pylist(), table["label"].to_pylist(), strict=True))
        classes[model, version] = labels
    return classes


def _http(server) -> httpclient.InferenceServerClient:
    return httpclient.InferenceServerClient(url=f"127.0.0.1:{server.port}", network_timeout=30)


def _grpc(server) -> grpcclient.InferenceServerClient:
    return grpcclient.InferenceServerClient(url=server.grpc_url)


def http_infer(server, model: str, raw: np.ndarray, version: str = "", headers=AUTH):
    tensor = httpclient.InferInput("input", list(raw.shape), "UINT8")
    tensor.set_data_from_numpy(raw, binary_data=False)
    outputs = [httpclient.InferRequestedOutput(n, binary_data=False) for n in ("logits", "label")]
    with _http(server) as client:
        return client.infer(
            model, [tensor], model_version=version, outputs=outputs, headers=headers
        )


def grpc_infer(server, model: str, raw: np.ndarray, version: str = "", headers=GRPC_AUTH):
    tensor = grpcclient.InferInput("input", list(raw.shape), "UINT8")
    tensor.set_data_from_numpy(raw)
    with _grpc(server) as client:
        return client.infer(model, [tensor], model_version=version, headers=headers)


def test_every_model_and_version_answers_as_predict_does_over_http_and_grpc(
    server, repo, rows, predicted
):
    root, _ = repo
    ids, raw, x = rows
    for model, version in [*VERSIONS, ("alpha", ""), ("beta", "")]:
        answered_by = version or LATEST[model]
        by_http = http_infer(server, model, raw, version)
        by_grpc = grpc_infer(server, model, raw, version)
        got = (
            by_http.get_response()["model_version"],
            by_grpc.get_response(as_json=True)["model_version"],
        )
        assert got == (answered_by, answered_by), (model, version)
        expected = [predicted[model, answered_by][i] for i in ids]
        for result in (by_http, by_grpc):
            assert result.as_numpy("label").tolist() == expected, (model, version)
        mine = own_logits(root / model / answered_by, x)
        np.testing.assert_allclose(by_http.as_numpy("logits"), mine, atol=BACKEND_TOLERANCE)
        np.testing.assert_allclose(by_grpc.as_numpy("logits"), mine, atol=BACKEND_TOLERANCE)
        # The JSON floats and the raw bytes carry the same float32 values.
        np.testing.assert_array_equal(by_http.as_numpy("logits"), by_grpc.as_numpy("logits"))
    # The two versions of alpha are different models: the version answering matters.
    assert predicted["alpha", "1"] != predicted["alpha", "2"]


def test_metadata_and_readiness_list_the_ready_versions(server):
    with _http(server) as http, _grpc(server) as grpc:
        assert http.is_server_ready() and grpc.is_server_ready()
        by_http = http.get_model_metadata("alpha", headers=AUTH)
        by_grpc = grpc.get_model_metadata("alpha", headers=GRPC_AUTH, as_json=True)
        assert by_http["versions"] == by_grpc["versions"] == ["1", "2"]
        assert by_http["parameters"]["version"] == "2"  # the latest answers unnamed requests
        assert by_grpc["inputs"] == [
            {"name": "input", "datatype": "UINT8", "shape": ["-1", "1", "8", "8"]}
        ]
        assert [o["name"] for o in by_grpc["outputs"]] == ["logits", "probabilities", "label"]
        one = http.get_model_metadata("alpha", "1", headers=AUTH)
        assert one["parameters"]["version"] == "1"
        assert one["parameters"]["digest"] != by_http["parameters"]["digest"]
        for model, version in VERSIONS:
            assert http.is_model_ready(model, version) and grpc.is_model_ready(model, version)
        # Readiness is open (no token) and says no for the tampered model, without a reason.
        assert not http.is_model_ready("gamma") and not grpc.is_model_ready("gamma")
        reply = httpx.get(f"{server.url}/v2/models/gamma/ready")
        assert reply.status_code == 400 and reply.json() == {"error": "model 'gamma' is not ready"}


def test_the_index_shows_the_tampered_version_unavailable_with_its_reason(server):
    with _http(server) as http, _grpc(server) as grpc:
        by_http = http.get_model_repository_index(headers=AUTH)
        by_grpc = grpc.get_model_repository_index(headers=GRPC_AUTH, as_json=True)["models"]
    for row in by_grpc:
        row.setdefault("reason", "")  # protobuf's JSON leaves out empty strings
    assert by_http == by_grpc
    states = {(r["name"], r["version"]): r["state"] for r in by_http}
    assert states == {
        ("alpha", "1"): "READY",
        ("alpha", "2"): "READY",
        ("beta", "1"): "READY",
        ("gamma", "1"): "UNAVAILABLE",
    }
    (gamma,) = [r for r in by_http if r["name"] == "gamma"]
    assert "signature verification failed" in gamma["reason"]
    assert "changed: weights.safetensors" in gamma["reason"]
    ready = httpx.post(f"{server.url}/v2/repository/index", json={"ready": True}, headers=AUTH)
    assert {r["name"] for r in ready.json()} == {"alpha", "beta"}


def test_the_tampered_version_never_answers(server, rows):
    _, raw, _ = rows
    for version in ("", "1"):
        with pytest.raises(InferenceServerException) as refused:
            grpc_infer(server, "gamma", raw[:1], version)
        assert refused.value.status() == "StatusCode.FAILED_PRECONDITION"
        assert "UNAVAILABLE" in refused.value.message()
        assert "signature verification failed" in refused.value.message()
        path = "/v2/models/gamma" + (f"/versions/{version}" if version else "") + "/infer"
        reply = httpx.post(
            f"{server.url}{path}", json=infer_body(raw[:1], datatype="UINT8"), headers=AUTH
        )
        assert reply.status_code == 400 and "UNAVAILABLE" in reply.json()["error"]
    # An explicit load verifies it again, and refuses it again.
    with _grpc(server) as grpc, pytest.raises(InferenceServerException) as refused:
        grpc.load_model("gamma", headers=GRPC_AUTH)
    assert refused.value.status() == "StatusCode.FAILED_PRECONDITION"
    assert "failed to load model 'gamma'" in refused.value.message()


@pytest.mark.parametrize(
    ("http_headers", "grpc_headers"),
    [
        ({}, {}),
        ({"Authorization": "Bearer wrong-token-0123456789"}, {"authorization": "Bearer wrong"}),
        ({"Authorization": f"Basic {TOKEN}"}, {"authorization": f"Basic {TOKEN}"}),
    ],
)
def test_a_missing_or_wrong_token_is_refused(server, rows, http_headers, grpc_headers):
    _, raw, _ = rows
    reply = httpx.post(
        f"{server.url}/v2/models/alpha/infer",
        json=infer_body(raw[:1], datatype="UINT8"),
        headers=http_headers,
    )
    assert reply.status_code == 401
    assert reply.json() == {"error": "missing or wrong bearer token"}
    assert httpx.post(f"{server.url}/v2/repository/index", headers=http_headers).status_code == 401
    with _grpc(server) as grpc:
        for call in (
            lambda: grpc_infer(server, "alpha", raw[:1], headers=grpc_headers),
            lambda: grpc.get_model_metadata("alpha", headers=grpc_headers),
            lambda: grpc.get_model_repository_index(headers=grpc_headers),
            lambda: grpc.unload_model("alpha", headers=grpc_headers),
        ):
            with pytest.raises(InferenceServerException) as refused:
                call()
            assert refused.value.status() == "StatusCode.UNAUTHENTICATED"
            assert refused.value.message() == "missing or wrong bearer token"
        # Open by design, as over HTTP: liveness, readiness, server metadata.
        assert grpc.is_server_live(headers=grpc_headers)
        assert grpc.get_server_metadata(headers=grpc_headers).name == "deepfleet"


def test_the_bearer_scheme_is_case_insensitive_over_grpc(server, rows):
    _, raw, _ = rows
    for scheme in ("bearer", "BEARER"):
        result = grpc_infer(server, "beta", raw[:2], headers={"authorization": f"{scheme} {TOKEN}"})
        assert result.as_numpy("label").shape == (2,)


def test_unknown_models_and_versions_are_not_found(server, rows):
    _, raw, _ = rows
    for model, version, says in (
        ("nope", "", "unknown model 'nope'"),
        ("alpha", "3", "unknown version '3'"),
        ("alpha", "01", "unknown version '01'"),
    ):
        with pytest.raises(InferenceServerException) as refused:
            grpc_infer(server, model, raw[:1], version)
        assert refused.value.status() == "StatusCode.NOT_FOUND"
        assert says in refused.value.message()
    reply = httpx.post(
        f"{server.url}/v2/models/alpha/versions/3/infer",
        json=infer_body(raw[:1], datatype="UINT8"),
        headers=AUTH,
    )
    assert reply.status_code == 404 and "it has versions: 1, 2" in reply.json()["error"]
    # /predict names no model: with several it asks for one.
    reply = httpx.post(f"{server.url}/predict", json={"instances": [raw[0].tolist()]}, headers=AUTH)
    assert reply.status_code == 400 and "name one" in reply.json()["error"]


def test_unload_drains_then_refuses_and_load_serves_again(server, rows):
    _, raw, _ = rows
    with _grpc(server) as grpc, _http(server) as http:
        grpc.unload_model("beta", headers=GRPC_AUTH)
        rows_now = {
            (r["name"], r["version"]): r for r in http.get_model_repository_index(headers=AUTH)
        }
        assert rows_now["beta", "1"]["state"] == "UNAVAILABLE"
        assert rows_now["beta", "1"]["reason"] == "unloaded"
        assert rows_now["alpha", "2"]["state"] == "READY"
        with pytest.raises(InferenceServerException) as refused:
            grpc_infer(server, "beta", raw[:1])
        assert refused.value.status() == "StatusCode.FAILED_PRECONDITION"
        assert not http.is_model_ready("beta")
        http.load_model("beta", headers=AUTH)
        assert http.is_model_ready("beta", "1")
        assert grpc_infer(server, "beta", raw[:3]).as_numpy("label").shape == (3,)
        for call, status in (
            (lambda: grpc.load_model("nope", headers=GRPC_AUTH), "StatusCode.NOT_FOUND"),
            (lambda: grpc.unload_model("nope", headers=GRPC_AUTH), "StatusCode.NOT_FOUND"),
        ):
            with pytest.raises(InferenceServerException) as refused:
                call()
            assert refused.value.status() == status
    refused_body = httpx.post(
        f"{server.url}/v2/repository/models/beta/load",
        json={"parameters": {"config": "{}"}},
        headers=AUTH,
    )
    assert refused_body.status_code == 400 and "not supported" in refused_body.json()["error"]
