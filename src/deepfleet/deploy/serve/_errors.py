"""Errors as the Open Inference Protocol answers them: a JSON object {"error": "..."}.

RequestError is raised by the routes (and answered by the app's handlers); error_response
writes the same object as raw HTTP/1.1 bytes for the connection layer (_connection), which
answers before or instead of the app: a connection over its limit, an oversized or slow
request head, a body that does not arrive, a request line that is not HTTP.
"""

from __future__ import annotations

import http
import json
from collections.abc import Sequence


class RequestError(Exception):
    """Answered as JSON {"error": message} with `status` (4xx, or 503 when overloaded)."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}


def error_body(message: str) -> bytes:
    return json.dumps({"error": message}).encode()


def error_response(
    status: int,
    message: str,
    headers: dict[str, str] | None = None,
    default_headers: Sequence[tuple[bytes, bytes]] = (),
) -> bytes:
    """A whole HTTP/1.1 answer carrying {"error": message}; the connection closes after it."""
    body = error_body(message)
    lines = [f"HTTP/1.1 {status} {http.HTTPStatus(status).phrase}\r\n".encode()]
    lines += [name + b": " + value + b"\r\n" for name, value in default_headers]
    fields = {
        "content-type": "application/json",
        "content-length": str(len(body)),
        "connection": "close",
        **(headers or {}),
    }
    lines += [f"{name}: {value}\r\n".encode() for name, value in fields.items()]
    return b"".join([*lines, b"\r\n", body])
