"""New versions replace old ones under load without a failed request.

A real `deepfleet serve REPO/ --max-versions 1 --poll-interval 0.3` serves alpha/1 while 32
closed-loop clients (16 over HTTP with JSON tensors, 16 over gRPC with tritonclient.grpc.aio)
ask for alpha with no version. Version 2 is put in place and loaded with a repository load
call; later version 3 is put in place and left for polling to find. Each older version is
unloaded only after draining. Every answer must be a 200 / OK from exactly one version: its
model_version names it, and its logits are that version's own for the row sent.
"""

from __future__ import annotations

import asyncio
import secrets
import time

import httpx
import numpy as np
import pytest
import tritonclient.grpc.aio as grpcaio
from _deploy_helpers import Server, infer_body, raw_split
from _repo_bundles import digits_classifier, own_logits, place_version

from deepfleet.data import read_split
from deepfleet.deploy._backends import BACKEND_TOLERANCE

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
CLIENTS = 32
ROWS = 32
MAX_REQUESTS = 40_000  # a bound on the test itself, whatever the machine's speed
SETTLE_S = 1.0  # load before, between and after the swaps
SWAP_TIMEOUT_S = 30
TOKEN = secrets.token_hex(16)
AUTH = {"Authorization": f"Bearer {TOKEN}"}


class Record:
    """What the clients saw: per answer (client, version, row, logits, sent at)."""

    def __init__(self) -> None:
        self.answers: list[tuple[int, int, int, np.ndarray, float]] = []
        self.failures: list[str] = []
        self.stop = asyncio.Event()


async def _http_client(k: int, url: str, raw: np.ndarray, record: Record) -> None:
    async with httpx.AsyncClient(headers=AUTH, timeout=30) as session:
        i = k
        while not record.stop.is_set() and len(record.answers) < MAX_REQUESTS:
            row = i % ROWS
            body = infer_body(raw[row : row + 1], datatype="UINT8", outputs=[{"name": "logits"}])
            sent = time.monotonic()
            try:
                reply = await session.post(f"{url}/v2/models/alpha/infer", json=body)
            except httpx.HTTPError as err:
                record.failures.append(f"http {type(err).__name__}")
            else:
                if reply.status_code != 200:
                    record.failures.append(f"http {reply.status_code} {reply.text[:200]}")
                else:
                    answer = reply.json()
                    logits = np.array(answer["outputs"][0]["data"], np.float32)
                    record.answers.append((k, int(answer["model_version"]), row, logits, sent))
            i += CLIENTS


async def _grpc_client(k: int, url: str, raw: np.ndarray, record: Record) -> None:
    client = grpcaio.InferenceServerClient(url=url)
    try:
        i = k
        while not record.stop.is_set() and len(record.answers) < MAX_REQUESTS:
            row = i % ROWS
            tensor = grpcaio.InferInput("input", [1, 1, 8, 8], "UINT8")
            tensor.set_data_from_numpy(raw[row : row + 1])
            sent = time.monotonic()
            try:
                result = await client.infer(
                    "alpha",
                    [tensor],
                    outputs=[grpcaio.InferRequestedOutput("logits")],
                    headers={"authorization": f"Bearer {TOKEN}"},
                    client_timeout=30,
                )
            except Exception as err:  # tritonclient raises its own exception type
                record.failures.append(f"grpc {err}")
            else:
                version = int(result.get_response().model_version)
                record.answers.append((k, version, row, result.as_numpy("logits")[0], sent))
            i += CLIENTS
    finally:
        await client.close()


async def _index(url: str) -> dict[str, dict]:
    async with httpx.AsyncClient(headers=AUTH, timeout=30) as admin:
        reply = await admin.post(f"{url}/v2/repository/index")
    return {row["version"]: row for row in reply.json() if row["name"] == "alpha"}


async def _wait_for(url: str, ready: str, gone: str) -> dict[str, dict]:
    deadline = time.monotonic() + SWAP_TIMEOUT_S
    while time.monotonic() < deadline:
        rows = await _index(url)
        if rows.get(ready, {}).get("state") == "READY" and rows[gone]["state"] == "UNAVAILABLE":
            return rows
        await asyncio.sleep(0.1)
    raise AssertionError(f"version {ready} did not replace {gone}: {rows}")


