"""The core of ``parm simulate``: the real frontend (frontend.service.Service: grouping, group runs,
decode policy, hedging, fallback copies, pool choice, deadlines) on a virtual-time event loop, in
front of simulated workers (harness.sim_workers). Seeded arrivals and the fault-plan timeline
(harness.plan.expand) are replayed on the same clock; no wall-clock time is involved.
"""
from __future__ import annotations

import asyncio
import random
from typing import Any

import numpy as np

from frontend.config import FrontendConfig
from frontend.errors import DeadlineExceeded, NotReady, Overloaded, ShuttingDown
from frontend.pool import WorkerPool
from frontend.query import PATHS
from frontend.service import Service
from harness.plan import expand, worker_spec
from harness.sim_config import SimConfig
from harness.sim_state import SimRecord, delay_faults
from harness.sim_workers import ServiceTimes, SimWorker
from harness.virtual_loop import VirtualTimeLoop

PENDING, ANSWERED, FAILED, REFUSED = 0, 1, 2, 3  # REFUSED: 503 at admission (no healthy data worker)
READY_POLL_S = 0.001
DRAIN_POLL_S, DRAIN_LIMIT_S = 0.005, 600.0


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


def frontend_config(cfg: SimConfig) -> FrontendConfig:
    """The frontend settings of one simulated mode. The sum code: exact for the identity model."""
    n, extra = cfg.workers, cfg.extra_workers
    data = tuple(("sim", w) for w in range(n))
    parity = tuple(("sim", w) for w in range(n, n + extra)) if cfg.mode != "none" else ()
    return FrontendConfig(
        data=data, parity=parity, k=cfg.k, r=cfg.r, code="sum", mode=cfg.mode, deadline_ms=cfg.deadline_ms,
        max_deadline_ms=max(cfg.deadline_ms, 60_000.0), group_timeout_ms=cfg.group_timeout_ms,
        hedge_delay_ms=cfg.hedge_delay_ms, hedge_percentile=cfg.hedge_percentile, decode_policy=cfg.decode_policy,
        decode_grace_ms=cfg.decode_grace_ms, decode_quantile=cfg.decode_quantile, decode_slack=cfg.decode_slack,
        hedge_fallback=cfg.hedge_fallback, max_pending=10**9, health_interval_s=cfg.health_interval_s,
        health_timeout_s=cfg.health_timeout_s, retry_backoff_s=cfg.retry_backoff_ms / 1000)


