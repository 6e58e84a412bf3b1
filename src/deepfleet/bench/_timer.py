"""Timers that tell the truth on an asynchronous device.

CUDA kernels run after the Python call returns, so a wall clock around a step measures the
launch, not the work. Phases are therefore marked with CUDA events on the stream (no host sync
inside a step) and read once the step is done; whole runs are bracketed by synchronize().
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

import torch


def synchronize(device: torch.device) -> None:
    """Wait for all queued work on `device` (a no-op on the CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@contextmanager
def wall_timer(device: torch.device) -> Iterator[list[float]]:
    """Seconds of a block, synchronised on both ends; the value is in the yielded list."""
    out: list[float] = []
    synchronize(device)
    started = time.perf_counter()
    try:
        yield out
    finally:
        synchronize(device)
        out.append(time.perf_counter() - started)


class PhaseTimer:
    """Splits one step into named phases: mark("forward") ends the phase before it.

    begin() starts a step, mark(name) closes the phase called `name` (at now(), or at a time
    taken earlier with now(), e.g. from a hook inside backward), and durations() returns
    seconds per phase. On CUDA the marks are events on the current stream; on the CPU they are
    perf_counter() readings.
    """

    def __init__(self, device: torch.device) -> None:
        self.cuda = device.type == "cuda"
        self._marks: list[tuple[str, object]] = []

    def now(self) -> object:
        """A point in time on this timer's clock (mark(..., at=) takes it)."""
        if self.cuda:
            event = torch.cuda.Event(enable_timing=True)
            event.record()
            return event
        return time.perf_counter()

    def begin(self) -> None:
        self._marks = [("", self.now())]

    def mark(self, phase: str, at: object | None = None) -> None:
        """Close `phase` now, or at `at` (an earlier now() of this step)."""
        if not self._marks:
            raise RuntimeError("PhaseTimer.mark() before begin()")
        self._marks.append((phase, self.now() if at is None else at))

    def durations(self) -> dict[str, float]:
        """Seconds per phase of the last step (waits for the events on CUDA)."""
        if self.cuda and self._marks:
            self._marks[-1][1].synchronize()  # type: ignore[attr-defined]
        out: dict[str, float] = {}
        for (_, start), (phase, end) in zip(self._marks, self._marks[1:], strict=False):
            seconds = (
                start.elapsed_time(end) / 1e3
                if self.cuda  # type: ignore[attr-defined]
                else end - start
            )  # type: ignore[operator]
            out[phase] = out.get(phase, 0.0) + seconds
        return out
