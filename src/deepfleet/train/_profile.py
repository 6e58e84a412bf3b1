"""torch.profiler over training steps: Chrome traces and a table of the top operators."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch.profiler import ProfilerActivity, profile, schedule

from deepfleet.config import ProfileSection

TOP_OPS = "top_ops.md"
ROW_LIMIT = 15


def top_ops_table(prof: profile) -> str:
    """The operators with the most self CPU time, as the profiler prints them."""
    return prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=ROW_LIMIT)


class StepProfiler:
    """A torch.profiler window over optimizer steps. start(), step() after each optimizer
    step, stop(). Each recorded cycle writes trace-step<N>.json (open it in chrome://tracing
    or ui.perfetto.dev) and adds its table to top_ops.md; `on_trace` gets each trace's paths."""

    def __init__(
        self,
        config: ProfileSection,
        device: torch.device,
        folder: Path,
        on_trace: Callable[[dict[str, Any]], None] | None = None,
        title: str = "Top operators by self CPU time",
    ) -> None:
        self.folder = Path(folder)
        self.on_trace = on_trace or (lambda record: None)
        self.title = title
        self.traces: list[Path] = []
        activities = [ProfilerActivity.CPU]
        if device.type == "cuda":
            activities.append(ProfilerActivity.CUDA)
        self._prof = profile(
            activities=activities,
            schedule=schedule(
                wait=config.wait, warmup=config.warmup, active=config.active, repeat=config.repeat
            ),
            record_shapes=False,
            on_trace_ready=self._write,
        )
        # After `repeat` cycles the schedule records nothing more: stop stepping it then.
        cycle = config.wait + config.warmup + config.active
        self._left = cycle * config.repeat if config.repeat else None
        self._running = False

    @property
    def top_ops(self) -> Path:
        return self.folder / TOP_OPS

    def _write(self, prof: profile) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        trace = self.folder / f"trace-step{prof.step_num}.json"
        prof.export_chrome_trace(str(trace))
        self.traces.append(trace)
        table = top_ops_table(prof)
        heading = f"# {self.title}\n" if not self.top_ops.exists() else ""
        with self.top_ops.open("a", encoding="utf-8") as handle:
            handle.write(f"{heading}\n## Up to step {prof.step_num} ({trace.name})\n\n")
            handle.write(f"```\n{table.rstrip()}\n```\n")
        self.on_trace({"kind": "profile", "trace": trace, "top_ops": self.top_ops})

    def start(self) -> None:
        self._prof.start()
        self._running = True

    def step(self) -> None:
        if not self._running:
            return
        self._prof.step()
        if self._left is not None:
            self._left -= 1
            if self._left <= 0:
                self.stop()

    def stop(self) -> None:
        """Ends the window; a cycle cut short by the end of training is still written."""
        if self._running:
            self._running = False
            self._prof.stop()

    def __enter__(self) -> StepProfiler:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
