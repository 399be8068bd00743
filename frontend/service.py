"""The serving core behind the HTTP handlers: admission, deadlines, grouping and lifecycle.

``submit`` turns a request's rows into Queries (one future and one deadline timer per request, a
Pending), hands them to the Grouper, and waits for their answers. ``pending`` counts accepted queries
without an answer; it returns to zero whatever happens to workers or clients. A --default-output
whose length differs from the model's outputs keeps the service unready (``not_ready_reason``).
"""
from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import numpy as np

from coders import Code, make_code
from frontend import clock
from frontend.config import FrontendConfig
from frontend.decode_policy import WorkerLatencies
from frontend.dispatcher import GroupRun
from frontend.errors import DeadlineExceeded, NotReady, Overloaded, ShuttingDown
from frontend.fallback import BUDGET_FRACTION, CopyBudget
from frontend.gc_watch import GcWatch
from frontend.grouper import Grouper
from frontend.hedging import HEDGE_BUDGET_FRACTION, HedgePolicy, LatencyTracker
from frontend.metrics import Metrics
from frontend.pool import WorkerPool
from frontend.query import Answer, Pending, Query
from frontend.stats import Stats
from frontend.timers import TimerWheel
from frontend.trace import TraceSink

log = logging.getLogger(__name__)


class Service:
    def __init__(self, cfg: FrontendConfig, pool: WorkerPool | None = None) -> None:
        self.cfg = cfg
        self.code: Code | None = make_code(cfg.code, cfg.k, cfg.r) if cfg.coded else None
        self.pool = pool if pool is not None else WorkerPool(cfg)
        self.stats = Stats()
        self.pending = 0
        self.runs: set[GroupRun] = set()
        self.accepting = True
        self._leftover: set[asyncio.Task[Any]] = set()  # cancelled group tasks still unwinding
        self._monitor: asyncio.Task[None] | None = None
        self._answer_size: int | None = None    # outputs per query, as the last real answer had them
        self._reported: str | None = None       # the not-ready reason last logged
        self.latency = LatencyTracker()
        self.latencies = WorkerLatencies()  # per worker: when is an output overdue (decode policy)
        self.decode_policy = cfg.decode()
        # extra requests: coded's fallback copies at most 5%; hedged mode, which hedges its slowest ~5% by
        # design, at most 10%, so the cap binds only when hedging runs away (frontend.hedging)
        self.copy_budget = CopyBudget(HEDGE_BUDGET_FRACTION if cfg.mode == "hedged" else BUDGET_FRACTION)
        self.hedge = HedgePolicy(self.latency, cfg.hedge_delay_ms, cfg.hedge_percentile) if cfg.mode == "hedged" else None
        self.metrics = Metrics(self)
        self.gc = GcWatch()  # collector pauses stall the loop: counted for /stats
        self.trace_sink = TraceSink(cfg.trace_file) if cfg.trace_file is not None else None
        self.timers = TimerWheel()  # request deadlines, fallback times, group timeouts: one loop timer
        self.grouper = Grouper(cfg.k if cfg.coded else 1, cfg.group_timeout_ms / 1000, self._new_run, self.timers)

    # -- lifecycle ----------------------------------------------------------------------

    async def start(self) -> None:
        self.pool.start()
        self.gc.start()
        self._monitor = asyncio.create_task(self._monitor_loop())

    async def drain(self, timeout_s: float) -> bool:
        """Stop accepting (new requests get 503) and wait up to ``timeout_s`` for the queries in
        flight to be answered; True if none is left."""
        self.accepting = False
        self.grouper.flush()
        end = clock.now() + timeout_s
        while self.pending and clock.now() < end:
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
        self.timers.close()
        self.gc.stop()
        if self.trace_sink is not None:
            await self._write_trace(self.trace_sink)

    async def _write_trace(self, sink: TraceSink) -> None:
        """Write the trace off the loop; a failure is logged, never raised (the queries are all answered)."""
        try:
            path = await asyncio.to_thread(sink.write, clock.now(), time.time())
        except OSError as exc:
            log.error("could not write the trace to %s: %s", sink.path, exc)
        else:
            log.info("trace of %d groups written to %s", len(sink.groups), path)

    async def _monitor_loop(self) -> None:
        while True:
            self.pool.check_agreement()
            self._log_default_problem()
            await asyncio.sleep(min(self.cfg.health_interval_s, 0.5))

    def _log_default_problem(self) -> None:
        """A misconfiguration the operator must fix: logged once (at error level) when found."""
        problem = self.default_output_problem()
        if problem is not None and problem != self._reported:
            log.error("not ready: %s", problem)
        self._reported = problem

    # -- state ----------------------------------------------------------------------------

    def input_shape(self) -> tuple[int, ...] | None:
        return self.pool.input_shape()

    def output_size(self) -> int | None:
        """Outputs per query: as a healthy data worker reports it, else as real answers had it."""
        return self.pool.output_size() or self._answer_size

    def default_output_problem(self) -> str | None:
        """Why --default-output cannot be used with this model (its length differs), or None."""
        default, size = self.cfg.default_output, self.output_size()
        if default is None or size is None or len(default) == size:
            return None
        return (f"--default-output has {len(default)} values but the model outputs {size} per query; "
                f"give {size} values (or none, to answer 504 at the deadline)")

    def not_ready_reason(self) -> str | None:
        if not self.accepting:
            return "the server is shutting down"
        if self.input_shape() is None:
            return "no healthy data worker yet: the model's input shape is unknown"
        return self.default_output_problem()

    def ready(self) -> bool:
        return self.not_ready_reason() is None

    def readiness(self) -> dict[str, Any]:
        parity_ok = any(w.healthy for w in self.pool.parity)
        reason = self.not_ready_reason()
        return {"ready": reason is None, "reason": reason, "mode": self.cfg.mode, "k": self.cfg.k,
                "r": self.cfg.r if self.cfg.coded else None, "code": self.cfg.code if self.cfg.coded else None,
                "coded": self.cfg.coded and parity_ok,
                "healthy_data_workers": sum(w.healthy for w in self.pool.data),
                "healthy_parity_workers": sum(w.healthy for w in self.pool.parity),
                "parity_served": self.pool.parity_served() if self.cfg.coded else None,
                "input_shape": list(self.input_shape() or []) or None, "output_size": self.output_size(),
                "pending": self.pending, "workers": self.pool.summary()}

    # -- the serving path ---------------------------------------------------------------

    async def submit(self, inputs: np.ndarray, deadline_ms: float | None = None) -> list[Answer]:
        """inputs (N, *S) float32, already validated -> N answers, in order.

        Raises NotReady / Overloaded / ShuttingDown before accepting anything, and
        DeadlineExceeded if some query had no answer by its deadline (and no default is set).
        """
        if not self.accepting:
            raise ShuttingDown("the server is shutting down")
        reason = self.not_ready_reason()
        if reason is not None:
            raise NotReady(reason)
        n = len(inputs)
        if self.pending + n > self.cfg.max_pending:
            self.stats.rejected_overload += 1
            raise Overloaded(f"{self.pending} queries pending; limit is {self.cfg.max_pending}", retry_after=1)
        loop = asyncio.get_running_loop()
        start = clock.now()
        deadline = start + (deadline_ms if deadline_ms is not None else self.cfg.deadline_ms) / 1000
        request = Pending(loop.create_future(), start, self._settled)
        queries = request.queries = [Query(row, deadline, request) for row in inputs]
        request.left = n
        self.pending += n
        self.stats.queries += n
        request.timer = self.timers.call_at(deadline, self._expire, request)
        for q in queries:
            self.grouper.add(q)
        if request.left:
            await request.future  # a cancelled handler stops waiting; its queries are still answered
        failed = [q.error for q in queries if q.error is not None]
        if failed:
            if isinstance(failed[0], DeadlineExceeded):
                raise self._missed(len(failed), n, deadline_ms)
            raise failed[0]
        answers: list[Answer] = [q.result for q in queries]  # type: ignore[misc]
        request.queries = []  # break the request <-> query cycle (freed without the cyclic collector)
        self._check_defaults_fit(answers, deadline_ms)
        return answers

    def _missed(self, missed: int, n: int, deadline_ms: float | None) -> DeadlineExceeded:
        ms = deadline_ms or self.cfg.deadline_ms
        text = f"{missed} of {n} queries had no answer within the deadline of {ms:g} ms"
        problem = self.default_output_problem()
        return DeadlineExceeded(f"{text} (no default output given: {problem})" if problem else text, missed=missed)

    def _check_defaults_fit(self, answers: list[Answer], deadline_ms: float | None) -> None:
        """A default given before the output size was known may not fit the real answers beside it:
        those queries missed their deadline with no usable default (504, never a broken stack)."""
        if len({a.output.shape for a in answers}) == 1:
            return
        missed = sum(a.default for a in answers)
        if not missed:  # no default involved: data workers whose models disagree (the pool refuses them)
            raise NotReady("data workers answered with different output sizes")
        raise self._missed(missed, len(answers), deadline_ms)

    def _settled(self, q: Query, seconds: float) -> None:
        self.pending -= 1
        answer = q.result
        if answer is not None:
            self.metrics.observe_query(seconds, answer.degraded)
            if not answer.default:  # how the service learns the output size of workers that do not report it
                self._answer_size = answer.output.size

    def _expire(self, request: Pending) -> None:
        for q in request.queries:
            if q.done:
                continue
            if self.cfg.default_output is not None and self.default_output_problem() is None:
                if q.answer(Answer(np.asarray(self.cfg.default_output, np.float32), default=True, path="default")):
                    self.stats.defaulted += 1
            elif q.fail(DeadlineExceeded("no answer within the deadline")):
                self.stats.deadline_exceeded += 1

    def _new_run(self) -> GroupRun:
        run = GroupRun(self.pool, self.code, self.stats, self.cfg.retry_backoff_s, self._finished,
                       policy=self.decode_policy, latency=self.latency, hedge=self.hedge, latencies=self.latencies,
                       fallback_hedge=self.cfg.coded and self.cfg.hedge_fallback, copy_budget=self.copy_budget,
                       trace_sink=self.trace_sink, timers=self.timers)
        self.runs.add(run)
        return run

    def _finished(self, run: GroupRun) -> None:
        self.runs.discard(run)
        for task in run.tasks:
            self._leftover.add(task)
            task.add_done_callback(self._leftover.discard)
