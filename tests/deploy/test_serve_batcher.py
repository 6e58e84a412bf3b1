"""Which requests share a model call, for a given arrival pattern: the batcher on a clock the
test moves by hand, so every count and batch size is exact and nothing sleeps."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Coroutine
from typing import Any

import numpy as np
import pytest

from deepfleet.deploy.serve import DynamicBatcher
from deepfleet.deploy.serve._clock import LoopClock
from deepfleet.deploy.serve._errors import RequestError
from deepfleet.deploy.serve._metrics import Metrics

DELAY = 0.002  # max_delay_s of every batcher below


class FakeClock:
    """Time moves only on advance(); each wait the batcher starts is recorded."""

    def __init__(self) -> None:
        self.t = 0.0
        self.waits: list[float] = []  # the deadline of each wait, in order
        self._tick = asyncio.Event()
        self._entered = asyncio.Event()

    def now(self) -> float:
        return self.t

    async def wait(self, event: asyncio.Event, deadline: float) -> bool:
        self.waits.append(deadline)
        self._entered.set()
        while not event.is_set() and self.t < deadline:
            waiters = [
                asyncio.ensure_future(event.wait()),
                asyncio.ensure_future(self._tick.wait()),
            ]
            try:
                await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for waiter in waiters:
                    waiter.cancel()
        return event.is_set()

    def advance(self, seconds: float) -> None:
        self.t += seconds
        self._tick.set()
        self._tick = asyncio.Event()

    async def until_waiting(self, count: int) -> None:
        """Return once the batcher has started its `count`-th wait."""
        while len(self.waits) < count:
            self._entered.clear()
            await self._entered.wait()


class Recorder:
    """A model that returns 10 * x and records the rows of every call."""

    name = "recorder"
    device = "cpu"

    def __init__(self) -> None:
        self.calls: list[int] = []

    def __call__(self, x: np.ndarray) -> np.ndarray:
        self.calls.append(len(x))
        return x * 10


def rows(n: int, first: float = 0.0) -> np.ndarray:
    return np.arange(first, first + n, dtype=np.float32).reshape(n, 1)


def make(
    model: Recorder, clock: FakeClock, *, max_batch_size: int = 64, **kw: Any
) -> DynamicBatcher:
    kw = {"max_queue": 16, "batching": True, **kw}
    return DynamicBatcher(
        [model], Metrics(), max_batch_size=max_batch_size, max_delay_s=DELAY, clock=clock, **kw
    )


def run(scenario: Coroutine[Any, Any, None]) -> None:
    # A bound in real time only so a broken batcher fails instead of hanging; no step waits.
    asyncio.run(asyncio.wait_for(scenario, 10))


def test_a_lone_request_is_never_held_back():
    model = Recorder()

    async def scenario():
        clock = FakeClock()
        batcher = make(model, clock)
        batcher.start()
        try:
            np.testing.assert_array_equal(await batcher.submit(rows(2)), rows(2) * 10)
        finally:
            await batcher.stop()
        assert clock.waits == []  # nobody was being received: no wait at all

    run(scenario())
    assert model.calls == [2]


def test_requests_being_received_join_the_batch_until_the_delay_ends():
    model = Recorder()

    async def scenario():
        clock = FakeClock()
        batcher = make(model, clock)
        batcher.start()
        try:
            with batcher.arriving(), batcher.arriving():  # two bodies still being read
                a = asyncio.create_task(batcher.submit(rows(1, 0)))
                await clock.until_waiting(1)
                clock.advance(0.001)
                b = asyncio.create_task(batcher.submit(rows(1, 1)))
                await clock.until_waiting(2)
                clock.advance(0.0005)
                c = asyncio.create_task(batcher.submit(rows(1, 2)))
                await clock.until_waiting(3)
                assert model.calls == []  # all three still held for the batch
                clock.advance(0.001)  # past the deadline of the first: the batch goes
                results = await asyncio.gather(a, b, c)
        finally:
            await batcher.stop()
        for i, got in enumerate(results):
            np.testing.assert_array_equal(got, rows(1, i) * 10)
        assert clock.waits == [DELAY] * 3  # one deadline, set by the first request

    run(scenario())
    assert model.calls == [3]


def test_a_request_after_the_delay_goes_in_the_next_call():
    model = Recorder()

    async def scenario():
        clock = FakeClock()
        batcher = make(model, clock)
        batcher.start()
        try:
            with batcher.arriving():  # a body that takes longer than the delay to arrive
                a = asyncio.create_task(batcher.submit(rows(1)))
                await clock.until_waiting(1)
                clock.advance(DELAY)
                await a
                assert model.calls == [1]
                b = asyncio.create_task(batcher.submit(rows(1)))
                await clock.until_waiting(2)
                clock.advance(DELAY)
                await b
        finally:
            await batcher.stop()
        assert clock.waits == [DELAY, 2 * DELAY]

    run(scenario())
    assert model.calls == [1, 1]


def test_queued_requests_fill_calls_up_to_the_size_limit_in_order():
    model = Recorder()

    async def scenario():
        clock = FakeClock()
        batcher = make(model, clock, max_batch_size=8)
        sizes = [5, 2, 3, 1]
        tasks = [asyncio.create_task(batcher.submit(rows(n, 10 * i))) for i, n in enumerate(sizes)]
        await asyncio.sleep(0)  # each submit queues its request at its first step
        assert batcher.depth == 4
        batcher.start()
        try:
            results = await asyncio.gather(*tasks)
        finally:
            await batcher.stop()
        for i, (n, got) in enumerate(zip(sizes, results, strict=True)):
            np.testing.assert_array_equal(got, rows(n, 10 * i) * 10)
        assert clock.waits == []

    run(scenario())
    # 5 + 2 fit in 8; 3 more would not, so it leads the next call, with the 1 behind it.
    assert model.calls == [7, 4]


def test_without_batching_each_request_is_its_own_call():
    model = Recorder()

    async def scenario():
        clock = FakeClock()
        batcher = make(model, clock, batching=False)
        with batcher.arriving():
            tasks = [asyncio.create_task(batcher.submit(rows(2))) for _ in range(3)]
            await asyncio.sleep(0)
            batcher.start()
            try:
                await asyncio.gather(*tasks)
            finally:
                await batcher.stop()
        assert clock.waits == []

    run(scenario())
    assert model.calls == [2, 2, 2]


def test_a_full_queue_refuses_at_once_and_the_queued_are_served():
    model = Recorder()
    metrics = Metrics()

    async def scenario():
        batcher = DynamicBatcher(
            [model], metrics, max_batch_size=64, max_delay_s=DELAY, max_queue=2, clock=FakeClock()
        )
        queued = [asyncio.create_task(batcher.submit(rows(1))) for _ in range(2)]
        await asyncio.sleep(0)
        with pytest.raises(RequestError) as refused:
            await batcher.submit(rows(1))
        assert refused.value.status == 503 and refused.value.headers == {"Retry-After": "1"}
        assert "2 requests are already queued" in refused.value.message
        batcher.start()
        try:
            await asyncio.gather(*queued)
        finally:
            await batcher.stop()

    run(scenario())
    assert model.calls == [2]
    text = metrics.render().decode()
    assert 'deepfleet_rejected_total{reason="queue_full"} 1.0' in text.splitlines()
    assert "deepfleet_batch_size_count 1.0" in text.splitlines()
    assert "deepfleet_batch_requests_sum 2.0" in text.splitlines()
    assert "deepfleet_queue_depth 0.0" in text.splitlines()


def test_a_request_whose_caller_gave_up_is_not_run():
    model = Recorder()

    async def scenario():
        clock = FakeClock()
        batcher = make(model, clock)
        tasks = [asyncio.create_task(batcher.submit(rows(n))) for n in (1, 4, 2)]
        await asyncio.sleep(0)
        tasks[1].cancel()  # as the request timeout does
        batcher.start()
        try:
            await asyncio.gather(tasks[0], tasks[2])
        finally:
            await batcher.stop()
        with contextlib.suppress(asyncio.CancelledError):
            await tasks[1]
        assert tasks[1].cancelled()

    run(scenario())
    assert model.calls == [3]


def test_loop_clock_waits_for_the_event_or_the_deadline():
    async def scenario():
        clock = LoopClock()
        event = asyncio.Event()
        assert await clock.wait(event, clock.now() - 1) is False  # already past
        assert await clock.wait(event, clock.now() + 0.01) is False  # nothing came
        asyncio.get_running_loop().call_soon(event.set)
        assert await clock.wait(event, clock.now() + 5) is True
        assert await clock.wait(event, clock.now() - 1) is True  # set beats a past deadline

    run(scenario())
