"""What tail figures rest on: queries behind a percentile, bootstrap intervals, fault exposure."""
from __future__ import annotations

import numpy as np

from harness.plan import Event
from harness.report import summarize
from harness.tails import bootstrap_ci, exposed_fraction, faulted_intervals, queries_behind


def test_queries_behind_a_percentile() -> None:
    assert queries_behind(2000, 99.9) == 2 and queries_behind(50_000, 99.9) == 50 and queries_behind(100, 50) == 50


def test_bootstrap_interval_holds_the_percentile_and_narrows_with_more_queries() -> None:
    rng = np.random.default_rng(0)
    small, large = rng.exponential(10, 2_000), rng.exponential(10, 50_000)
    true_p999 = -10 * np.log(1e-3)  # 69.1 ms
    lo_s, hi_s = bootstrap_ci(small, [99.9])[99.9]
    lo_l, hi_l = bootstrap_ci(large, [99.9])[99.9]
    assert lo_l <= true_p999 <= hi_l
    assert hi_l - lo_l < hi_s - lo_s


def test_exposure_counts_faulted_data_workers_at_each_arrival() -> None:
    events = [Event(1.0, 0, "spec", "slow:factor=5"), Event(3.0, 0, "spec", "none"),
              Event(2.0, 1, "kill"), Event(2.5, 1, "restart"), Event(0.5, 7, "spec", "stall")]  # 7: not a data worker
    spans = faulted_intervals(events, range(2), end_s=10.0)
    assert spans == {0: [(1.0, 3.0)], 1: [(2.0, 2.5)]}
    sched = np.array([0.0, 1.5, 2.2, 4.0])  # 0 of 2, 1 of 2, 2 of 2, 0 of 2 workers faulted
    assert exposed_fraction(sched, spans) == (0 + 0.5 + 1 + 0) / 4


def test_summary_states_the_queries_behind_each_percentile_and_an_interval() -> None:
    n = 5000
    lat = np.random.default_rng(1).exponential(10, n)
    records = {"sched_s": np.linspace(0, 10, n), "label": np.zeros(n, int), "status": np.full(n, 200),
               "latency_ms": lat, "lag_ms": np.zeros(n), "degraded": np.zeros(n, bool), "pred": np.zeros(n, int)}
    s = summarize(records)
    assert s["tail_queries"]["p99.9"] == 5
    lo, hi = s["ci95"]["p99.9"]
    assert lo <= s["p99.9"] <= hi


def test_path_counts_names_the_paths_that_occur_and_counts_unknown() -> None:
    from frontend.query import PATHS
    from harness.tails import path_counts
    own, decoded = PATHS.index("own"), PATHS.index("decoded-overdue")
    assert path_counts(np.array([own, own, decoded, -1])) == {"own": 2, "decoded-overdue": 1, "unknown": 1}
    assert path_counts(np.array([], np.int8)) == {}
