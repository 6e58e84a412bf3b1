"""System figures of one epoch: peak memory, CPU and GPU utilisation, and energy."""

from __future__ import annotations

import contextlib
import os
import resource
import sys
import time
from functools import cache
from pathlib import Path
from typing import Any

import torch

from deepfleet.energy import EnergyMeter, NoMeter, meter_for

_RAPL = Path("/sys/class/powercap/intel-rapl:0/energy_uj")


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0)) or 1
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _cpu_seconds() -> float:
    t = os.times()
    return t.user + t.system


def peak_rss_mb() -> float:
    """The process's peak resident set size over its whole life so far (ru_maxrss)."""
    scale = 1 if sys.platform == "darwin" else 1024  # bytes on macOS, KiB on Linux
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale / 2**20


@cache
def _meter(device_key: str) -> EnergyMeter:
    """One meter per device and process. On a CPU, Zeus is only loaded when a RAPL counter is
    readable at all: loading it costs seconds, too much for every training run."""
    device = torch.device(device_key)
    if device.type == "cpu" and not os.access(_RAPL, os.R_OK):
        return NoMeter("not measured: no RAPL energy counter is readable on this machine")
    try:
        return meter_for(device)
    except Exception as err:  # a meter that fails to start measures nothing
        return NoMeter(f"not measured: {err}")


class SystemMonitor:
    """start() and stop() bracket an epoch; stop() returns its figures for the epoch record."""

    def __init__(self, device: torch.device, energy: bool = True) -> None:
        self.device = device
        self.cuda = device.type == "cuda"
        self.cores = _cores()
        self.energy = energy
        self.meter: EnergyMeter | None = None  # found at the first start(), not when built
        self._wall = self._cpu = 0.0
        self._metering = False

    def start(self) -> None:
        if self.cuda:
            torch.cuda.reset_peak_memory_stats(self.device)
        if self.meter is None:
            self.meter = _meter(str(self.device)) if self.energy else NoMeter("not measured")
        self._metering = False
        if self.meter.available:
            try:
                self.meter.begin()
                self._metering = True
            except Exception:
                self._metering = False
        self._wall, self._cpu = time.perf_counter(), _cpu_seconds()

    def stop(self) -> dict[str, Any]:
        wall = time.perf_counter() - self._wall
        cpu = _cpu_seconds() - self._cpu
        figures: dict[str, Any] = {
            "peak_rss_mb": peak_rss_mb(),
            # process CPU time over wall time, as a fraction of the cores it may run on (0-1)
            "cpu_util": cpu / wall / self.cores if wall > 0 else 0.0,
            "cpu_cores": self.cores,
        }
        if self.cuda:
            figures["peak_device_memory_mb"] = torch.cuda.max_memory_allocated(self.device) / 2**20
            # NVML's utilisation over its last sample period, read at the epoch's end; without
            # NVML the key is absent.
            with contextlib.suppress(Exception):
                figures["gpu_util_percent"] = float(torch.cuda.utilization(self.device))
        if self._metering:
            try:
                figures["energy_j"] = self.meter.end()
            except Exception as err:
                figures["energy"] = f"not measured: {err}"
            self._metering = False
        else:
            meter = self.meter
            figures["energy"] = meter.note if meter and not meter.available else "not measured"
        return figures
