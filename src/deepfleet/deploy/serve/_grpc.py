"""OIP v2 over gRPC (`--grpc-port`): KServe's GRPCInferenceService with Triton's repository
RPCs, served by grpc.aio on the event loop of the HTTP server, in the same process.

So both protocols share everything: the repository's models and versions, each version's
batcher (gRPC and HTTP requests batch together), the request timeout, the queue bound and
the Prometheus metrics (gRPC calls are counted under route "/inference.GRPCInferenceService/
<Method>", method "GRPC", code the status name). The token travels in the `authorization`
metadata key as `Bearer <token>` (scheme case-insensitive), checked by an interceptor before
any method runs, so no method can forget it; the methods the HTTP side leaves open (liveness,
readiness, server metadata) are open here too. Messages are bounded by --max-body-kb on
receipt and concurrent calls by --max-connections (beyond it: RESOURCE_EXHAUSTED).

With --workers N every worker process serves gRPC on the same port (SO_REUSEPORT, set only
then, so that a single server never silently shares a port with another process): the
kernel spreads connections over the workers, and a channel stays with one worker.
"""

from __future__ import annotations

import functools
import hmac
import logging
import time
from collections.abc import Awaitable, Callable

import grpc

from deepfleet import __version__
from deepfleet.deploy.serve._config import ServeConfig
from deepfleet.deploy.serve._errors import RequestError
from deepfleet.deploy.serve._grpc_codec import infer_payload, infer_response, metadata_response
from deepfleet.deploy.serve._metrics import Metrics
from deepfleet.deploy.serve._proto import grpc_predict_v2_pb2 as pb
from deepfleet.deploy.serve._proto import grpc_predict_v2_pb2_grpc as pb_grpc
from deepfleet.deploy.serve._repository import NotReady, Repository
from deepfleet.deploy.serve._routes_model import model_metadata_of

log = logging.getLogger("deepfleet.serve")

SERVICE = "/inference.GRPCInferenceService/"
# Open by design, like their HTTP counterparts: probes call them without credentials.
OPEN_METHODS = frozenset(
    SERVICE + m for m in ("ServerLive", "ServerReady", "ModelReady", "ServerMetadata")
)
MAX_SEND_BYTES = 64 << 20  # the largest answer: max batch x the widest output, with room
EXTENSIONS = ["model_repository"]
IDLE_CONNECTION_MS = 5 * 60 * 1000

STATUS = {
    400: grpc.StatusCode.INVALID_ARGUMENT,
    401: grpc.StatusCode.UNAUTHENTICATED,
    404: grpc.StatusCode.NOT_FOUND,
    409: grpc.StatusCode.FAILED_PRECONDITION,
    413: grpc.StatusCode.RESOURCE_EXHAUSTED,
    503: grpc.StatusCode.UNAVAILABLE,
}


def status_of(err: RequestError) -> grpc.StatusCode:
    """The gRPC status of an HTTP-style error (a NotReady version: FAILED_PRECONDITION)."""
    named = getattr(err, "grpc_code", None)
    if named:
        return grpc.StatusCode[named]
    return STATUS.get(err.status, grpc.StatusCode.INVALID_ARGUMENT)


def _count(metrics: Metrics, method: str, code: grpc.StatusCode, started: float) -> None:
    metrics.requests.labels(SERVICE + method, "GRPC", code.name).inc()
    metrics.latency.labels(SERVICE + method).observe(time.perf_counter() - started)


def _rpc(method: Callable[..., Awaitable]) -> Callable[..., Awaitable]:
    """Errors as gRPC statuses naming the problem (never a traceback), and the metrics."""

    @functools.wraps(method)
    async def wrapper(self: Servicer, request, context: grpc.aio.ServicerContext):
        started, code = time.perf_counter(), grpc.StatusCode.OK
        try:
            return await method(self, request, context)
        except RequestError as err:
            code = status_of(err)
            await context.abort(code, err.message)
        except Exception as err:
            log.exception("internal error in %s", method.__name__)
            code = grpc.StatusCode.INTERNAL
            await context.abort(code, f"internal error: {type(err).__name__}")
        finally:
            _count(self.metrics, method.__name__, code, started)

    return wrapper


def _no_parameters(parameters, allowed: frozenset[str] = frozenset()) -> None:
    unknown = sorted(set(parameters) - allowed)
    if unknown:
        raise RequestError(400, f"parameters not supported: {', '.join(unknown)[:80]}")


def _one_repository(name: str) -> None:
    if name:
        raise RequestError(404, f"unknown repository {name!r}; this server has one (name it '')")


