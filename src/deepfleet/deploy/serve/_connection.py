"""The HTTP/1.1 connection: uvicorn's httptools protocol with the bounds it lacks.

uvicorn's own protocol (httptools, its fastest) keeps no limit on a request head (httptools
buffers a header value until its line ends, so an endless header grows memory without
bound), no timeout on reading a head or a body (a client that sends slowly holds its slot
forever), and answers its own errors (503 over the connection limit, 400 for a request that
is not HTTP) in plain text. This subclass adds, per connection:

  * a slot: at most `max_connections` open connections per worker, and at most
    `max_client_connections` from one address, so one client cannot take every slot;
    a connection over either gets 503 at once, before it can send anything;
  * a head bound: bytes (request line and fields) and field count, checked as bytes arrive,
    before httptools buffers them: 431;
  * deadlines: a request's head must arrive within `header_timeout_s` of its first byte
    (of the connection, for the first request), its body within `body_timeout_s` of the
    head's end: 408, and the app sees the client as gone;
  * every one of these answers is an OIP JSON error object, as the app's own are.

Why a subclass of uvicorn's protocol and not h11 (`h11_max_incomplete_event_size`) or a
proxy in front: h11 bounds the head but has no read timeouts and answers in plain text too,
and it parses in Python, several times slower than httptools under load; a wrapper protocol
would parse the stream twice. The subclass reuses uvicorn's request cycle unchanged and only
adds bookkeeping to the callbacks httptools already makes.

uvicorn is given this class by import path (`http=`), so each worker process builds it. It
leans on the parent's callbacks and request cycle, which are uvicorn's internals (tested with
uvicorn 0.55): tests/deploy/test_serve_hostile.py is the check to run after upgrading it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import httptools
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.protocols.utils import get_remote_addr

from deepfleet.deploy.serve._errors import error_response
from deepfleet.deploy.serve._limits import CLIENT_SLOTS, LINGER_S, worker_limits

log = logging.getLogger("deepfleet.serve")

# Set in a request's ASGI scope when the connection layer cut the request off (the app's
# disconnect handler then counts it under this status instead of 499).
CUT_OFF = "deepfleet.cut_off"
# The key under which the app's lifespan state carries its Metrics (refusals are counted).
METRICS_STATE = "deepfleet_metrics"


# Refusals come by the thousand under attack: one warning per reason per this many seconds.
WARN_EVERY_S = 10.0


class _Warnings:
    """Rate-limited warnings, with how many of the same kind were not logged."""

    def __init__(self) -> None:
        self._last: dict[str, float] = {}
        self._quiet: dict[str, int] = {}

    def warn(self, reason: str, text: str) -> None:
        now = time.monotonic()
        if now - self._last.get(reason, -WARN_EVERY_S) < WARN_EVERY_S:
            self._quiet[reason] = self._quiet.get(reason, 0) + 1
            return
        self._last[reason] = now
        more = self._quiet.pop(reason, 0)
        log.warning("%s%s", text, f" ({more} more like it not logged)" if more else "")


WARNINGS = _Warnings()


class _Refused(Exception):
    """Raised inside a parser callback to stop parsing; the answer is in `_refusal`."""


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.limits = worker_limits()
        self._peer = "a client"  # the client's address, for the log
        self._slot: str | None = None  # the address whose slot this connection holds
        self._closing = False  # answered an error: drop what still arrives, then close
        self._in_head = True  # the next bytes belong to a request head
        self._head_bytes = 0
        self._header_count = 0
        self._refusal: tuple[int, str, str] | None = None  # set by a parser callback
        self._deadline: asyncio.TimerHandle | None = None

    # Connection life

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        remote = get_remote_addr(transport)
        address = self._peer = remote[0] if remote else "local"
        limits = self.limits
        if len(self.connections) >= limits.max_connections:
            self.transport = transport
            self._answer(
                503,
                f"the server is at its limit of {limits.max_connections} connections; retry later",
                "connection_limit",
                {"retry-after": "1"},
            )
            return
        if not CLIENT_SLOTS.take(address, limits.max_client_connections):
            self.transport = transport
            self._answer(
                503,
                f"this client address already has {limits.max_client_connections}"
                " open connections (the most one address may hold); retry later",
                "client_connection_limit",
                {"retry-after": "1"},
            )
            return
        self._slot = address
        super().connection_made(transport)
        self._arm(limits.header_timeout_s, self._head_timed_out)

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        if self._slot is not None:
            CLIENT_SLOTS.give_back(self._slot)
            self._slot = None
        if self.flow is not None:  # refused ones never started uvicorn's bookkeeping
            super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._closing:
            return  # lingering after an error answer: read and drop
        self._unset_keepalive_if_required()
        if self._in_head:
            if self._deadline is None:  # the first byte of the next request on this connection
                self._arm(self.limits.header_timeout_s, self._head_timed_out)
            room = self.limits.max_header_bytes - self._head_bytes
            if len(data) > room:
                # Feed only what the limit allows: the head may end inside it. If it does
                # not, the rest is never buffered by httptools.
                self._feed(data[:room])
                if self._closing or self.transport.is_closing():
                    return
                if self._in_head:
                    limit = self.limits.max_header_bytes
                    self._answer(431, f"the request head exceeds {limit} bytes", "head_too_large")
                    return
                data = data[room:]
            else:
                self._head_bytes += len(data)
        self._feed(data)

    def _feed(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._unsupported_upgrade_warning()  # no websocket routes are served
        except httptools.HttpParserError as err:
            if self._refusal is not None:
                self._answer(*self._refusal)
            else:
                self._answer(400, f"invalid HTTP request: {err}", "bad_request")

    def send_400_response(self, msg: str) -> None:  # uvicorn's own 400, now as JSON
        self._answer(400, f"invalid HTTP request: {msg}", "bad_request")

    # Parser callbacks (httptools calls them from feed_data)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._header_count = 0

    def on_header(self, name: bytes, value: bytes) -> None:
        self._header_count += 1
        if self._header_count > self.limits.max_headers:
            limit = self.limits.max_headers
            self._refusal = (
                431,
                f"the request has more than {limit} header fields",
                "too_many_headers",
            )
            raise _Refused
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._in_head = False
        self._disarm()
        super().on_headers_complete()
        self._arm(self.limits.body_timeout_s, self._body_timed_out)

    def on_message_complete(self) -> None:
        self._disarm()
        self._in_head, self._head_bytes = True, 0
        super().on_message_complete()

    # Deadlines and answers

    def _arm(self, seconds: float, then) -> None:
        self._disarm()
        self._deadline = self.loop.call_later(seconds, then)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _head_timed_out(self) -> None:
        self._deadline = None
        seconds = self.limits.header_timeout_s
        self._answer(408, f"the request head did not arrive within {seconds:g}s", "header_timeout")

    def _body_timed_out(self) -> None:
        self._deadline = None
        cycle = self.cycle
        if cycle is None or cycle.response_started:
            # Already answered (say, 401 before the body was read): only stop waiting.
            self.transport.close()
            return
        # The app is reading the body: it sees the client gone, and the answer is ours.
        cycle.scope[CUT_OFF] = 408  # type: ignore[typeddict-unknown-key]
        cycle.disconnected = True
        cycle.message_event.set()
        seconds = self.limits.body_timeout_s
        self._answer(408, f"the request body did not arrive within {seconds:g}s", "body_timeout")

    def _answer(
        self, status: int, message: str, reason: str, headers: dict[str, str] | None = None
    ) -> None:
        """Write the JSON error, then close; meanwhile drop what the client still sends."""
        if self._closing:
            return
        self._closing = True
        self._disarm()
        metrics = self.app_state.get(METRICS_STATE)
        if metrics is not None:
            metrics.rejected.labels(reason).inc()
        WARNINGS.warn(reason, f"{self._peer}: {status} {message}")
        transport = self.transport
        transport.write(error_response(status, message, headers, self.server_state.default_headers))
        try:
            transport.write_eof()  # the answer, then FIN: the client reads it whole
        except (NotImplementedError, OSError, RuntimeError):
            transport.close()
            return
        self.loop.call_later(LINGER_S, transport.close)
