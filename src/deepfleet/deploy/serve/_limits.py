"""The connection layer's bounds, derived once per worker process from the server's
settings, and the count of open connections per client address they are checked against."""

from __future__ import annotations

import functools
from collections import Counter
from dataclasses import dataclass

from deepfleet.deploy.serve._config import ServeConfig

# After refusing a connection the server keeps reading (and dropping) what the client still
# sends for this long before it closes: closing a socket with unread data makes the kernel
# reset the connection, and the reset can destroy the error answer before the client reads it.
LINGER_S = 1.0


@dataclass(frozen=True)
class ConnectionLimits:
    max_connections: int
    max_client_connections: int
    max_header_bytes: int
    max_headers: int
    header_timeout_s: float
    body_timeout_s: float

    @classmethod
    def of(cls, config: ServeConfig) -> ConnectionLimits:
        return cls(
            max_connections=config.max_connections,
            max_client_connections=min(config.max_client_connections, config.max_connections),
            max_header_bytes=config.max_header_bytes,
            max_headers=config.max_headers,
            header_timeout_s=config.header_timeout_s,
            body_timeout_s=config.body_timeout_s,
        )


@functools.cache
def worker_limits() -> ConnectionLimits:
    """This worker's limits: uvicorn builds the connection protocol by class, so the settings
    reach it the way they reach the app, through the environment (_run sets it)."""
    return ConnectionLimits.of(ServeConfig.from_env())


class ClientSlots:
    """Open connections per client address in this worker (the event loop is one thread)."""

    def __init__(self) -> None:
        self._open: Counter[str] = Counter()

    def take(self, address: str, limit: int) -> bool:
        if self._open[address] >= limit:
            return False
        self._open[address] += 1
        return True

    def give_back(self, address: str) -> None:
        self._open[address] -= 1
        if self._open[address] <= 0:
            del self._open[address]


# One per worker process, shared by every connection the worker's event loop serves.
CLIENT_SLOTS = ClientSlots()
