"""Hedging for what coding cannot cover: a query whose output is overdue while its group cannot
rebuild it (a partial group closed by the timeout, two slow members with r=1, a slow parity
worker) gets one second copy on a worker the group does not use (a timer per query, armed when its
request goes out). The first output wins; the query is answered once, and the loser is cancelled (a
losing first request with the group's other leftovers, when the group finishes). Queries the code
can rebuild are left to the decode policy, so this adds requests only for the rare overdue,
undecodable query, and a budget caps the copies at a fraction of the queries: copies add load, and
without a cap an overloaded cluster makes more queries overdue, which sends more copies (a run at
50% load collapsed so).
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
    from frontend.timers import Entry

log = logging.getLogger(__name__)
BUDGET_FRACTION = 0.05  # at most one copy per 20 queries, as The Tail at Scale's p95 hedging
BUDGET_BURST = 20.0     # copies that may go out back to back when the budget is full
RECHECK_MIN_S = 0.005   # an overdue query with no copy sent is looked at again after at least this long


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


def arm(run: GroupRun, slot: int) -> Entry:
    """Just after slot's request went out (frontend.sending.note_send): an entry in the service's timer
    wheel for when it is overdue (frontend.timers): most outputs come in time and it is simply cancelled."""
    sent_at, worker, _, finish = run.requests[slot]
    assert worker is not None and finish is not None
    due = run.policy.due_when_sent(run.latencies, worker, sent_at, finish, run.pool.is_slow(worker))
    return run.timers.call_at(due, _on_overdue, run, slot)


def _on_overdue(run: GroupRun, slot: int) -> None:
    """slot's output is overdue: send one copy to a spare data worker unless the group is done, the query
    answered, or the code can rebuild it (then the decode policy covers it). With no spare (no other
    healthy worker) or the budget spent, look again one service time later: a single look that found
    nothing left such a query waiting for its deadline."""
    run.fallback_timers.pop(slot, None)
    if run.finished or run.queries[slot].done or run.decodable():
        return
    holder = run.requests.get(slot, (None, None))[1]  # the worker its request waits on
    spare = run.pool.pick(run.pool.data, avoid=run.used, by_pace=True)  # a copy must go where it is fast
    if spare is None or spare is holder or not run.copy_budget.spend():
        recheck = max(RECHECK_MIN_S, run.policy.overdue_s(run.latencies, None))
        run.fallback_timers[slot] = run.timers.call_later(recheck, _on_overdue, run, slot)
        return
    run.used.add(spare)
    run.stats.fallback_hedges += 1
    run.spawn(_copy_and_deliver(run, slot, spare))


async def _copy_and_deliver(run: GroupRun, slot: int, worker: Worker) -> None:
    """The copy's output answers the query if the first request has not; the first request is cancelled
    with the group's other leftovers when the group finishes."""
    out = await _copy(run, slot, worker)
    if out is not None and not run.queries[slot].done:
        run.stats.fallback_hedge_wins += 1
        run.won_by[slot] = "copy"
        run.on_output(slot, out)


async def _copy(run: GroupRun, slot: int, worker: Worker) -> np.ndarray | None:
    """One request of slot's query to ``worker``; None if it fails (the first request still runs)."""
    t0, ahead = clock.now(), worker.in_flight
    run.policy.predict_finish(run.latencies, worker, t0, ahead)  # the copy holds the spare's time too
    if run.trace is not None:
        run.trace.sent("copy", slot, worker, ahead)
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
    if run.trace is not None:
        run.trace.add("cout", slot)
    return out[0]
