"""Requests admitted to one served model version and not answered yet.

A version is retired (unloaded, or replaced by a new copy) only once this count reaches
zero: requests already admitted finish on the version that admitted them. Everything runs
on the server's one event loop (HTTP and gRPC alike), so counting needs no lock.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator


class InFlight:
    def __init__(self) -> None:
        self.count = 0
        self._idle = asyncio.Event()
        self._idle.set()

    @contextlib.contextmanager
    def admitted(self) -> Iterator[None]:
        self.count += 1
        self._idle.clear()
        try:
            yield
        finally:
            self.count -= 1
            if self.count == 0:
                self._idle.set()

    async def drained(self, timeout_s: float) -> bool:
        """Wait until no request is in flight; False when `timeout_s` passed first."""
        try:
            await asyncio.wait_for(self._idle.wait(), timeout_s)
        except TimeoutError:
            return False
        return True
