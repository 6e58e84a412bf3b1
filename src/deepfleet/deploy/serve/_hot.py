"""The inference routes, reached without FastAPI's router on the way.

FastAPI (0.165) matches a path against every route of every included router, and again
inside the router it picked, and resolves the route's dependencies, on every request: for
a one-sample POST /predict that was about as much of the event loop's time as parsing the
body, running the model and writing the answer together. This middleware sits inside the
request metrics and hands the inference routes (POST /predict and POST
/v2/models/{name}[/versions/{version}]/infer) straight to their handlers, with exactly what
FastAPI would have done around them: the token check first, then the handler, and every
exception answered by the handler the app registered for it (so the answers, the 401s and
the metrics are the same). Anything else (another method, a trailing slash, an unknown
path) goes through FastAPI as before, which also still documents these routes.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from deepfleet.deploy.serve import _routes_model as routes
from deepfleet.deploy.serve._state import require_token

Handler = Callable[[Request], Awaitable[Response]]


class _RouteLabel:
    """What the request metrics read from scope["route"]: the route's path template."""

    __slots__ = ("path",)

    def __init__(self, path: str) -> None:
        self.path = path


PREDICT = _RouteLabel("/predict")
INFER = _RouteLabel("/v2/models/{name}/infer")
VERSION_INFER = _RouteLabel("/v2/models/{name}/versions/{version}/infer")


def hot_route(path: str) -> tuple[_RouteLabel, Handler] | None:
    """The handler for an inference path (a POST), or None for any other path."""
    if path == "/predict":
        return PREDICT, routes.predict
    parts = path.split("/")
    # "", "v2", "models", name, "infer"  /  ..., name, "versions", version, "infer"
    if len(parts) < 5 or parts[1] != "v2" or parts[2] != "models" or parts[-1] != "infer":
        return None
    name = parts[3]
    if not name:
        return None
    if len(parts) == 5:
        return INFER, lambda request: routes.model_infer(name, request)
    if len(parts) == 7 and parts[4] == "versions" and parts[5]:
        version = parts[5]
        return VERSION_INFER, lambda request: routes.model_version_infer(name, version, request)
    return None


class HotRoutes:
    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        hot = None
        if scope["type"] == "http" and scope["method"] == "POST" and not scope.get("root_path"):
            hot = hot_route(scope["path"])
        if hot is None:
            return await self.app(scope, receive, send)
        scope["route"], handler = hot
        request = Request(scope, receive)
        try:
            await require_token(request)
            response = await handler(request)
        except Exception as err:  # answered as the app's handler for it answers it
            response = await _handler_for(request, err)(request, err)
        await response(scope, receive, send)


def _handler_for(request: Request, err: Exception) -> Callable[..., Awaitable[Response]]:
    handlers = request.app.exception_handlers
    for cls in type(err).__mro__:
        if cls in handlers:
            return handlers[cls]
    raise err  # no handler (the app registers one for Exception, so never in practice)
