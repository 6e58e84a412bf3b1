"""One exception for every answer that is the client's fault (or a full server)."""

from __future__ import annotations


class RequestError(Exception):
    """Answered as JSON {"error": message} with `status` (4xx, or 503 when overloaded)."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}
