"""The discrete-event core of ``parm simulate``: one heap of timed events, seeded RNGs, no wall
clock. Builds the workers and pools of one mode, replays arrivals and the fault-plan timeline
(harness.plan.expand), and runs the frontend (sim_frontend) and worker (sim_workers) policies.
"""
from __future__ import annotations

import heapq
import itertools
import random
from collections import deque
from typing import Any

import numpy as np

from frontend.hedging import HedgePolicy, LatencyTracker
from harness.plan import expand, worker_spec
from harness.sim_config import SimConfig
from harness.sim_frontend import DECODE, GROUP_TIMEOUT, HEDGE, PARITY, PENDING, RETRY, FrontendSide
from harness.sim_pool import Counter, LeastLoaded
from harness.sim_state import Group, Worker, delay_faults
from harness.sim_workers import DONE, ENQUEUE, WorkerSide, first_block

ARRIVE, PLAN = 0, 3
STAT_KEYS = ("requests", "retries", "worker_errors", "hedges", "hedge_wins", "cancelled", "groups",
             "groups_partial", "groups_coded", "groups_without_parity", "late_outputs")


def arrival_times(cfg: SimConfig) -> np.ndarray:
    """Arrival times (s) from the arrival RNG alone: identical for every mode of one seed."""
    rng = np.random.default_rng([cfg.seed, 1])
    if cfg.arrivals == "uniform":
        n = cfg.count or int(cfg.rate * cfg.duration_s)
        return np.arange(n) / cfg.rate
    if cfg.count:
        return np.cumsum(rng.exponential(1 / cfg.rate, cfg.count)) - 0.0
    n = int(cfg.rate * cfg.duration_s * 1.1) + 100
    times = np.cumsum(rng.exponential(1 / cfg.rate, n))
    while times[-1] < cfg.duration_s:  # rare: draw more
        times = np.concatenate([times, times[-1] + np.cumsum(rng.exponential(1 / cfg.rate, n))])
    return times[times < cfg.duration_s]


class Sim(WorkerSide, FrontendSide):
    """One mode of one configuration. ``run()`` returns the raw per-query results and counters."""

    def __init__(self, cfg: SimConfig) -> None:
        self.cfg = cfg
        self.now = 0.0
        self._heap: list[tuple[float, int, int, Any, Any]] = []
        self._seq = itertools.count()
        self.service_rng = np.random.default_rng([cfg.seed, 2])
        self.fault_rng = random.Random(cfg.seed * 7919 + 3)
        self._svc, self._svc_i = first_block(), 0
        self.stats = dict.fromkeys(STAT_KEYS, 0)
        self.latency = LatencyTracker()
        self.hedge = HedgePolicy(self.latency, cfg.hedge_delay_ms, cfg.hedge_percentile) if cfg.mode == "hedged" else None
        self.open_group: Group | None = None
        self._build_workers()
        self.arrivals = arrival_times(cfg)
        n = len(self.arrivals)
        self.q_state = bytearray(n)
        self.q_answers = bytearray(n)
        self.q_done = np.zeros(n)
        self.q_degraded = np.zeros(n, bool)
        self.q_group: list[Group | None] = [None] * n
        self.q_worker = np.full(n, -1, np.int32)  # the first data worker each query was sent to
        self._deadlines: deque[tuple[float, int]] = deque()

    def _build_workers(self) -> None:
        cfg = self.cfg
        n, extra = cfg.workers, cfg.extra_workers
        n_total = n + (extra if cfg.mode != "none" else 0)
        self.workers = [Worker(w, delay_faults(worker_spec(cfg.plan, w))) for w in range(n_total)]
        counter = Counter()
        data_ids = list(range(n_total if cfg.mode in ("none", "equal", "hedged") else n))
        self.data_pool = LeastLoaded(data_ids, counter)
        self.parity_pool = LeastLoaded(list(range(n, n + extra)) if cfg.mode == "coded" else [], counter)
        self.pool_of = {w: self.data_pool for w in data_ids}
        self.pool_of.update({w: self.parity_pool for w in self.parity_pool.ids})
        self.data_ids = range(n)              # utilisation by role: the n data workers, then the extras
        self.extra_ids = range(n, n_total)

    def push(self, t: float, kind: int, a: Any, b: Any) -> None:
        heapq.heappush(self._heap, (t, next(self._seq), kind, a, b))

    def run(self) -> dict[str, Any]:
        cfg = self.cfg
        window = float(self.arrivals[-1]) if len(self.arrivals) else cfg.arrival_window_s
        for ev in expand(cfg.plan, cfg.plan_workers, max(window, cfg.arrival_window_s)):
            if ev.worker < len(self.workers):  # "none" mode has no extra workers
                self.push(ev.t_s, PLAN, self.workers[ev.worker], ev)
        if len(self.arrivals):
            self.push(float(self.arrivals[0]) + cfg.frontend_ms / 1000, ARRIVE, 0, None)
        self._loop()
        return self._raw()

    def _loop(self) -> None:
        handlers = {DONE: self._on_done, ENQUEUE: self._on_enqueue, PLAN: self._on_plan, RETRY: self._on_retry,
                    HEDGE: self._on_hedge, PARITY: self._on_parity, DECODE: self._on_decode,
                    GROUP_TIMEOUT: self._on_group_timeout}
        heap, deadlines, pop = self._heap, self._deadlines, heapq.heappop
        while heap or deadlines:
            # Deadlines are monotone in arrival order: a FIFO instead of the heap. Ties go to the
            # heap first, so an answer at exactly the deadline counts as answered.
            if deadlines and (not heap or deadlines[0][0] < heap[0][0]):
                self.now, qid = deadlines.popleft()
                self._on_deadline(qid)
                continue
            t, _, kind, a, b = pop(heap)
            self.now = t
            if kind == ARRIVE:
                self._on_arrive(a)
            else:
                handlers[kind](a, b)

    def _on_arrive(self, qid: int) -> None:
        cfg = self.cfg
        arrival = float(self.arrivals[qid])
        self._deadlines.append((arrival + cfg.deadline_ms / 1000, qid))
        if qid + 1 < len(self.arrivals):
            self.push(float(self.arrivals[qid + 1]) + cfg.frontend_ms / 1000, ARRIVE, qid + 1, None)
        self._dispatch(qid)

    def _raw(self) -> dict[str, Any]:
        assert all(s != PENDING for s in self.q_state), "a query was never resolved"
        return {"arrivals": self.arrivals, "state": np.frombuffer(bytes(self.q_state), np.uint8),
                "answers": np.frombuffer(bytes(self.q_answers), np.uint8), "done": self.q_done,
                "degraded": self.q_degraded, "worker": self.q_worker, "end_s": self.now, "stats": dict(self.stats),
                "busy_data_s": self.busy_seconds(self.data_ids), "busy_extra_s": self.busy_seconds(self.extra_ids),
                "n_data": len(self.data_ids), "n_extra": len(self.extra_ids),
                "wasted": sum(w.wasted for w in self.workers)}
