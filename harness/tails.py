"""What a tail figure rests on: the number of queries behind each percentile, a bootstrap
confidence interval for it, which way the answers came (and the tail's), and the share of queries the fault plan exposed to a slowed or failed
data worker (to read the degraded fraction against). Pure numpy; harness/report.py and bench.py use it.
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

from frontend.query import PATHS
from harness.plan import Event

BOOTSTRAP_ROUNDS = 200
CI_LEVEL = 95.0


def queries_behind(n: int, p: float) -> int:
    """How many of ``n`` queries lie at or above the p-th percentile (p99.9 of 2,000 is 2)."""
    return int(round(n * (100.0 - p) / 100.0))


def bootstrap_ci(values: np.ndarray, percentiles: Sequence[float], rounds: int = BOOTSTRAP_ROUNDS,
                 seed: int = 0) -> dict[float, tuple[float, float]]:
    """A CI_LEVEL% interval for each percentile, by resampling the queries with replacement."""
    if len(values) == 0:
        return {p: (float("nan"), float("nan")) for p in percentiles}
    rng = np.random.default_rng(seed)
    draws = np.empty((rounds, len(percentiles)))
    for i in range(rounds):
        draws[i] = np.percentile(rng.choice(values, size=len(values), replace=True), percentiles)
    lo, hi = np.percentile(draws, [(100 - CI_LEVEL) / 2, 100 - (100 - CI_LEVEL) / 2], axis=0)
    return {p: (float(a), float(b)) for p, a, b in zip(percentiles, lo, hi)}


def faulted_intervals(events: Iterable[Event], workers: Iterable[int], end_s: float) -> dict[int, list[tuple[float, float]]]:
    """For each plan worker, the time intervals in which the plan had it faulted (a spec other than
    "none", or killed until restarted)."""
    wanted = set(workers)
    out: dict[int, list[tuple[float, float]]] = {w: [] for w in wanted}
    since: dict[int, float] = {}
    for e in sorted(events, key=lambda e: e.t_s):
        if e.worker not in wanted:
            continue
        bad = e.action == "kill" or (e.action == "spec" and e.spec != "none")
        if bad and e.worker not in since:
            since[e.worker] = e.t_s
        elif not bad and e.worker in since:
            out[e.worker].append((since.pop(e.worker), e.t_s))
    for w, t0 in since.items():
        out[w].append((t0, end_s))
    return out


def exposed_fraction(sched_s: np.ndarray, intervals: dict[int, list[tuple[float, float]]]) -> float:
    """Mean over queries of the share of data workers faulted at the query's arrival: the fraction
    of queries whose data worker was slowed or down, if queries were spread evenly over workers
    (least-loaded choice sends a slowed worker fewer, so this is an upper estimate)."""
    if len(sched_s) == 0 or not intervals:
        return 0.0
    faulted = np.zeros(len(sched_s))
    for spans in intervals.values():
        for a, b in spans:
            faulted += (sched_s >= a) & (sched_s < b)
    return float(faulted.mean() / len(intervals))


def path_counts(paths: np.ndarray) -> dict[str, int]:
    """paths (n,) indices into frontend.query.PATHS (-1: unknown) -> how many answers came each way,
    for the paths that occur."""
    paths = np.asarray(paths, np.int64)
    known = paths[paths >= 0]
    counts = np.bincount(known, minlength=len(PATHS)) if len(known) else np.zeros(len(PATHS), np.int64)
    out = {name: int(c) for name, c in zip(PATHS, counts) if c}
    if len(known) < len(paths):
        out["unknown"] = int(len(paths) - len(known))
    return out
