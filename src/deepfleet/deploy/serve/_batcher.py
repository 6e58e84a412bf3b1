"""Dynamic micro-batching: requests queue up; each model replica takes as many as fit.

A replica takes the oldest request, then every queued request that still fits in
`max_batch_size` rows. While the batch is not full it waits up to `max_delay` for more, but
only while other requests are already being received (their bodies read or parsed): a lone
request is never held back for company that is not coming. The queue is bounded; a full
queue is refused at once (503), and a request whose caller gave up is dropped unrun.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from deepfleet.deploy._backends import Backend
from deepfleet.deploy.serve._clock import Clock, LoopClock
from deepfleet.deploy.serve._errors import RequestError
from deepfleet.deploy.serve._metrics import Metrics

log = logging.getLogger("deepfleet.serve")


@dataclass
class _Item:
    x: np.ndarray
    future: asyncio.Future


class DynamicBatcher:
    def __init__(
        self,
        backends: Sequence[Backend],
        metrics: Metrics,
        *,
        max_batch_size: int,
        max_delay_s: float,
        max_queue: int,
        batching: bool = True,
        clock: Clock | None = None,
    ):
        self._backends = list(backends)
        # Only the wait for more requests reads the clock; model-call timings in the metrics
        # are always real time.
        self._clock: Clock = clock or LoopClock()
        self._metrics = metrics
        self.max_batch_size = max_batch_size
        self._max_delay = max_delay_s if batching else 0.0
        self._batching = batching
        self._queue: asyncio.Queue[_Item] = asyncio.Queue(maxsize=max_queue)
        self._arriving = 0
        self._arrived = asyncio.Event()
        self._tasks: list[asyncio.Task] = []
        self._executors: list[ThreadPoolExecutor] = []

    def start(self) -> None:
        for i, backend in enumerate(self._backends):
            # One thread per replica: the model call releases the GIL, the event loop stays free.
            executor = ThreadPoolExecutor(1, thread_name_prefix=f"replica-{i}")
            self._executors.append(executor)
            self._tasks.append(asyncio.create_task(self._run(backend, executor)))

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for executor in self._executors:
            executor.shutdown(wait=True)

    @property
    def depth(self) -> int:
        return self._queue.qsize()

    @contextlib.contextmanager
    def arriving(self) -> Iterator[None]:
        """Mark a request as being received, so a forming batch may wait for it."""
        self._arriving += 1
        try:
            yield
        finally:
            self._arriving -= 1

    async def submit(self, x: np.ndarray) -> np.ndarray:
        """Logits for x; raises RequestError(503) at once when the queue is full."""
        future = asyncio.get_running_loop().create_future()
        try:
            self._queue.put_nowait(_Item(x, future))
        except asyncio.QueueFull:
            self._metrics.rejected.labels("queue_full").inc()
            raise RequestError(
                503,
                f"server busy: {self._queue.maxsize} requests are already queued",
                {"Retry-After": "1"},
            ) from None
        self._metrics.queue_depth.inc()
        self._arrived.set()
        return await future

    def _take(self) -> _Item | None:
        try:
            item = self._queue.get_nowait()
        except asyncio.QueueEmpty:
            return None
        self._metrics.queue_depth.dec()
        return item

    async def _next_batch(self, carry: list[_Item]) -> list[_Item]:
        if carry:
            first = carry.pop()
        else:
            first = await self._queue.get()
            self._metrics.queue_depth.dec()
        batch, rows = [first], len(first.x)
        if not self._batching:
            return batch
        deadline = self._clock.now() + self._max_delay
        while rows < self.max_batch_size:
            item = self._take()
            if item is None:
                if deadline - self._clock.now() <= 0 or self._arriving == 0:
                    break
                # Wait on an event, not on queue.get(): cancelling a get() on timeout can lose
                # an item that arrived at the same instant.
                self._arrived.clear()
                if not await self._clock.wait(self._arrived, deadline):
                    break
                continue
            if item.future.done():  # the caller timed out or went away
                continue
            if rows + len(item.x) > self.max_batch_size:
                carry.append(item)  # first in the next batch, so order is kept
                break
            batch.append(item)
            rows += len(item.x)
        return batch

    async def _run(self, backend: Backend, executor: ThreadPoolExecutor) -> None:
        loop = asyncio.get_running_loop()
        carry: list[_Item] = []
        while True:
            batch = [i for i in await self._next_batch(carry) if not i.future.done()]
            if not batch:
                continue
            x = batch[0].x if len(batch) == 1 else np.concatenate([i.x for i in batch])
            started = time.perf_counter()
            try:
                logits = await loop.run_in_executor(executor, backend, x)
            except Exception as err:  # the model failed: answer 500, keep the replica alive
                log.exception("model call failed")
                for item in batch:
                    if not item.future.done():
                        item.future.set_exception(err)
                continue
            self._metrics.inference.observe(time.perf_counter() - started)
            self._metrics.batch_size.observe(len(x))
            self._metrics.batch_requests.observe(len(batch))
            offset = 0
            for item in batch:
                n = len(item.x)
                if not item.future.done():
                    item.future.set_result(logits[offset : offset + n])
                offset += n
