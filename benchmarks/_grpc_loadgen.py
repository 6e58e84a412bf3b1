"""A small closed-loop gRPC load generator, the counterpart of _loadgen's HTTP one.

Requests are serialised once up front and sent as bytes (no message objects built per call),
answers are taken as bytes: the client side costs about what _loadgen's does, so the two
protocols are compared on the server's work. One channel per client, each on its own
connection (a local subchannel pool), as _loadgen opens one connection per client.
Loopback only; bounded in time and in request count.
"""

from __future__ import annotations

import asyncio
import time

import grpc

from _loadgen import LoadResult


async def _run(
    target: str,
    method: str,
    requests: list[bytes],
    clients: int,
    seconds: float,
    max_requests: int,
    metadata: tuple[tuple[str, str], ...],
) -> LoadResult:
    result = LoadResult(clients, seconds)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds

    async def client(k: int) -> None:
        options = [("grpc.use_local_subchannel_pool", 1)]
        async with grpc.aio.insecure_channel(target, options=options) as channel:
            call = channel.unary_unary(method)  # bytes in, bytes out
            i = k
            while loop.time() < deadline and len(result.latencies) < max_requests:
                started = time.perf_counter()
                try:
                    await call(requests[i % len(requests)], metadata=metadata, timeout=30)
                    code = "OK"
                except grpc.aio.AioRpcError as err:
                    if err.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.UNKNOWN):
                        result.failures += 1  # no answer from the server
                        i += clients
                        continue
                    code = err.code().name
                result.latencies.append(time.perf_counter() - started)
                result.codes[code] = result.codes.get(code, 0) + 1
                i += clients

    started = time.perf_counter()
    await asyncio.gather(*[client(k) for k in range(clients)])
    result.seconds = time.perf_counter() - started
    return result


def run_grpc_load(
    target: str,
    method: str,
    requests: list[bytes],
    clients: int,
    seconds: float,
    max_requests: int = 1_000_000,
    metadata: tuple[tuple[str, str], ...] = (),
) -> LoadResult:
    return asyncio.run(_run(target, method, requests, clients, seconds, max_requests, metadata))
