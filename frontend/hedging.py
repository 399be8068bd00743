"""Hedged requests (Dean and Barroso, "The Tail at Scale"): the latency record of recent data
requests, the delay after which a still-outstanding query is re-sent to another replica, and the
hedged fetch of one slot of a group, with the copies it races (hedged mode).

The delay is fixed, or the given percentile of recent latencies (p95 by default: hedging only
the slowest ~5% caps the extra load near 5%). Before enough samples exist the fixed fallback holds.
"""
from __future__ import annotations

import asyncio
import logging
from collections import deque
from typing import TYPE_CHECKING

import numpy as np

from frontend import clock
from frontend.errors import WorkerError
from frontend.sending import MAX_BACKOFF_S, note_send
from frontend.worker_api import Worker

if TYPE_CHECKING:
    from frontend.dispatcher import GroupRun

log = logging.getLogger(__name__)
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
    copies = [asyncio.ensure_future(fetch(run, slot))]
    try:
        done, _ = await asyncio.wait(copies, timeout=run.hedge.delay_s())
        if not done and not run.copy_budget.spend():  # the budget is spent: no hedge, wait for the first
            run.stats.hedges_refused += 1
            done, _ = await asyncio.wait(copies)
        if not done:
            run.stats.hedges += 1
            copies.append(asyncio.ensure_future(fetch(run, slot)))  # avoids run.used
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


async def fetch(run: GroupRun, slot: int) -> np.ndarray | None:
    """One copy of slot's query, as a coroutine for hedged_fetch to race (the callback form is
    frontend.sending.send): to a healthy data worker the group does not use yet, re-sent after failures;
    (C,) output, or None once the group has finished without it. The latency record is hedged_fetch's
    (whole queries), not this copy's."""
    inputs = run.queries[slot].inputs[None]  # (1, *S)
    tried: set[Worker] = set()
    attempt = 0
    while not run.finished:
        # uncoded: nothing decodes around a slow worker, so avoid one (frontend.balance)
        worker = run.pool.pick(run.pool.data, avoid=run.used | tried, by_pace=run.code is None)
        if worker is not None:
            t0, ahead = note_send(run, slot, worker)
            try:
                out = await worker.infer(inputs)  # (1, C)
            except asyncio.CancelledError:  # abandoned: it took at least this long
                run.latencies.record(worker, clock.now() - t0, ahead, censored=True)
                raise
            except WorkerError as exc:
                log.debug("slot %d: %s", slot, exc)
                run.stats.worker_errors += 1
                tried.add(worker)
                if run.trace is not None:
                    run.trace.add("fail", slot)
            else:
                if run.trace is not None:
                    run.trace.add("out", slot)
                run.latencies.record(worker, clock.now() - t0, ahead)
                return out[0]
        run.requests[slot] = (clock.now(), None, 0, None)  # nothing out for it: a decode need not wait
        run.consider_decode()
        attempt += 1
        run.stats.retries += 1
        await asyncio.sleep(min(run.backoff_s * 2 ** min(attempt, 10), MAX_BACKOFF_S))
    return None
