"""The serving core behind the HTTP handlers: admission, deadlines, grouping and lifecycle.

``submit`` turns a request's rows into Queries (each with its own future and deadline timer),
hands them to the Grouper, and waits for their answers. ``pending`` counts accepted queries
without an answer; it returns to zero whatever happens to workers or clients.
"""
from __future__ import annotations

import asyncio
import logging
from typing import Any

import numpy as np

from coders import Code, make_code
from frontend.config import FrontendConfig
from frontend.decode_policy import WorkerLatencies
from frontend.dispatcher import GroupRun
from frontend.errors import DeadlineExceeded, NotReady, Overloaded, ShuttingDown
from frontend.grouper import Grouper
from frontend.hedging import HedgePolicy, LatencyTracker
from frontend.metrics import Metrics
from frontend.pool import WorkerPool
from frontend.query import Answer, Query
from frontend.stats import Stats

log = logging.getLogger(__name__)


class Service:
    def __init__(self, cfg: FrontendConfig) -> None:
        self.cfg = cfg
        self.code: Code | None = make_code(cfg.code, cfg.k, cfg.r) if cfg.coded else None
        self.pool = WorkerPool(cfg)
        self.stats = Stats()
        self.pending = 0
        self.runs: set[GroupRun] = set()
        self.accepting = True
        self._leftover: set[asyncio.Task[Any]] = set()  # cancelled group tasks still unwinding
        self._monitor: asyncio.Task[None] | None = None
        self.latency = LatencyTracker()
        self.latencies = WorkerLatencies()  # per worker: when is an output overdue (decode policy)
        self.decode_policy = cfg.decode()
        self.hedge = HedgePolicy(self.latency, cfg.hedge_delay_ms, cfg.hedge_percentile) if cfg.mode == "hedged" else None
        self.metrics = Metrics(self)
        self.grouper = Grouper(cfg.k if cfg.coded else 1, cfg.group_timeout_ms / 1000, self._new_run)

    # -- lifecycle ----------------------------------------------------------------------

    async def start(self) -> None:
        self.pool.start()
        self._monitor = asyncio.create_task(self._monitor_loop())

    async def drain(self, timeout_s: float) -> bool:
        """Stop accepting (new requests get 503) and wait up to ``timeout_s`` for the queries in
        flight to be answered; True if none is left."""
        self.accepting = False
        self.grouper.flush()
        loop = asyncio.get_running_loop()
        end = loop.time() + timeout_s
        while self.pending and loop.time() < end:
            await asyncio.sleep(0.01)
        return self.pending == 0

    async def stop(self, drain_timeout_s: float = 5.0) -> None:
        """Drain, then fail what is left with ShuttingDown and close every connection."""
        await self.drain(drain_timeout_s)
        for run in list(self.runs):
            run.cancel(ShuttingDown("the server is shutting down"))
        if self._monitor is not None:
            self._monitor.cancel()
            await asyncio.gather(self._monitor, return_exceptions=True)
        await asyncio.gather(*self._leftover, return_exceptions=True)
        await self.pool.close()

    async def _monitor_loop(self) -> None:
        while True:
            self.pool.check_agreement()
            await asyncio.sleep(min(self.cfg.health_interval_s, 0.5))

    # -- state ----------------------------------------------------------------------------

    def input_shape(self) -> tuple[int, ...] | None:
        return self.pool.input_shape()

    def ready(self) -> bool:
        return self.accepting and self.input_shape() is not None

    def readiness(self) -> dict[str, Any]:
        parity_ok = any(w.healthy for w in self.pool.parity)
        return {"ready": self.ready(), "mode": self.cfg.mode, "k": self.cfg.k,
                "r": self.cfg.r if self.cfg.coded else None, "code": self.cfg.code if self.cfg.coded else None,
                "coded": self.cfg.coded and parity_ok,
                "healthy_data_workers": sum(w.healthy for w in self.pool.data),
                "healthy_parity_workers": sum(w.healthy for w in self.pool.parity),
                "parity_served": self.pool.parity_served() if self.cfg.coded else None,
                "input_shape": list(self.input_shape() or []) or None,
                "pending": self.pending, "workers": self.pool.summary()}

    # -- the serving path ---------------------------------------------------------------

    async def submit(self, inputs: np.ndarray, deadline_ms: float | None = None) -> list[Answer]:
        """inputs (N, *S) float32, already validated -> N answers, in order.

        Raises NotReady / Overloaded / ShuttingDown before accepting anything, and
        DeadlineExceeded if some query had no answer by its deadline (and no default is set).
        """
        if not self.accepting:
            raise ShuttingDown("the server is shutting down")
        if not self.ready():
            raise NotReady("no healthy data worker yet")
        n = len(inputs)
        if self.pending + n > self.cfg.max_pending:
            self.stats.rejected_overload += 1
            raise Overloaded(f"{self.pending} queries pending; limit is {self.cfg.max_pending}", retry_after=1)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + (deadline_ms if deadline_ms is not None else self.cfg.deadline_ms) / 1000
        queries = [self._accept(row, deadline, loop) for row in inputs]
        for q in queries:
            self.grouper.add(q)
        await asyncio.wait([q.future for q in queries])  # never cancels the queries themselves
        missed = sum(1 for q in queries if q.future.exception() is not None)
        if missed:
            exc = next(q.future.exception() for q in queries if q.future.exception() is not None)
            if isinstance(exc, DeadlineExceeded):
                raise DeadlineExceeded(f"{missed} of {n} queries had no answer within the deadline "
                                       f"of {(deadline_ms or self.cfg.deadline_ms):g} ms", missed=missed)
            raise exc  # type: ignore[misc]
        return [q.future.result() for q in queries]

    def _accept(self, row: np.ndarray, deadline: float, loop: asyncio.AbstractEventLoop) -> Query:
        q = Query(inputs=row, deadline=deadline, future=loop.create_future())
        self.pending += 1
        self.stats.queries += 1
        timer = loop.call_at(deadline, self._expire, q)
        start = loop.time()
        q.future.add_done_callback(lambda f: self._resolved(f, timer, loop.time() - start))
        return q

    def _resolved(self, future: asyncio.Future[Answer], timer: asyncio.TimerHandle, seconds: float) -> None:
        timer.cancel()
        self.pending -= 1
        if future.exception() is None:
            self.metrics.observe_query(seconds, future.result().degraded)

    def _expire(self, q: Query) -> None:
        if self.cfg.default_output is not None:
            if q.answer(Answer(np.asarray(self.cfg.default_output, np.float32), default=True)):
                self.stats.defaulted += 1
        elif q.fail(DeadlineExceeded("no answer within the deadline")):
            self.stats.deadline_exceeded += 1

    def _new_run(self) -> GroupRun:
        run = GroupRun(self.pool, self.code, self.stats, self.cfg.retry_backoff_s, self._finished,
                       policy=self.decode_policy, latency=self.latency, hedge=self.hedge, latencies=self.latencies)
        self.runs.add(run)
        return run

    def _finished(self, run: GroupRun) -> None:
        self.runs.discard(run)
        for task in run.tasks:
            self._leftover.add(task)
            task.add_done_callback(self._leftover.discard)
