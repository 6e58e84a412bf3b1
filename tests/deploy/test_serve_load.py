"""Load: 32 concurrent clients for 30 s against two uvicorn workers, over loopback only.

Every request must be answered 200 (zero 5xx, zero client errors), server memory must stay
bounded, and /metrics (summed over both workers) must count exactly what the clients sent.
"""

from __future__ import annotations

import asyncio
import re
import secrets
import time

import httpx
import numpy as np
import pytest
from _deploy_helpers import Server, infer_body, raw_split

CLIENTS = 32
SECONDS = 30
MAX_REQUESTS = 200_000  # a bound on the test itself, whatever the machine's speed
RSS_GROWTH_LIMIT_MIB = 150


async def _load(url: str, headers: dict, bodies: list[dict]) -> tuple[list, list, int]:
    latencies: list[float] = []
    codes: list[int] = []
    failures = 0
    deadline = time.monotonic() + SECONDS
    limits = httpx.Limits(max_connections=CLIENTS, max_keepalive_connections=CLIENTS)

    async def client(k: int, session: httpx.AsyncClient) -> None:
        nonlocal failures
        i = k
        while time.monotonic() < deadline and len(codes) < MAX_REQUESTS:
            started = time.perf_counter()
            try:
                reply = await session.post(url, json=bodies[i % len(bodies)])
                codes.append(reply.status_code)
                latencies.append(time.perf_counter() - started)
            except httpx.HTTPError:
                failures += 1
            i += CLIENTS

    async with httpx.AsyncClient(headers=headers, timeout=30, limits=limits) as session:
        await asyncio.gather(*[client(k, session) for k in range(CLIENTS)])
    return latencies, codes, failures


@pytest.mark.slow
@pytest.mark.e2e
def test_32_clients_for_30_seconds(trained_run, tmp_path):
    x = raw_split(trained_run.data_dir(), "test")
    bodies = [infer_body(x[i : i + 1]) for i in range(64)]
    with Server(
        trained_run.bundle,
        "--workers",
        "2",
        log=tmp_path / "server.log",
        token=secrets.token_hex(16),
    ) as srv:
        url = f"{srv.url}/v2/models/tiny/infer"
        for body in bodies[:8]:  # warm both workers' connections and allocators
            assert httpx.post(url, json=body, headers=srv.headers).status_code == 200
        rss_before = srv.rss_kib()
        latencies, codes, failures = asyncio.run(_load(url, srv.headers, bodies))
        rss_after = srv.rss_kib()
        metrics = httpx.get(f"{srv.url}/metrics").text
    assert failures == 0, "some requests got no answer"
    assert codes and set(codes) == {200}, {c: codes.count(c) for c in set(codes)}
    assert len(codes) >= CLIENTS * 10
    growth_mib = (rss_after - rss_before) / 1024
    assert growth_mib < RSS_GROWTH_LIMIT_MIB, f"server memory grew {growth_mib:.0f} MiB"
    counted = re.search(
        r'^deepfleet_requests_total\{code="200",method="POST",'
        r'route="/v2/models/\{name\}/infer"\} (\S+)$',
        metrics,
        re.M,
    )
    assert counted and float(counted.group(1)) == len(codes) + 8
    p50, p99 = np.percentile(latencies, [50, 99]) * 1000
    print(
        f"\n{len(codes)} requests in {SECONDS}s ({len(codes) / SECONDS:.0f}/s), "
        f"p50 {p50:.1f} ms, p99 {p99:.1f} ms, RSS {rss_before // 1024} -> "
        f"{rss_after // 1024} MiB"
    )
