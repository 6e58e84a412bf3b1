"""A small closed-loop HTTP/1.1 load generator on raw asyncio streams (keep-alive).

Each client sends a request, waits for the whole answer, and sends the next; the client side
costs a few microseconds per request, so on a small machine it takes little CPU away from the
server under test. Loopback only; bounded in time and in request count.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass, field

import numpy as np


@dataclass
class LoadResult:
    clients: int
    seconds: float
    latencies: list[float] = field(default_factory=list)
    codes: dict[int, int] = field(default_factory=dict)
    failures: int = 0

    def summary(self) -> dict:
        lat = np.array(self.latencies) * 1000 if self.latencies else np.zeros(1)
        return {
            "clients": self.clients,
            "seconds": round(self.seconds, 2),
            "requests": len(self.latencies),
            "throughput_rps": round(len(self.latencies) / self.seconds, 1),
            "p50_ms": round(float(np.percentile(lat, 50)), 2),
            "p99_ms": round(float(np.percentile(lat, 99)), 2),
            "codes": {str(k): v for k, v in sorted(self.codes.items())},
            "failures": self.failures,
        }


def oip_json_body(sample: np.ndarray) -> bytes:
    """One sample as an Open Inference Protocol JSON request body (an FP32 batch of one)."""
    tensor = {"name": "input", "shape": [1, *sample.shape], "datatype": "FP32"}
    return json.dumps({"inputs": [{**tensor, "data": sample.ravel().tolist()}]}).encode()


def http_request(
    port: int,
    path: str,
    body: bytes,
    token: str | None = None,
    headers: dict[str, str] | None = None,
) -> bytes:
    """A whole POST request; `headers` add to (or replace) the JSON content type."""
    fields = {"Content-Type": "application/json", **(headers or {})}
    if token:
        fields["Authorization"] = f"Bearer {token}"
    extra = "".join(f"{k}: {v}\r\n" for k, v in fields.items())
    head = f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Length: {len(body)}\r\n"
    return (head + extra + "\r\n").encode() + body


async def _read_answer(reader: asyncio.StreamReader) -> tuple[int, bool]:
    status = int((await reader.readline()).split()[1])
    length, chunked, close = 0, False, False
    while (line := await reader.readline()) not in (b"\r\n", b""):
        key, _, value = line.partition(b":")
        key = key.strip().lower()
        if key == b"content-length":
            length = int(value)
        elif key == b"transfer-encoding":
            chunked = b"chunked" in value.lower()
        elif key == b"connection":
            close = b"close" in value.lower()
    if chunked:
        while (size := int((await reader.readline()).strip(), 16)) > 0:
            await reader.readexactly(size + 2)
        await reader.readline()
    else:
        await reader.readexactly(length)
    return status, close


async def _run(
    port: int, requests: list[bytes], clients: int, seconds: float, max_requests: int
) -> LoadResult:
    result = LoadResult(clients, seconds)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds

    async def client(k: int) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        i = k
        try:
            while loop.time() < deadline and len(result.latencies) < max_requests:
                started = time.perf_counter()
                writer.write(requests[i % len(requests)])
                i += clients
                try:
                    status, close = await _read_answer(reader)
                except (OSError, ValueError, IndexError, asyncio.IncompleteReadError):
                    result.failures += 1
                    close = True
                else:
                    result.latencies.append(time.perf_counter() - started)
                    result.codes[status] = result.codes.get(status, 0) + 1
                if close:
                    writer.close()
                    reader, writer = await asyncio.open_connection("127.0.0.1", port)
        finally:
            writer.close()

    started = time.perf_counter()
    await asyncio.gather(*[client(k) for k in range(clients)])
    result.seconds = time.perf_counter() - started
    return result


def run_load(
    port: int, requests: list[bytes], clients: int, seconds: float, max_requests: int = 1_000_000
) -> LoadResult:
    return asyncio.run(_run(port, requests, clients, seconds, max_requests))
