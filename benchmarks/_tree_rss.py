"""Run a command and sample the resident memory of its whole process tree (psutil)."""

from __future__ import annotations

import contextlib
import subprocess
import time

import psutil


def tree_rss(proc: psutil.Process) -> tuple[int, int]:
    """RSS and PSS of a process and all its descendants, summed. RSS counts a page shared
    by several processes in each (an upper bound); PSS shares it out among them."""
    rss = pss = 0
    for p in [proc, *proc.children(recursive=True)]:
        with contextlib.suppress(psutil.Error):  # ended between listing and reading
            info = p.memory_full_info()
            rss, pss = rss + info.rss, pss + info.pss
    return rss, pss


def run_measured(cmd: list[str], env: dict | None = None, every: float = 0.02) -> dict:
    """Wall time and peak tree RSS and PSS (MB) of `cmd`."""
    started = time.perf_counter()
    child = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    proc, peak, peak_pss = psutil.Process(child.pid), 0, 0
    while child.poll() is None:
        with contextlib.suppress(psutil.Error):
            rss, pss = tree_rss(proc)
            peak, peak_pss = max(peak, rss), max(peak_pss, pss)
        time.sleep(every)
    wall = time.perf_counter() - started
    err = child.stderr.read().decode() if child.stderr else ""
    if child.returncode != 0:
        raise RuntimeError(f"{cmd[:4]} failed ({child.returncode}): {err[-2000:]}")
    return {
        "wall_s": round(wall, 2),
        "peak_rss_mb": round(peak / 1e6, 1),
        "peak_pss_mb": round(peak_pss / 1e6, 1),
    }
