"""A full group's parity queries: encoded once from its k data queries, each sent to its own parity
worker (chosen by pace, frontend.balance); the parity output feeds the group like a data output.
Part of the dispatcher's work (frontend.dispatcher.GroupRun), kept apart so each module stays small.
"""
from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

import numpy as np

from frontend.errors import WorkerError

if TYPE_CHECKING:
    from frontend.dispatcher import GroupRun

log = logging.getLogger(__name__)


def send_parities(run: GroupRun) -> None:
    """Encode the r parity queries once, and send each to its own parity worker."""
    assert run.code is not None and run.group is not None
    if not any(w.healthy for w in run.pool.parity):
        run.stats.groups_without_parity += 1
        for i in range(run.code.r):
            run.group.parity_failed(run.code.k + i)
        return
    run.stats.groups_coded += 1
    t0 = time.perf_counter()
    stacked = np.concatenate([q.inputs[None, None] for q in run.queries])  # (k, 1, *S); np.stack costs more
    parities = run.code.encode(stacked)  # (r, 1, *S), numpy: no torch dispatch on the hot path
    run.stats.encode_seconds += time.perf_counter() - t0
    for i in range(run.code.r):
        _send_parity(run, run.code.k + i, parities[i])


def _send_parity(run: GroupRun, slot: int, query: np.ndarray) -> None:
    """query (1, *S) -> to a worker whose model serves that parity index (learned parity model l serves
    only slot k+l); r parity queries avoid sharing a worker. Its output arrives by callback (ParitySend)."""
    assert run.group is not None and run.code is not None
    worker = run.pool.pick(run.pool.parity_for(slot - run.code.k), avoid=run.used_parity, by_pace=True)
    if worker is None:  # none healthy for this index: decode with the parities that do arrive
        run.group.parity_failed(slot)
        return
    run.used_parity.add(worker)
    if run.trace is not None:
        run.trace.sent("psend", slot, worker, worker.in_flight)
    req = ParitySend(run, slot)
    try:
        run.parity_sends.append(worker.send_infer(query, req.done))
    except WorkerError as exc:
        req.done(None, exc)


class ParitySend:
    """A parity request's outcome: its output feeds the group like a data output; a failure leaves the
    group to decode with the parities that do arrive."""

    __slots__ = ("run", "slot")

    def __init__(self, run: GroupRun, slot: int) -> None:
        self.run, self.slot = run, slot

    def done(self, outputs: np.ndarray | None, exc: WorkerError | None) -> None:
        run, slot = self.run, self.slot
        if run.finished or run.group is None:
            return
        if exc is not None or outputs is None:
            log.debug("parity: %s", exc)
            run.stats.worker_errors += 1
            run.group.parity_failed(slot)
            if run.trace is not None:
                run.trace.add("fail", slot)
            return
        if run.trace is not None:
            run.trace.add("pout", slot)
        run.on_output(slot, outputs[0])