class Sim:
    """One mode of one configuration. ``run()`` returns the raw per-query results and counters."""

    def __init__(self, cfg: SimConfig) -> None:
        self.cfg = cfg
        self.fcfg = frontend_config(cfg)
        self.arrivals = arrival_times(cfg)
        n = len(self.arrivals)
        self.record = SimRecord(n)
        times, fault_rng = ServiceTimes(cfg), random.Random(cfg.seed * 7919 + 3)
        n_data = len(self.fcfg.all_data_workers)
        self.workers = [SimWorker(w, "data" if w < n_data else "parity", cfg, times, self.record, fault_rng,
                                  delay_faults(worker_spec(cfg.plan, w)))
                        for w in range(n_data + len(self.fcfg.parity if self.fcfg.coded else ()))]
        self.data_ids = range(cfg.workers)              # utilisation by role: the n data workers, then the extras
        self.extra_ids = range(cfg.workers, len(self.workers))
        self.q_state = np.zeros(n, np.uint8)
        self.q_done = np.zeros(n)
        self.q_degraded = np.zeros(n, bool)
        self.q_path = np.full(n, -1, np.int8)  # index into frontend.query.PATHS; -1: not answered
        self.q_wrong = np.zeros(n, bool)  # answered with another query's output: must never happen
        self.service: Service | None = None
        self.t0 = 0.0
        self._tasks: set[asyncio.Task[None]] = set()
        self._left = n
        self._all_done: asyncio.Event | None = None

    def run(self) -> dict[str, Any]:
        loop = VirtualTimeLoop()
        try:
            loop.run_until_complete(self._main())
        finally:
            loop.close()
        if loop.errors:
            context = loop.errors[0]
            raise RuntimeError(f"simulated frontend failed: {context.get('message')}") from context.get("exception")
        return self._raw()

    async def _main(self) -> None:
        loop = asyncio.get_running_loop()
        data = [w for w in self.workers if w.role == "data"]
        parity = [w for w in self.workers if w.role == "parity"]
        service = self.service = Service(self.fcfg, pool=WorkerPool(self.fcfg, clients=(data, parity)))
        self._all_done = asyncio.Event()
        await service.start()
        while not service.ready() or not all(w.healthy for w in self.workers):  # first probes: one service time
            await asyncio.sleep(READY_POLL_S)
        self.t0 = loop.time()
        window = float(self.arrivals[-1]) if len(self.arrivals) else self.cfg.arrival_window_s
        for ev in expand(self.cfg.plan, self.cfg.plan_workers, max(window, self.cfg.arrival_window_s)):
            if ev.worker < len(self.workers):  # "none" mode has no extra workers
                loop.call_at(self.t0 + ev.t_s, self.workers[ev.worker].apply, ev)
        if self._left:
            self._schedule(0)
            await self._all_done.wait()
        limit = loop.time() + DRAIN_LIMIT_S  # workers finish what they hold (abandoned requests: wasted work)
        while any(w.busy for w in self.workers) and loop.time() < limit:
            await asyncio.sleep(DRAIN_POLL_S)
        self.end = loop.time()
        await service.stop(drain_timeout_s=0.0)

    def _schedule(self, qid: int) -> None:
        at = self.t0 + float(self.arrivals[qid]) + self.cfg.frontend_ms / 1000
        asyncio.get_running_loop().call_at(at, self._arrive, qid)

    def _arrive(self, qid: int) -> None:
        if qid + 1 < len(self.arrivals):
            self._schedule(qid + 1)
        task = asyncio.get_running_loop().create_task(self._query(qid))
        self._tasks.add(task)  # strong reference until it has its answer
        task.add_done_callback(self._tasks.discard)

    async def _query(self, qid: int) -> None:
        """One query through Service.submit, as an HTTP request of one row would go."""
        assert self.service is not None and self._all_done is not None
        inputs = np.array([[qid]], np.float32)  # (1, 1): the identity model answers the query's number
        try:
            answers = await self.service.submit(inputs)
        except DeadlineExceeded:
            self.q_state[qid] = FAILED
        except (NotReady, Overloaded, ShuttingDown):
            self.q_state[qid] = REFUSED
        else:
            self.q_state[qid] = ANSWERED
            self.q_degraded[qid] = answers[0].degraded
            self.q_path[qid] = PATHS.index(answers[0].path)
            # decoded answers are exact for the identity model up to float32 rounding of the code's sums
            self.q_wrong[qid] = abs(float(answers[0].output[0]) - qid) >= 0.5
        self.q_done[qid] = asyncio.get_running_loop().time() - self.t0
        self._left -= 1
        if not self._left:
            self._all_done.set()

    def _raw(self) -> dict[str, Any]:
        assert (self.q_state != PENDING).all(), "a query was never resolved"
        assert self.service is not None
        end = self.end
        # encode/decode seconds are the host CPU's, not simulated time: left out, so runs are reproducible
        stats: dict[str, Any] = {k: v for k, v in self.service.stats.as_dict().items()
                                 if k not in ("encode_seconds", "decode_seconds")}
        stats.update(requests=self.record.requests, cancelled=self.record.cancelled)
        return {"arrivals": self.arrivals, "state": self.q_state, "answers": (self.q_state == ANSWERED).astype(np.uint8),
                "done": self.q_done, "degraded": self.q_degraded, "path": self.q_path, "wrong": self.q_wrong,
                "worker": self.record.first_worker, "end_s": end - self.t0, "stats": stats,
                "busy_data_s": sum(self.workers[i].busy_seconds(end) for i in self.data_ids),
                "busy_extra_s": sum(self.workers[i].busy_seconds(end) for i in self.extra_ids),
                "n_data": len(self.data_ids), "n_extra": len(self.extra_ids),
                "wasted": sum(w.wasted for w in self.workers)}
