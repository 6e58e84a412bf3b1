"""The inference routes skip FastAPI's router (serve/_hot.py): every answer they give, errors
and refusals included, must be the one FastAPI's routing of the same request gives. Checked
against a second app built without the shortcut, request by request, and in /metrics."""

from __future__ import annotations

import re
import secrets

import numpy as np
import pytest
from fastapi.testclient import TestClient

from deepfleet.deploy.serve import ServeConfig, create_app
from deepfleet.deploy.serve._hot import HotRoutes, hot_route

pytestmark = pytest.mark.e2e

TOKEN = secrets.token_hex(16)
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def _app(bundle, shortcut: bool):
    app = create_app(ServeConfig(bundle=str(bundle), token=TOKEN))
    if not shortcut:
        app.user_middleware = [m for m in app.user_middleware if m.cls is not HotRoutes]
    return app


@pytest.fixture(scope="module")
def clients(trained_run):
    with (
        TestClient(_app(trained_run.bundle, True)) as hot,
        TestClient(_app(trained_run.bundle, False)) as routed,
    ):
        yield hot, routed


def test_only_the_inference_posts_take_the_shortcut():
    assert hot_route("/predict")[0].path == "/predict"
    assert hot_route("/v2/models/tiny/infer")[0].path == "/v2/models/{name}/infer"
    label = hot_route("/v2/models/tiny/versions/3/infer")[0]
    assert label.path == "/v2/models/{name}/versions/{version}/infer"
    for path in (
        "/predict/",
        "/v2/models/tiny",
        "/v2/models//infer",
        "/v2/models/tiny/infer/",
        "/v2/models/tiny/versions//infer",
        "/v2/models/tiny/versions/3/extra/infer",
        "/v2/models/tiny/generate",
        "/v2/repository/index",
        "/metrics",
    ):
        assert hot_route(path) is None, path


def _sample(seed: int) -> list:
    return np.random.default_rng(seed).integers(0, 17, (1, 8, 8)).tolist()


def _infer(sample: list) -> dict:
    data = np.asarray(sample).ravel().tolist()
    return {"inputs": [{"name": "input", "shape": [1, 1, 8, 8], "datatype": "FP32", "data": data}]}


CASES = [
    ("/predict", AUTH, {"instances": [_sample(0), _sample(1)]}, 200),
    ("/v2/models/tiny/infer", AUTH, _infer(_sample(2)), 200),
    ("/v2/models/tiny/versions/1/infer", AUTH, _infer(_sample(3)), 200),
    # refusals: no token, wrong scheme, lower-case scheme (accepted), bad bodies, unknown ones
    ("/predict", {}, {"instances": [_sample(0)]}, 401),
    ("/predict", {"Authorization": f"Basic {TOKEN}"}, {"instances": [_sample(0)]}, 401),
    ("/v2/models/tiny/infer", {"Authorization": f"bearer {TOKEN}"}, _infer(_sample(4)), 200),
    ("/predict", AUTH, {"instances": []}, 400),
    ("/predict", AUTH, {"instances": [[1, 2, 3]]}, 400),
    ("/v2/models/tiny/infer", AUTH, {"inputs": [{"name": "input", "datatype": ["FP32"]}]}, 400),
    ("/v2/models/nope/infer", AUTH, _infer(_sample(5)), 404),
    ("/v2/models/tiny/versions/9/infer", AUTH, _infer(_sample(5)), 404),
]


@pytest.mark.parametrize("case", range(len(CASES)))
def test_the_shortcut_answers_as_fastapi_routing_does(clients, case):
    path, headers, body, status = CASES[case]
    hot, routed = (c.post(path, json=body, headers=headers) for c in clients)
    assert hot.status_code == routed.status_code == status, (hot.text, routed.text)
    assert hot.json() == routed.json()
    for field in ("content-type", "www-authenticate", "retry-after"):
        assert hot.headers.get(field) == routed.headers.get(field), field


def test_bodies_that_are_not_json_and_wrong_methods(clients):
    for path in ("/predict", "/v2/models/tiny/infer"):
        hot, routed = (c.post(path, content=b"{not json", headers=AUTH) for c in clients)
        assert hot.status_code == routed.status_code == 400
        assert hot.json() == routed.json()
        # Not a POST: FastAPI answers for both (405), the shortcut is not involved.
        hot, routed = (c.get(path, headers=AUTH) for c in clients)
        assert hot.status_code == routed.status_code == 405


def _counts(client) -> dict[tuple[str, str], float]:
    text = client.get("/metrics").text
    found = re.findall(
        r'deepfleet_requests_total\{code="(\d+)",method="POST",route="([^"]+)"\} (\S+)', text
    )
    return {(route, code): float(n) for code, route, n in found}


def test_the_metrics_count_the_shortcut_under_the_route_templates(clients):
    hot, routed = clients
    before = [_counts(c) for c in clients]
    for client in clients:
        client.post("/predict", json={"instances": [_sample(7)]}, headers=AUTH)
        client.post("/v2/models/tiny/versions/1/infer", json=_infer(_sample(8)), headers=AUTH)
        client.post("/predict", json={"instances": [_sample(7)]})
    after = [_counts(c) for c in clients]
    grown = [
        {k: v - b.get(k, 0.0) for k, v in a.items() if v != b.get(k, 0.0)}
        for a, b in zip(after, before, strict=True)
    ]
    assert (
        grown[0]
        == grown[1]
        == {
            ("/predict", "200"): 1.0,
            ("/predict", "401"): 1.0,
            ("/v2/models/{name}/versions/{version}/infer", "200"): 1.0,
        }
    )