class Servicer(pb_grpc.GRPCInferenceServiceServicer):
    def __init__(self, config: ServeConfig, repository: Repository, metrics: Metrics):
        self.config = config
        self.repository = repository
        self.metrics = metrics

    @_rpc
    async def ServerLive(self, request, context):
        return pb.ServerLiveResponse(live=True)

    @_rpc
    async def ServerReady(self, request, context):
        return pb.ServerReadyResponse(ready=self.repository.ready)

    @_rpc
    async def ModelReady(self, request, context):
        try:
            self.repository.get(request.name or _missing("name"), request.version)
        except NotReady:
            return pb.ModelReadyResponse(ready=False)
        return pb.ModelReadyResponse(ready=True)

    @_rpc
    async def ServerMetadata(self, request, context):
        return pb.ServerMetadataResponse(
            name="deepfleet", version=__version__, extensions=EXTENSIONS
        )

    @_rpc
    async def ModelMetadata(self, request, context):
        name = request.name or _missing("name")
        s = self.repository.get(name, request.version)
        return metadata_response(model_metadata_of(s, self.repository.versions(name)))

    @_rpc
    async def ModelInfer(self, request, context):
        arrived = time.perf_counter()
        payload = infer_payload(request)
        s = self.repository.get(request.model_name or _missing("model_name"), request.model_version)
        # Admitted to this version until answered: a version swap lets it finish here.
        with s.inflight.admitted():
            req = await s.parse(payload)
            outputs = await s.run(req.x, arrived, self.metrics)
        return infer_response(outputs, req.outputs, s.outputs, s.name, s.version, req.id)

    @_rpc
    async def RepositoryIndex(self, request, context):
        _one_repository(request.repository_name)
        answer = pb.RepositoryIndexResponse()
        for row in self.repository.index(ready_only=request.ready):
            answer.models.add(**row)
        return answer

    @_rpc
    async def RepositoryModelLoad(self, request, context):
        _one_repository(request.repository_name)
        _no_parameters(request.parameters)
        await self.repository.load(request.model_name or _missing("model_name"))
        return pb.RepositoryModelLoadResponse()

    @_rpc
    async def RepositoryModelUnload(self, request, context):
        _one_repository(request.repository_name)
        _no_parameters(request.parameters, frozenset({"unload_dependents"}))
        await self.repository.unload(request.model_name or _missing("model_name"))
        return pb.RepositoryModelUnloadResponse()


def _missing(field: str) -> str:
    raise RequestError(400, f"'{field}' is empty: name the model")


class TokenCheck(grpc.aio.ServerInterceptor):
    """The bearer token of every method not open by design, before the method runs."""

    def __init__(self, token: str, metrics: Metrics):
        self._token = token.encode()
        self._metrics = metrics

        async def refuse(request, context: grpc.aio.ServicerContext):
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, "missing or wrong bearer token")

        # Any request type: the refusal never looks at the (undeserialised) request.
        self._refusal = grpc.unary_unary_rpc_method_handler(refuse)

    async def intercept_service(self, continuation, details: grpc.HandlerCallDetails):
        if details.method in OPEN_METHODS or self._authorized(details.invocation_metadata):
            return await continuation(details)
        self._metrics.rejected.labels("unauthorized").inc()
        method = details.method.removeprefix(SERVICE)
        _count(self._metrics, method, grpc.StatusCode.UNAUTHENTICATED, time.perf_counter())
        return self._refusal

    def _authorized(self, metadata) -> bool:
        given = next((v for k, v in metadata or () if k == "authorization"), "")
        if isinstance(given, bytes):
            given = given.decode("latin-1")
        scheme, _, credentials = given.partition(" ")
        # compare_digest: the time taken does not reveal how much of the token matched.
        return scheme.lower() == "bearer" and hmac.compare_digest(credentials.encode(), self._token)


async def start_grpc(config: ServeConfig, repository: Repository, metrics: Metrics):
    """Start the gRPC server on the running event loop; returns it (stop it with .stop)."""
    options = [
        ("grpc.max_receive_message_length", config.max_body_bytes),
        ("grpc.max_send_message_length", MAX_SEND_BYTES),
        ("grpc.so_reuseport", 1 if config.workers > 1 else 0),
        # gRPC has no cap on connections: at least idle ones do not stay open forever.
        ("grpc.max_connection_idle_ms", IDLE_CONNECTION_MS),
    ]
    interceptors = [TokenCheck(config.token, metrics)] if config.token else []
    server = grpc.aio.server(
        interceptors=interceptors,
        options=options,
        maximum_concurrent_rpcs=config.max_connections,
    )
    pb_grpc.add_GRPCInferenceServiceServicer_to_server(
        Servicer(config, repository, metrics), server
    )
    host = f"[{config.host}]" if ":" in config.host else config.host
    server.add_insecure_port(f"{host}:{config.grpc_port}")
    await server.start()
    log.info("OIP v2 gRPC on %s:%d", config.host, config.grpc_port)
    return server
