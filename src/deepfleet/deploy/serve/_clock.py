"""The clock the batcher waits on: real time in the server, a hand-driven one in tests, so a
test can say exactly which requests share a model call without sleeping."""

from __future__ import annotations

import asyncio
from typing import Protocol


class Clock(Protocol):
    def now(self) -> float:
        """Seconds on a monotonic scale (only differences mean anything)."""
        ...

    async def wait(self, event: asyncio.Event, deadline: float) -> bool:
        """Wait until `event` is set or the clock reaches `deadline`, whichever is first;
        True when the event was set."""
        ...


class LoopClock:
    """The running event loop's monotonic clock, and asyncio's own timeouts."""

    def now(self) -> float:
        return asyncio.get_running_loop().time()

    async def wait(self, event: asyncio.Event, deadline: float) -> bool:
        remaining = deadline - self.now()
        if remaining <= 0:
            return event.is_set()
        try:
            await asyncio.wait_for(event.wait(), remaining)
        except TimeoutError:
            return False
        return True
