"""Every route of the server is either on the documented open list or refuses a request
without the bearer token: a route added without auth cannot slip through."""

from __future__ import annotations

import re
import secrets

import pytest
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient
from starlette.routing import Route

from deepfleet.deploy.serve import ServeConfig, create_app
from deepfleet.deploy.serve._app import OPEN_ROUTES

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def client(trained_run):
    app = create_app(ServeConfig(bundle=str(trained_run.bundle), token=secrets.token_hex(16)))
    with TestClient(app) as test_client:
        yield test_client


def _routes(app) -> list[tuple[str, str]]:
    """(method, path) of every route, inside included routers too (newer FastAPI keeps an
    included router as one entry of app.routes; the routers here have no prefix)."""
    found, pending = [], list(app.routes)
    while pending:
        route = pending.pop(0)
        included = getattr(route, "original_router", None)
        if included is not None:
            pending += list(included.routes)
        elif isinstance(route, APIRoute | Route):
            found += [
                (method, route.path) for method in sorted(route.methods or ()) if method != "HEAD"
            ]
    return found


def test_every_route_not_listed_open_refuses_a_missing_token(client):
    routes = _routes(client.app)
    assert ("POST", "/v2/models/{name}/infer") in routes
    protected = [(m, p) for m, p in routes if p not in OPEN_ROUTES]
    assert len(protected) >= 5
    for method, path in protected:
        url = re.sub(r"\{version\}", "1", path.replace("{name}", "tiny"))
        reply = client.request(method, url, content=b"{}")
        assert reply.status_code == 401, (method, path, reply.text)
        assert reply.json() == {"error": "missing or wrong bearer token"}


def test_the_open_routes_answer_without_a_token(client):
    version = "1"
    for path in (
        "/v2",
        "/v2/health/live",
        "/v2/health/ready",
        "/v2/models/tiny/ready",
        f"/v2/models/tiny/versions/{version}/ready",
        "/metrics",
        "/openapi.json",
        "/docs",
    ):
        assert client.get(path).status_code == 200, path
    listed = {p for _, p in _routes(client.app)}
    assert OPEN_ROUTES - {"/redoc", "/docs/oauth2-redirect"} <= listed


def test_the_scheme_is_case_insensitive(client):
    token = client.app.state.config.token
    for scheme in ("Bearer", "bearer", "BEARER"):
        reply = client.get("/v2/models/tiny", headers={"Authorization": f"{scheme} {token}"})
        assert reply.status_code == 200, scheme
