"""Timers and summaries: checked against sleeps and against NumPy's percentiles."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch

from deepfleet.bench import PhaseTimer, latency_summary, percentile, summarize, wall_timer

CPU = torch.device("cpu")


def test_phase_timer_splits_a_step_into_its_phases():
    timer = PhaseTimer(CPU)
    timer.begin()
    time.sleep(0.02)
    timer.mark("data")
    time.sleep(0.06)
    timer.mark("forward")
    time.sleep(0.01)
    timer.mark("data")  # a phase seen twice adds up
    spans = timer.durations()
    assert list(spans) == ["data", "forward"]
    assert 0.03 <= spans["data"] < 0.03 + 0.05
    assert 0.06 <= spans["forward"] < 0.06 + 0.05


def test_phase_timer_needs_begin():
    with pytest.raises(RuntimeError):
        PhaseTimer(CPU).mark("data")


def test_wall_timer_measures_the_block():
    with wall_timer(CPU) as elapsed:
        time.sleep(0.03)
    assert 0.03 <= elapsed[0] < 0.03 + 0.05


def test_percentiles_match_numpy():
    values = list(np.random.default_rng(0).exponential(size=101))
    for q in (0, 10, 50, 90, 99, 100):
        assert percentile(values, q) == pytest.approx(np.percentile(values, q))
    lat = latency_summary([v / 1e3 for v in values])  # seconds in, milliseconds out
    assert lat["p50_ms"] == pytest.approx(np.median(values))
    assert lat["p99_ms"] == pytest.approx(np.percentile(values, 99))
    assert lat["n"] == 101


def test_summary_has_median_and_spread():
    s = summarize([4.0, 1.0, 2.0, 3.0, 10.0])
    assert s == {"median": 3.0, "min": 1.0, "max": 10.0, "spread": 3.0, "n": 5}
    with pytest.raises(ValueError):
        summarize([])
