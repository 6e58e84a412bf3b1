"""Hostile clients against a real `deepfleet serve` on 127.0.0.1: slow heads and bodies, an
endless header, too many header fields, a request line that is not HTTP, a client that
leaves mid-upload. Each is bounded in count and time; attackers connect from other loopback
addresses (127.0.0.2, ...: all of 127/8 is this machine) so the per-address bound can tell
them from the normal client on 127.0.0.1."""

from __future__ import annotations

import json
import re
import secrets
import select
import socket
import time

import httpx
import pytest
from _deploy_helpers import Server

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

MAX_CONNECTIONS = 150
PER_CLIENT = 50
HEAD_TIMEOUT_S = 3
BODY_TIMEOUT_S = 3
MAX_HEADER_KB = 16
MAX_HEADERS = 50
ATTACKERS = 200  # per kind: slow heads, slow bodies
ENDLESS = 8  # connections sending an endless header at once
ENDLESS_CAP = 4 << 20  # the most one of them sends before giving up on an answer
RSS_BOUND_MIB = 16  # the server's growth for all of them; unbounded, it grew by what they sent


@pytest.fixture(scope="module")
def server(trained_run, tmp_path_factory):
    log = tmp_path_factory.mktemp("hostile") / "server.log"
    args = {
        "--max-connections": MAX_CONNECTIONS,
        "--max-connections-per-client": PER_CLIENT,
        "--header-timeout": HEAD_TIMEOUT_S,
        "--body-timeout": BODY_TIMEOUT_S,
        "--max-header-kb": MAX_HEADER_KB,
        "--max-headers": MAX_HEADERS,
    }
    flags = [str(v) for pair in args.items() for v in pair]
    with Server(trained_run.bundle, *flags, log=log, token=secrets.token_hex(16)) as srv:
        yield srv


def _connect(server, source: str) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", server.port), 10, source_address=(source, 0))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def _answer(sock: socket.socket, timeout: float = 10) -> tuple[int, dict]:
    """The status and JSON body of an answer the server closes the connection after."""
    sock.settimeout(timeout)
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    assert b"content-type: application/json" in head.lower(), head
    return int(head.split()[1]), json.loads(body)


def _ready(sock: socket.socket) -> bool:
    return bool(select.select([sock], [], [], 0)[0])


def _metric(server, pattern: str) -> float:
    """The sum of the samples whose name and labels match `pattern` (route labels hold
    braces: a pattern matches the labels with `.*`, up to the line's last brace)."""
    text = httpx.get(f"{server.url}/metrics").text
    return sum(float(v) for v in re.findall(rf"^{pattern} (\S+)$", text, re.M))


def _wait_metric(server, pattern: str, value: float, seconds: float = 10) -> bool:
    """Whether the metric reaches `value` within `seconds` (the app counts a request when it
    has finished with it, a moment after the client saw the answer)."""
    deadline = time.monotonic() + seconds
    while _metric(server, pattern) < value and time.monotonic() < deadline:
        time.sleep(0.1)
    return _metric(server, pattern) == value


