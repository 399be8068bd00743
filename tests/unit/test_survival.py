"""Latency percentiles over answered and abandoned (censored) requests, and the per-worker chain of
predicted finishes the decode policy judges a queued request by."""
from __future__ import annotations

import numpy as np
import pytest

from frontend.decode_policy import MIN_SAMPLES, DecodePolicy, MissingSlot, WorkerLatencies
from frontend.survival import SurvivalTracker, kaplan_meier_quantile


def test_without_censoring_it_is_the_empirical_percentile() -> None:
    x = np.random.default_rng(0).exponential(5.0, 4000)
    for p in (0.5, 0.95, 0.99):
        assert kaplan_meier_quantile(x, np.zeros(len(x), bool), p) == pytest.approx(np.percentile(x, 100 * p), rel=0.01)


def test_abandoned_samples_keep_the_percentile_where_dropping_them_sinks_it() -> None:
    """Requests abandoned at a random time after 5-30 ms: KM recovers the p95 (15 ms for exponential
    with mean 5 ms); the answered ones alone give a p95 far below it."""
    rng = np.random.default_rng(1)
    x = rng.exponential(5.0, 20000)
    waited = rng.uniform(5.0, 30.0, len(x))
    seen, censored = np.minimum(x, waited), x > waited
    assert kaplan_meier_quantile(seen, censored, 0.95) == pytest.approx(5.0 * np.log(20), rel=0.05)
    assert np.percentile(seen[~censored], 95) < 0.85 * 5.0 * np.log(20)


def test_too_much_censoring_gives_the_largest_sample_as_a_lower_bound() -> None:
    t = SurvivalTracker()
    for v in (1.0, 2.0):
        t.record(v)
    for _ in range(8):
        t.record(3.0, censored=True)  # 80% abandoned at 3: the p95 is not estimable, but it is >= 3
    assert t.percentile(95) == 3.0
    assert t.percentile(10) == 1.0


def test_a_request_queued_behind_another_is_due_after_the_one_before_it_should_finish() -> None:
    """10 ms services: a request sent 4 ms after another to the same worker should finish 16 ms after
    its sending, not after two full services; to an idle worker, one service."""
    lat = WorkerLatencies()
    for _ in range(MIN_SAMPLES):
        lat.record("a", 0.010, ahead=0)
    policy = DecodePolicy("adaptive", quantile=95, slack=1.0)
    assert policy.predict_finish(lat, "a", 100.000, ahead=0) == pytest.approx(100.010)
    finish = policy.predict_finish(lat, "a", 100.004, ahead=1)
    assert finish == pytest.approx(100.020)
    queued = MissingSlot(100.004, "a", False, 200.0, ahead=1, last_answer=100.004, finish_at=finish)
    assert policy.decode_at(100.005, [queued], lat) == pytest.approx(100.020)
    # the one before it was due long ago (the worker is running late): ours is judged as if alone
    assert policy.predict_finish(lat, "a", 100.5, ahead=1) == pytest.approx(100.510)


def test_censored_samples_raise_the_estimate_only_past_what_answered() -> None:
    lat = WorkerLatencies()
    for _ in range(MIN_SAMPLES * 5):
        lat.record("a", 0.010)
    lat.record("a", 0.050, censored=True)  # one abandoned request among 100: the p95 stays 10 ms
    assert lat.service("a", 95) == pytest.approx(0.010)
