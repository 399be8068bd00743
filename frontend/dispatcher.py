"""Runs one coding group on the workers: each data query is sent as soon as it joins the group
(frontend.sending), the parity query once the group is full (frontend.parity); outputs feed the
pure ``Group``, whose deliveries settle the queries. When every query is settled the group abandons
what is left. Replies arrive by callback from the worker connections: no task per query.

A data request that fails (worker crashed, error reply) is re-sent to another healthy worker
until an output arrives or the group finishes; a client going away never cancels group work,
since the other queries of the group may need that output to be decoded. When the group could
decode, the DecodePolicy says when: at once, or once the missing output is overdue.
"""
from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from coders import Code
from frontend import clock, parity, sending
from frontend.decode_policy import DecodePolicy, MissingSlot, WorkerLatencies
from frontend.fallback import CopyBudget
from frontend.group import Delivery, Group
from frontend.hedging import HedgePolicy, LatencyTracker, hedged_fetch
from frontend.pool import WorkerPool
from frontend.query import Answer, Query
from frontend.stats import Stats
from frontend.timers import Entry, TimerWheel
from frontend.trace import GroupTrace, TraceSink
from frontend.worker_api import Worker

log = logging.getLogger(__name__)


class GroupRun:
    def __init__(self, pool: WorkerPool, code: Code | None, stats: Stats, backoff_s: float,
                 on_finished: Callable[[GroupRun], None], policy: DecodePolicy | None = None,
                 latency: LatencyTracker | None = None, hedge: HedgePolicy | None = None,
                 latencies: WorkerLatencies | None = None, fallback_hedge: bool = False,
                 copy_budget: CopyBudget | None = None, trace_sink: TraceSink | None = None,
                 timers: TimerWheel | None = None) -> None:
        self.pool = pool
        self.code = code                      # None: uncoded modes
        self.stats = stats
        self.backoff_s = backoff_s
        self.on_finished = on_finished
        self.queries: list[Query] = []
        self.group: Group | None = None       # created at close, when the number of queries is known
        self.early: dict[int, np.ndarray] = {}  # data outputs that arrived before close
        self.used: set[Worker] = set()  # workers holding a query of this group
        self.used_parity: set[Worker] = set()
        self.tasks: set[asyncio.Task[Any]] = set()  # hedged fetches and fallback copies
        self.outstanding: dict[int, sending.DataSend] = {}  # slot -> its data request on the wire
        self.parity_sends: list[Any] = []     # the parity requests on the wire (frontend.parity)
        self.retry_timers: dict[int, asyncio.TimerHandle] = {}  # slot -> its re-send after a failure (rare)
        self._open = 0                        # queries not yet settled
        self.finished = False
        self.policy = policy if policy is not None else DecodePolicy("eager")
        self.latencies = latencies if latencies is not None else WorkerLatencies()  # per worker, shared
        # slot -> (sent at, worker or None, requests the worker held then, when it should finish): when
        # is its output overdue (the decode policy's rule)
        self.requests: dict[int, tuple[float, Worker | None, int, float | None]] = {}
        # a loop timer, not the service's timer wheel: the wheel runs whatever is due within the loop's timer
        # slack of its earliest entry, which would decode up to that slack (1 ms on uvloop) before due
        self._decode_timer: asyncio.TimerHandle | None = None
        self._waited = False                  # a decode was deferred by the policy
        self._decode_rule = "eager"           # the policy's rule behind the pending or last decode
        self.won_by: dict[int, str] = {}      # slot -> "copy" / "hedge": a second request answered first
        self.latency = latency if latency is not None else LatencyTracker()  # an empty tracker is falsy
        self.hedge = hedge                    # hedged mode: re-send a slow query to another replica
        self.fallback_hedge = fallback_hedge  # coded mode: re-send an overdue query the code cannot rebuild
        self.copy_budget = copy_budget if copy_budget is not None else CopyBudget()  # shared by the service
        self.timers = timers if timers is not None else TimerWheel()  # the service's (frontend.timers)
        self.fallback_timers: dict[int, Entry] = {}  # slot -> when its request is overdue
        self.trace_sink = trace_sink
        self.trace = GroupTrace() if trace_sink is not None else None  # what happened, when (frontend.trace)

    @property
    def closed(self) -> bool:
        return self.group is not None

    def add(self, query: Query) -> None:
        slot = len(self.queries)
        self.copy_budget.earn()
        self.queries.append(query)
        query.group = self
        self._open += 1
        if self.trace is not None:
            self.trace.add("join", slot)
        if self.hedge is not None:
            self.spawn(self._run_hedged(slot))
        else:
            sending.send(self, slot)

    def settled(self, query: Query) -> None:
        """One of this group's queries was answered or failed (frontend.query.Query tells its group)."""
        self._open -= 1
        self._maybe_finish()

    def close(self) -> None:
        """No more queries: build the state machine, replay early outputs, send the parity queries."""
        n = len(self.queries)
        full = self.code is not None and n == self.code.k
        self.group = Group(n, self.code if full else None)
        if self.trace is not None:
            self.trace.add("close")
        self.stats.groups += 1
        if self.code is not None and not full:
            self.stats.groups_partial += 1
        for slot, out in self.early.items():
            self._deliver(self.group.add_output(slot, out))
        self.early.clear()
        if full:
            parity.send_parities(self)
        self._maybe_finish()

    def cancel(self, exc: BaseException) -> None:
        """Shutdown: fail every unanswered query and stop all work."""
        for q in self.queries:
            q.fail(exc)
        if self.group is None:
            self.group = Group(len(self.queries), None)
        self._maybe_finish()

    # -- work ---------------------------------------------------------------------------

    def spawn(self, coro: Any) -> None:
        """Run ``coro`` as this group's work: held until done, cancelled when the group finishes."""
        task = asyncio.create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _run_hedged(self, slot: int) -> None:
        out = await hedged_fetch(self, slot)
        if out is not None:
            self.on_output(slot, out)

    def decodable(self) -> bool:
        """The group could rebuild its missing outputs now (so the decode policy, not a re-send, covers them)."""
        return self.group is not None and self.group.can_decode()

    def on_output(self, slot: int, output: np.ndarray) -> None:
        if self.group is None:
            self.early[slot] = output
            self._deliver([Delivery(slot, output, degraded=False)])
            return
        self._deliver(self.group.add_output(slot, output, decode=False))
        self.consider_decode()

    def consider_decode(self, fired: bool = False) -> None:
        """If the group could decode, do it now or set the timer for when the policy says.
        ``fired``: the decode timer fired, possibly a little before its due time (uvloop's timers
        run on a millisecond clock, up to ~0.5 ms early): within the loop's timer slack is due."""
        if self.group is None or self.finished or not self.group.can_decode():
            return
        now, slack = clock.now(), clock.timer_slack()
        missing = self._missing()
        at, self._decode_rule = self.policy.decision(now, missing, self.latencies)
        if at <= now + (slack if fired else clock.EXACT_TIMER_SLACK_S):
            self._count_decode_at_once(missing)
            self._decode()
            return
        if self._decode_timer is not None:
            if abs(self._decode_timer.when() - at) < slack:
                return
            self._decode_timer.cancel()
        self._waited = True
        self._decode_timer = asyncio.get_running_loop().call_at(at, self._on_decode_timer)
        if self.trace is not None:
            self.trace.add("wait", -1, self._decode_rule, at)

    def _count_decode_at_once(self, missing: list[MissingSlot]) -> None:
        """One bucket per decode: after a wait (counted when the group finishes), a worker down, or
        an output already overdue when the group became decodable (adaptive; e.g. a slow worker)."""
        if self._waited:
            return
        if any(m.down for m in missing):
            self.stats.decodes_worker_down += 1
        elif self.policy.kind == "adaptive" and self._decode_rule in ("overdue", "silent"):
            self.stats.decodes_already_overdue += 1

    def _on_decode_timer(self) -> None:
        """The adaptive policy re-judges (a worker that answered meanwhile moved its outputs' due time);
        a grace is counted from when the group became decodable, so it decodes now."""
        self._decode_timer = None
        if self.policy.kind == "adaptive":
            self.consider_decode(fired=True)
        else:
            self._decode()

    def _missing(self) -> list[MissingSlot]:
        assert self.group is not None
        return [self.missing_slot(slot) for slot in range(self.group.n) if slot not in self.group.answered]

    def missing_slot(self, slot: int) -> MissingSlot:
        """What the decode policy knows of slot's current request."""
        sent_at, worker, ahead, finish = self.requests.get(slot, (None, None, 0, None))
        down = worker is None or not worker.healthy
        last = None if worker is None else worker.last_answer
        slow = worker is not None and not down and self.pool.is_slow(worker)
        return MissingSlot(sent_at, worker, down, self.queries[slot].deadline, ahead, last, finish, slow)

    def _decode(self) -> None:
        assert self.group is not None
        if self._decode_timer is not None:
            self._decode_timer.cancel()
            self._decode_timer = None
        t0 = time.perf_counter()
        deliveries = self.group.decode_now()
        if deliveries:
            self.stats.decode_seconds += time.perf_counter() - t0
        self._deliver(deliveries)

    def _deliver(self, deliveries: list[Delivery]) -> None:
        for d in deliveries:
            q = self.queries[d.slot]
            if q.done:
                continue
            path = f"decoded-{self._decode_rule}" if d.degraded else self.won_by.get(d.slot, "own")
            if self.trace is not None:  # before the answer: the last one finishes the group and its trace
                self.trace.add("answer", d.slot, path)
            self.stats.answered += 1
            self.stats.degraded += int(d.degraded)
            q.answer(Answer(np.asarray(d.output, np.float32), degraded=d.degraded, path=path))

    def _maybe_finish(self) -> None:
        if self.finished or self.group is None or self._open > 0:
            return
        self.finished = True
        if self.trace_sink is not None and self.trace is not None:
            self.trace_sink.keep(self.trace)
        if self._decode_timer is not None:
            self._decode_timer.cancel()
            self.stats.decodes_avoided += 1  # the real outputs came in while the decode waited
        elif self._waited:
            self.stats.decodes_after_wait += 1
        self._abandon_leftovers()
        for q in self.queries:  # every query is settled: break the query <-> group cycle, so both are
            q.group = None      # freed as soon as unused instead of by the cyclic collector
        self.on_finished(self)

    def _abandon_leftovers(self) -> None:
        """Stragglers and an unneeded parity request: their late outputs are dropped."""
        now = clock.now()
        for req in self.outstanding.values():
            req.abandon(now)
        self.outstanding.clear()
        for handle in self.parity_sends:
            handle.abandon()
        self.parity_sends.clear()
        for timers in (self.fallback_timers, self.retry_timers):
            for timer in timers.values():
                timer.cancel()
            timers.clear()
        for task in self.tasks:
            task.cancel()