def _head(server, method: str, path: str, **fields: str) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1"]
    lines += [f"Authorization: Bearer {server.token}"]
    lines += [f"{k.replace('_', '-')}: {v}" for k, v in fields.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def test_disconnect_mid_upload_is_one_log_line_and_not_a_5xx(server):
    """Runs first (file order): nothing else writes to the log meanwhile."""
    before = server.log.read_text().splitlines()
    gone = 'deepfleet_requests_total{code="499",method="POST",route="/v2/models/{name}/infer"}'
    counted = _metric(server, re.escape(gone))
    for _ in range(3):
        sock = _connect(server, "127.0.0.1")
        head = _head(server, "POST", "/v2/models/tiny/infer", Content_Length="100000")
        sock.sendall(head + b'{"inputs": [{"name": "input", "data": [8, 8, 8')
        time.sleep(0.3)  # the app is now reading the body
        sock.close()
    assert _wait_metric(server, re.escape(gone), counted + 3)
    assert _metric(server, r'deepfleet_requests_total\{code="500",.*\}') == 0
    new = server.log.read_text().splitlines()[len(before) :]
    assert len(new) == 3, new
    assert all(line.endswith("disconnected before sending the whole request body") for line in new)


def test_http_layer_errors_are_json_and_the_scheme_is_case_insensitive(server):
    sock = _connect(server, "127.0.0.1")
    sock.sendall(b"NOT HTTP AT ALL\r\n\r\n")
    status, body = _answer(sock)
    assert status == 400 and "invalid HTTP request" in body["error"]
    for scheme in ("bearer", "BEARER", "Bearer"):
        reply = httpx.get(
            f"{server.url}/v2/models/tiny", headers={"Authorization": f"{scheme} {server.token}"}
        )
        assert reply.status_code == 200, (scheme, reply.text)


def test_too_many_header_fields_get_431(server):
    sock = _connect(server, "127.0.0.1")
    fields = {f"X_{k}": "1" for k in range(MAX_HEADERS + 5)}
    sock.sendall(_head(server, "GET", "/v2/health/live", **fields))
    status, body = _answer(sock)
    assert status == 431 and f"more than {MAX_HEADERS} header fields" in body["error"]


def test_endless_header_gets_431_and_memory_stays_bounded(server):
    rss_before = server.rss_kib()
    socks = [_connect(server, f"127.0.0.{10 + k}") for k in range(ENDLESS)]
    for sock in socks:
        sock.sendall(b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\nX-Endless: ")
    sent = [0] * ENDLESS
    chunk = b"a" * 65536
    open_ = set(range(ENDLESS))
    # Round-robin until each has an answer or has sent ENDLESS_CAP (a server without a
    # head limit never answers, and buffers all of it).
    while open_:
        for k in sorted(open_):
            if _ready(socks[k]) or sent[k] >= ENDLESS_CAP:
                open_.discard(k)
                continue
            try:
                socks[k].sendall(chunk)
                sent[k] += len(chunk)
            except OSError:
                open_.discard(k)
    rss_after = server.rss_kib()
    answers = [_answer(sock) for sock in socks]
    assert all(status == 431 for status, _ in answers), answers
    assert f"exceeds {MAX_HEADER_KB * 1024} bytes" in answers[0][1]["error"]
    assert max(sent) < ENDLESS_CAP  # the server answered long before the client gave up
    growth = (rss_after - rss_before) / 1024
    print(f"\nendless headers: {max(sent) // 1024} KiB sent at most, server RSS +{growth:.1f} MiB")
    assert growth < RSS_BOUND_MIB, f"server memory grew {growth:.1f} MiB"


def test_slow_clients_cannot_lock_out_a_normal_client(server):
    infer_body = {"inputs": [{"name": "input", "shape": [1, 1, 8, 8], "datatype": "UINT8"}]}
    infer_body["inputs"][0]["data"] = [8] * 64
    started = time.monotonic()
    slow_heads = [_connect(server, "127.0.0.2") for _ in range(ATTACKERS)]
    for sock in slow_heads:  # a head that never ends
        sock.sendall(b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\n")
    slow_bodies = [_connect(server, "127.0.0.3") for _ in range(ATTACKERS)]
    for sock in slow_bodies:  # a whole head, then a body that never ends
        head = _head(server, "POST", "/v2/models/tiny/infer", Content_Length="10000")
        sock.sendall(head + b'{"inputs": ')

    # While they hold their slots, the normal client is served.
    with httpx.Client(headers=server.headers, timeout=10) as client:
        for _ in range(5):
            assert client.get(f"{server.url}/v2/health/ready").status_code == 200
            reply = client.post(f"{server.url}/v2/models/tiny/infer", json=infer_body)
            assert reply.status_code == 200, reply.text
    assert time.monotonic() - started < HEAD_TIMEOUT_S, "too slow to test 'while they wait'"

    # Each address got PER_CLIENT slots; every connection beyond got 503 at once.
    for group in (slow_heads, slow_bodies):
        refused = [s for s in group if _ready(s)]
        assert len(refused) == ATTACKERS - PER_CLIENT
        for sock in refused:
            status, body = _answer(sock)
            assert status == 503 and "already has 50 open connections" in body["error"]
    held = {
        "head": [s for s in slow_heads if not _ready(s)],
        "body": [s for s in slow_bodies if not _ready(s)],
    }
    assert [len(v) for v in held.values()] == [PER_CLIENT, PER_CLIENT]

    # The deadlines cut off those that held a slot: 408, and the connection closes.
    for part, socks in held.items():
        for sock in socks:
            status, body = _answer(sock, timeout=HEAD_TIMEOUT_S + 10)
            assert status == 408 and f"request {part} did not arrive" in body["error"]
    for sock in slow_heads + slow_bodies:
        sock.close()
    assert _metric(server, r'deepfleet_rejected_total\{reason="header_timeout"\}') == PER_CLIENT
    assert _metric(server, r'deepfleet_rejected_total\{reason="body_timeout"\}') == PER_CLIENT
    refused_total = _metric(server, r'deepfleet_rejected_total\{reason="client_connection_limit"\}')
    assert refused_total == 2 * (ATTACKERS - PER_CLIENT)
    # The slow bodies, counted as 408s of the infer route once the app has seen them go.
    assert _wait_metric(server, r'deepfleet_requests_total\{code="408",.*\}', PER_CLIENT)
    assert _metric(server, r'deepfleet_requests_total\{code="500",.*\}') == 0

    # The slots are free again: the same address gets as many connections served.
    again = [_connect(server, "127.0.0.2") for _ in range(PER_CLIENT)]
    for sock in again:
        sock.sendall(b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert [_answer(sock) for sock in again] == [(200, {"live": True})] * PER_CLIENT


def test_connection_limit_gets_503_json(server):
    idle = [_connect(server, f"127.0.0.{20 + k // PER_CLIENT}") for k in range(MAX_CONNECTIONS)]
    time.sleep(0.3)  # all accepted by the server's loop
    extra = _connect(server, "127.0.0.30")
    status, body = _answer(extra)
    assert status == 503 and f"limit of {MAX_CONNECTIONS} connections" in body["error"]
    for sock in idle:
        sock.close()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:  # the closed ones give their slots back
        if httpx.get(f"{server.url}/v2/health/live").status_code == 200:
            break
        time.sleep(0.1)
    assert httpx.get(f"{server.url}/v2/health/live").status_code == 200
