"""Hedging for what coding cannot cover: a query whose output is overdue while its group cannot
rebuild it (a partial group closed by the timeout, two slow members with r=1, a slow parity
worker) gets one second copy on a worker the group does not use. The first output wins; the
query is answered once, and the loser is cancelled. Queries the code can rebuild are left to the
decode policy, so this adds requests only for the rare overdue, undecodable query, and a budget
caps the copies at a fraction of the queries: copies add load, and without a cap an overloaded
cluster makes more queries overdue, which sends more copies (a run at 50% load collapsed so).
"""
from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

import numpy as np

from frontend import clock
from frontend.errors import WorkerError
from frontend.worker_api import Worker

if TYPE_CHECKING:
    from frontend.dispatcher import GroupRun

log = logging.getLogger(__name__)
BUDGET_FRACTION = 0.05  # at most one copy per 20 queries, as The Tail at Scale's p95 hedging
BUDGET_BURST = 20.0     # copies that may go out back to back when the budget is full


class CopyBudget:
    """A token bucket: each accepted query adds ``fraction`` of a copy, each copy spends one."""

    def __init__(self, fraction: float = BUDGET_FRACTION, burst: float = BUDGET_BURST) -> None:
        self.fraction, self.burst = fraction, burst
        self.tokens = burst

    def earn(self, queries: int = 1) -> None:
        self.tokens = min(self.burst, self.tokens + self.fraction * queries)

    def spend(self) -> bool:
        if self.tokens < 1.0:
            return False
        self.tokens -= 1.0
        return True


async def fetch_with_fallback(run: GroupRun, slot: int) -> np.ndarray | None:
    """slot's (C,) output from its own request or, once that is overdue and undecodable, from a copy."""
    first = asyncio.ensure_future(run.fetch(slot))
    tasks = {first}
    try:
        await asyncio.sleep(0)  # let the first request go out, so its worker and send time are known
        done, _ = await asyncio.wait(tasks, timeout=_overdue_in(run, slot))
        if not done and not run.finished and not run.decodable():
            spare = run.pool.pick(run.pool.data, avoid=run.used)
            if spare is not None and run.copy_budget.spend():
                run.used.add(spare)
                run.stats.fallback_hedges += 1
                tasks.add(asyncio.ensure_future(_copy(run, slot, spare)))
        while tasks:
            done, tasks = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                out = task.result()
                if out is not None:
                    if task is not first:
                        run.stats.fallback_hedge_wins += 1
                        run.won_by[slot] = "copy"
                    return out
        return None
    finally:
        for task in (first, *tasks):
            task.cancel()
        await asyncio.gather(first, *tasks, return_exceptions=True)


def _overdue_in(run: GroupRun, slot: int) -> float:
    """Seconds until slot's current request is overdue for its worker (the decode policy's rule)."""
    m = run.missing_slot(slot)
    if m.sent_at is None or m.worker is None:
        return run.policy.overdue_after(run.latencies, None)
    return max(0.0, run.policy.due(m, run.latencies) - clock.now())


async def _copy(run: GroupRun, slot: int, worker: Worker) -> np.ndarray | None:
    """One request of slot's query to ``worker``; None if it fails (the first request still runs)."""
    t0, ahead = clock.now(), worker.in_flight
    run.policy.predict_finish(run.latencies, worker, t0, ahead)  # the copy holds the spare's time too
    try:
        out = await worker.infer(run.queries[slot].inputs[None])  # (1, C)
    except asyncio.CancelledError:  # the first request won: the copy took at least this long
        run.latencies.record(worker, clock.now() - t0, ahead, censored=True)
        raise
    except WorkerError as exc:
        log.debug("slot %d fallback copy: %s", slot, exc)
        run.stats.worker_errors += 1
        return None
    run.latencies.record(worker, clock.now() - t0, ahead)
    return out[0]
