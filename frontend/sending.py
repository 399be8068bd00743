"""A data query's request to a data worker, settled from the worker's connection by callback: no task
per query. A request that fails (worker crashed, error reply) counts as nothing out for the query (a
decode need not wait for it), and is re-sent after a backoff, to another healthy worker if there is one. Part of the dispatcher's work (frontend.dispatcher.GroupRun),
kept apart so each module stays small; hedged mode's copies still run as tasks (frontend.hedging).
"""
from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

import numpy as np

from frontend import clock, fallback
from frontend.errors import WorkerError
from frontend.worker_api import Abandonable, Worker

if TYPE_CHECKING:
    from frontend.dispatcher import GroupRun

log = logging.getLogger(__name__)
MAX_BACKOFF_S = 0.1


class DataSend:
    """Slot ``slot``'s request on ``worker``, sent at ``t0`` behind ``ahead`` others; ``tried``: workers
    that failed this query before (avoided while others are healthy)."""

    __slots__ = ("ahead", "attempt", "handle", "run", "slot", "t0", "tried", "worker")

    def __init__(self, run: GroupRun, slot: int, worker: Worker, t0: float, ahead: int, tried: set[Worker],
                 attempt: int) -> None:
        self.run, self.slot, self.worker, self.t0, self.ahead = run, slot, worker, t0, ahead
        self.tried, self.attempt = tried, attempt
        self.handle: Abandonable | None = None

    def done(self, outputs: np.ndarray | None, exc: WorkerError | None) -> None:
        """The worker's outcome: outputs (1, C), or the error that ended the request."""
        run, slot = self.run, self.slot
        self.handle = None  # it holds this method: without this the request, its group and its queries
        # stay in a reference cycle until a garbage collection (~20 objects per query)
        if run.outstanding.get(slot) is self:
            del run.outstanding[slot]
        timer = run.fallback_timers.pop(slot, None)
        if timer is not None:
            timer.cancel()
        if run.finished:
            return
        if exc is not None or outputs is None:
            log.debug("slot %d: %s", slot, exc)
            run.stats.worker_errors += 1
            if run.trace is not None:
                run.trace.add("fail", slot)
            self.tried.add(self.worker)
            _back_off(run, slot, self.tried, self.attempt)
            return
        elapsed = clock.now() - self.t0
        if run.trace is not None:
            run.trace.add("out", slot)
        run.latencies.record(self.worker, elapsed, self.ahead)
        run.latency.record(elapsed)
        run.on_output(slot, outputs[0])

    def abandon(self, now: float) -> None:
        """The group finished without this output: it took at least this long (the decode policy's record)."""
        self.run.latencies.record(self.worker, now - self.t0, self.ahead, censored=True)
        if self.handle is not None:
            self.handle.abandon()


def send(run: GroupRun, slot: int, tried: set[Worker] | None = None, attempt: int = 0) -> None:
    """Send slot's query to a healthy data worker (uncoded: avoiding a slow one, frontend.balance); with
    none healthy, or if it cannot be sent, try again after a backoff."""
    tried = set() if tried is None else tried
    worker = run.pool.pick(run.pool.data, avoid=run.used | tried if tried else run.used, by_pace=run.code is None)
    if worker is not None:
        t0, ahead = note_send(run, slot, worker)
        req = DataSend(run, slot, worker, t0, ahead, tried, attempt)
        try:
            req.handle = worker.send_infer(run.queries[slot].inputs[None], req.done)  # (1, *S)
        except WorkerError as exc:  # it lost its connection since the pick
            log.debug("slot %d: %s", slot, exc)
            run.stats.worker_errors += 1
            tried.add(worker)
        else:
            run.outstanding[slot] = req
            if run.fallback_hedge and run.code is not None:
                run.fallback_timers[slot] = fallback.arm(run, slot)
            return
    _back_off(run, slot, tried, attempt)


def note_send(run: GroupRun, slot: int, worker: Worker) -> tuple[float, int]:
    """slot's request goes to ``worker`` now: the group uses it, the decode policy predicts its finish,
    the trace says so. Returns (sent at, requests ahead of it there)."""
    run.used.add(worker)
    ahead, t0 = worker.in_flight, clock.now()
    run.requests[slot] = (t0, worker, ahead, run.policy.predict_finish(run.latencies, worker, t0, ahead))
    if run.trace is not None:
        run.trace.sent("send", slot, worker, ahead)
    return t0, ahead


def _back_off(run: GroupRun, slot: int, tried: set[Worker], attempt: int) -> None:
    """Nothing is out for slot's query: a decode need not wait for it; send it again after a backoff."""
    run.requests[slot] = (clock.now(), None, 0, None)  # nothing out for it: a decode need not wait
    run.consider_decode()
    if run.finished:  # the decode answered it
        return
    run.stats.retries += 1
    delay = min(run.backoff_s * 2 ** min(attempt + 1, 10), MAX_BACKOFF_S)
    run.retry_timers[slot] = asyncio.get_running_loop().call_later(delay, _retry, run, slot, tried, attempt + 1)


def _retry(run: GroupRun, slot: int, tried: set[Worker], attempt: int) -> None:
    run.retry_timers.pop(slot, None)
    if not run.finished and not run.queries[slot].done:
        send(run, slot, tried, attempt)