async def _scenario(srv: Server, repo, bundles, raw) -> tuple[Record, dict]:
    record = Record()
    clients = [
        _http_client(k, srv.url, raw, record)
        if k % 2 == 0
        else _grpc_client(k, srv.grpc_url, raw, record)
        for k in range(CLIENTS)
    ]
    running = asyncio.gather(*clients)
    marks = {"start": time.monotonic()}
    try:
        await asyncio.sleep(SETTLE_S)
        place_version(bundles[2], repo, "alpha", 2)
        async with httpx.AsyncClient(headers=AUTH, timeout=60) as admin:
            loaded = await admin.post(f"{srv.url}/v2/repository/models/alpha/load")
        assert loaded.status_code == 200, loaded.text
        # The load call returns once version 1 has drained and stopped.
        marks["loaded_2"] = time.monotonic()
        marks["after_load"] = await _index(srv.url)
        await asyncio.sleep(SETTLE_S)
        place_version(bundles[3], repo, "alpha", 3)  # no call: polling finds it
        marks["after_poll"] = await _wait_for(srv.url, ready="3", gone="2")
        marks["polled_3"] = time.monotonic()
        await asyncio.sleep(SETTLE_S)
    finally:
        record.stop.set()
        await running
    return record, marks


def test_versions_swap_under_32_clients_without_a_failed_request(digits_data, tmp_path):
    bundles = {  # seeds 1 and 2 as in test_serve_repository (exported once per session)
        v: digits_classifier(tmp_path / f"v{v}", digits_data, seed=seed, hidden=[32])
        for v, seed in ((1, 1), (2, 2), (3, 4))
    }
    raw = raw_split(digits_data, "test")[:ROWS].astype(np.uint8)
    x = read_split(digits_data, "test").x[:ROWS].numpy()
    expected = {v: own_logits(bundle, x) for v, bundle in bundles.items()}
    for a, b in ((1, 2), (2, 3), (1, 3)):  # every row tells the versions apart
        assert (np.abs(expected[a] - expected[b]).max(axis=1) > 100 * BACKEND_TOLERANCE).all()
    repo = tmp_path / "repo"
    place_version(bundles[1], repo, "alpha", 1)
    args = ("--max-versions", "1", "--poll-interval", "0.3", "--max-queue", "1024")
    with Server(repo, *args, log=tmp_path / "server.log", token=TOKEN, grpc=True) as srv:
        record, marks = asyncio.run(_scenario(srv, repo, bundles, raw))
        log = srv.log.read_text()

    assert record.failures == [], record.failures[:5]
    assert len(record.answers) >= CLIENTS * 10
    clients, versions, rows, logits, sent = zip(*record.answers, strict=True)
    versions, rows, logits, sent = (
        np.array(versions),
        np.array(rows),
        np.stack(logits),
        np.array(sent),
    )
    assert set(versions.tolist()) == {1, 2, 3}
    for v in (1, 2, 3):  # each answer is exactly its version's own output for its row
        mine = versions == v
        np.testing.assert_allclose(logits[mine], expected[v][rows[mine]], atol=BACKEND_TOLERANCE)
    # Nothing sent after a swap finished is answered by a version it replaced.
    assert versions[sent > marks["loaded_2"]].min() >= 2
    assert (versions[sent > marks["polled_3"]] == 3).all()
    # Each client moves forward only: 1 ... 1, 2 ... 2, 3 ... 3.
    for k in range(CLIENTS):
        seen = [v for c, v, *_ in record.answers if c == k]
        assert seen == sorted(seen), k
    # The replaced versions were unloaded after draining, and the index says why.
    first, second = marks["after_load"], marks["after_poll"]
    assert first["2"]["state"] == "READY" and first["1"]["state"] == "UNAVAILABLE"
    assert second["3"]["state"] == "READY"
    for rows_now, old in ((first, "1"), (second, "1"), (second, "2")):
        assert rows_now[old]["reason"] == "unloaded: only the latest 1 versions are served"
    assert "still in flight at unload" not in log
    print(
        f"\n{len(versions)} answers: "
        + ", ".join(f"v{v} {int((versions == v).sum())}" for v in (1, 2, 3))
        + f"; load call done at {marks['loaded_2'] - marks['start']:.1f} s, "
        f"version 3 polled in at {marks['polled_3'] - marks['start']:.1f} s"
    )
