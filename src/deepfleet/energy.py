"""Energy meters, for the bench and for training's per-epoch figures. Real ones read Zeus
(NVML's total-energy counter on GPUs, RAPL on CPUs).

A meter that cannot read anything says so (available False, with the reason); the report then
states that energy was not measured. Nothing here estimates energy from time or TDP.
"""

from __future__ import annotations

from typing import Protocol

import torch


class EnergyMeter(Protocol):
    """begin() and end() bracket a window; end() returns the joules used in it."""

    source: str
    available: bool
    note: str
    fake: bool

    def begin(self) -> None: ...
    def end(self) -> float: ...


class NoMeter:
    """Used when no meter is readable: it measures nothing and says why."""

    available = False
    fake = False

    def __init__(self, note: str) -> None:
        self.source = "none"
        self.note = note

    def begin(self) -> None:
        pass

    def end(self) -> float:
        raise RuntimeError("no energy meter is readable")


class ZeusMeter:
    """One Zeus monitor window per begin()/end(); GPU or CPU package energy by device type."""

    available = True
    fake = False

    def __init__(self, monitor, source: str, note: str) -> None:
        self._monitor = monitor
        self.source = source
        self.note = note

    def begin(self) -> None:
        self._monitor.begin_window("deepfleet-bench", restart=True)

    def end(self) -> float:
        m = self._monitor.end_window("deepfleet-bench")
        if self._monitor.gpu_indices:
            return float(sum(m.gpu_energy.values()))
        return float(sum((m.cpu_energy or {}).values()) + sum((m.dram_energy or {}).values()))


def _gpu_meter(index: int) -> EnergyMeter:
    from zeus.device import get_gpus
    from zeus.device.gpu.common import ZeusGPUInitError
    from zeus.monitor import ZeusMonitor

    try:
        gpus = get_gpus()
    except ZeusGPUInitError as err:
        return NoMeter(f"not measured: NVML is not readable ({err})")
    if index >= len(gpus) or not gpus.supports_get_total_energy_consumption(index):
        # Older GPUs only have a power reading; integrating samples is not what we report.
        return NoMeter(f"not measured: GPU {index} has no NVML total-energy counter")
    monitor = ZeusMonitor(gpu_indices=[index], cpu_indices=[])
    return ZeusMeter(
        monitor,
        f"zeus: NVML total-energy counter, GPU {index}",
        "the whole GPU board; other work on the same GPU is included",
    )


def _cpu_meter() -> EnergyMeter:
    from zeus.device import get_cpus
    from zeus.device.cpu.common import ZeusCPUInitError, ZeusCPUNoPermissionError
    from zeus.monitor import ZeusMonitor

    try:
        cpus = get_cpus()
    except ZeusCPUNoPermissionError:
        return NoMeter("not measured: RAPL exists but is not readable (needs root)")
    except ZeusCPUInitError:
        return NoMeter("not measured: no RAPL energy counter is readable on this machine")
    if len(cpus) == 0:
        return NoMeter("not measured: no RAPL energy counter is readable on this machine")
    monitor = ZeusMonitor(gpu_indices=[], cpu_indices=list(range(len(cpus))))
    return ZeusMeter(
        monitor,
        f"zeus: RAPL package (+DRAM where present), {len(cpus)} package(s)",
        "whole CPU packages: every process on the machine is included",
    )


def meter_for(device: torch.device) -> EnergyMeter:
    """The best real meter for a device, or a NoMeter that says why there is none."""
    try:
        if device.type == "cuda":
            return _gpu_meter(device.index if device.index is not None else 0)
        if device.type == "cpu":
            return _cpu_meter()
    except ImportError as err:
        return NoMeter(f"not measured: zeus is not importable ({err})")
    return NoMeter(f"not measured: no meter for device type {device.type}")


def meter_info(meter: EnergyMeter) -> dict:
    return {
        "source": meter.source,
        "available": meter.available,
        "note": meter.note,
        "fake": meter.fake,
    }
