"""Hedged requests (Dean and Barroso, "The Tail at Scale"): the latency record of recent data
requests, the delay after which a still-outstanding query is re-sent to another replica, and the
hedged fetch of one slot of a group (hedged mode).

The delay is fixed, or the given percentile of recent latencies (p95 by default: hedging only
the slowest ~5% caps the extra load near 5%). Before enough samples exist the fixed fallback holds.
"""
from __future__ import annotations

import asyncio
from collections import deque
from typing import TYPE_CHECKING

import numpy as np

from frontend import clock

if TYPE_CHECKING:
    from frontend.dispatcher import GroupRun

MIN_SAMPLES = 50
HEDGE_BUDGET_FRACTION = 0.10  # hedges per query at most (a token bucket, frontend.fallback.CopyBudget)
RECOMPUTE_EVERY = 64


class LatencyTracker:
    """The last ``size`` request latencies (seconds), with a cached percentile."""

    def __init__(self, size: int = 2048) -> None:
        self._samples: deque[float] = deque(maxlen=size)
        self._since = 0
        self._cache: dict[float, float] = {}

    def __len__(self) -> int:
        return len(self._samples)

    def record(self, seconds: float) -> None:
        self._samples.append(seconds)
        self._since += 1
        if self._since >= RECOMPUTE_EVERY:  # percentiles are recomputed in batches, not per request
            self._since = 0
            self._cache.clear()

    def percentile(self, q: float) -> float:
        if q not in self._cache:
            self._cache[q] = float(np.percentile(np.fromiter(self._samples, float), q)) if self._samples else 0.0
        return self._cache[q]


class HedgePolicy:
    def __init__(self, tracker: LatencyTracker, delay_ms: float | None, percentile: float = 95.0,
                 fallback_ms: float = 10.0) -> None:
        self.tracker = tracker
        self.delay_ms = delay_ms          # None: adaptive (percentile of recent latencies)
        self.percentile = percentile
        self.fallback_ms = fallback_ms

    def delay_s(self) -> float:
        if self.delay_ms is not None:
            return self.delay_ms / 1000
        if len(self.tracker) < MIN_SAMPLES:
            return self.fallback_ms / 1000
        return self.tracker.percentile(self.percentile)


async def hedged_fetch(run: GroupRun, slot: int) -> np.ndarray | None:
    """The Tail at Scale: after the hedge delay, a second copy goes to another replica; the
    first output wins and the other copy is cancelled, so a query is answered once. Hedges spend
    a budget (frontend.fallback.CopyBudget, HEDGE_BUDGET_FRACTION of queries, as gRPC's retry
    throttling caps hedges): without one, a delay set when the cluster was quiet hedges ever more
    queries as load rises, and the hedges' own load collapsed a run at 70% load."""
    assert run.hedge is not None
    # The record is of whole queries, from the first copy: recording only the copies that
    # won would drop the slow ones, bias the p95 low and hedge far more than 5%.
    t0 = clock.now()
    copies = [asyncio.ensure_future(run.fetch(slot, record=False))]
    try:
        done, _ = await asyncio.wait(copies, timeout=run.hedge.delay_s())
        if not done and not run.copy_budget.spend():  # the budget is spent: no hedge, wait for the first
            run.stats.hedges_refused += 1
            done, _ = await asyncio.wait(copies)
        if not done:
            run.stats.hedges += 1
            copies.append(asyncio.ensure_future(run.fetch(slot, record=False)))  # avoids run.used
            done, _ = await asyncio.wait(copies, return_when=asyncio.FIRST_COMPLETED)
        winner = done.pop()
        if winner is not copies[0]:
            run.stats.hedge_wins += 1
            run.won_by[slot] = "hedge"
        out = winner.result()
        if out is not None:
            run.latency.record(clock.now() - t0)
        return out
    finally:
        for c in copies:
            c.cancel()
        await asyncio.gather(*copies, return_exceptions=True)
