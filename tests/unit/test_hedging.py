"""Hedge delay: fixed, the fallback before enough samples, then the percentile of recent latencies."""
from __future__ import annotations

import pytest

from frontend.hedging import MIN_SAMPLES, RECOMPUTE_EVERY, HedgePolicy, LatencyTracker


def test_fixed_delay_wins() -> None:
    assert HedgePolicy(LatencyTracker(), delay_ms=7).delay_s() == pytest.approx(0.007)


def test_adaptive_delay_uses_fallback_then_percentile() -> None:
    tracker = LatencyTracker()
    policy = HedgePolicy(tracker, delay_ms=None, percentile=95, fallback_ms=10)
    for _ in range(MIN_SAMPLES - 1):
        tracker.record(0.001)
    assert policy.delay_s() == pytest.approx(0.010)
    tracker = LatencyTracker()
    policy = HedgePolicy(tracker, delay_ms=None, percentile=95)
    for i in range(1, 101):
        tracker.record(i / 1000)  # 1..100 ms
    assert policy.delay_s() == pytest.approx(0.09505, rel=1e-3)


def test_percentile_is_refreshed_in_batches_and_window_is_bounded() -> None:
    tracker = LatencyTracker(size=100)
    for _ in range(RECOMPUTE_EVERY):
        tracker.record(0.001)
    assert tracker.percentile(50) == pytest.approx(0.001)
    for _ in range(RECOMPUTE_EVERY - 1):
        tracker.record(1.0)
    assert tracker.percentile(50) == pytest.approx(0.001)  # cached until RECOMPUTE_EVERY new samples
    tracker.record(1.0)
    assert len(tracker) == 100  # old samples fell out of the window
    assert tracker.percentile(50) == pytest.approx(1.0)  # 64 of the last 100 are 1 s
