"""Replays a fault plan's timeline (harness.plan.expand) against a running BenchCluster at the
right wall-clock times: fault-spec changes over control connections, kills and restarts.

Used by harness/bench.py, identically for every mode, so all modes see the same stragglers.
"""
from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field

from frontend.errors import WorkerError
from frontend.worker_client import WorkerClient
from harness.deploy import BenchCluster
from harness.plan import Event

log = logging.getLogger(__name__)


@dataclass
class ReplayLog:
    applied: int = 0
    skipped: int = 0                    # events for workers this mode does not have (none mode)
    deferred: int = 0                   # spec changes for a worker that was down: applied at restart
    failed: list[str] = field(default_factory=list)
    max_late_ms: float = 0.0            # how far behind schedule an event was applied
    events: list[dict[str, object]] = field(default_factory=list)  # kills and restarts, as done


class FaultReplayer:
    """``run(events, start_epoch, targets)`` applies each event at start_epoch + event.t_s to pool
    worker ``targets[event.worker]``; ``reset`` heals the whole pool between runs."""

    def __init__(self, cluster: BenchCluster) -> None:
        self.cluster = cluster
        self.current = [w.spec.fault for w in cluster.workers]   # each pool worker's spec now
        self.targets: list[int] = []
        self.log = ReplayLog()
        self._clients: list[WorkerClient] = []
        self._tasks: set[asyncio.Task[None]] = set()             # restarts in progress

    async def connect(self, timeout_s: float = 10.0) -> None:
        # A long health interval: the control connection must not add probe inferences to the load.
        self._clients = [WorkerClient(w.host, w.port, "control", health_interval_s=3600.0, max_backoff_s=0.1)
                         for w in self.cluster.workers]
        for c in self._clients:
            c.start()
        await asyncio.gather(*(c.wait_connected(timeout_s) for c in self._clients))

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await asyncio.gather(*(c.close() for c in self._clients), return_exceptions=True)

    async def reset(self) -> None:
        """Every pool worker alive with spec "none" (a previous run may have killed or faulted it)."""
        self.log = ReplayLog()  # the heal's own spec changes: not counted in the previous run's log
        dead = [i for i, w in enumerate(self.cluster.workers) if w.proc.returncode is not None]
        self.current = ["none"] * len(self.cluster.workers)
        await asyncio.gather(*(self._restart(i) for i in dead))
        await asyncio.gather(*(self._set(i, "none") for i in range(len(self.cluster.workers)) if i not in dead))

    async def run(self, events: list[Event], start_epoch: float, targets: list[int]) -> ReplayLog:
        self.log, self.targets = ReplayLog(), targets
        for ev in events:
            delay = start_epoch + ev.t_s - time.time()
            if delay > 0:
                await asyncio.sleep(delay)
            if ev.worker >= len(targets):
                self.log.skipped += 1
                continue
            self.log.max_late_ms = max(self.log.max_late_ms, (time.time() - start_epoch - ev.t_s) * 1000)
            await self._apply(ev, targets[ev.worker])
        if self._tasks:  # let restarts finish inside the run
            await asyncio.gather(*self._tasks, return_exceptions=True)
        return self.log

    async def _apply(self, ev: Event, worker: int) -> None:
        if ev.action == "spec":
            self.current[worker] = ev.spec
            await self._set(worker, ev.spec)
        elif ev.action == "kill":
            await self.cluster.kill(worker)
            self.log.applied += 1
            self.log.events.append({"t_s": ev.t_s, "worker": worker, "action": "kill"})
        elif ev.action == "restart":
            self.log.events.append({"t_s": ev.t_s, "worker": worker, "action": "restart"})
            # A restart takes seconds (a fresh interpreter): never hold up the next events for it.
            task = asyncio.create_task(self._restart(worker))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _set(self, worker: int, spec: str) -> None:
        """Send the spec now, never waiting for a connection: a worker that is down or restarting
        gets ``self.current[worker]`` when its restart completes, so the timeline never stalls."""
        client = self._clients[worker]
        if self.cluster.workers[worker].proc.returncode is not None or not client.connected:
            self.log.deferred += 1
            return
        try:
            await asyncio.wait_for(client.set_fault(spec), 1.0)
            self.log.applied += 1
        except (WorkerError, asyncio.TimeoutError) as exc:
            self.log.failed.append(f"worker {worker} spec {spec!r}: {exc}")

    async def _restart(self, worker: int) -> None:
        spec = self.current[worker]
        try:
            await self.cluster.restart(worker, fault=spec)
        except (RuntimeError, OSError, asyncio.TimeoutError) as exc:
            self.log.failed.append(f"worker {worker} restart: {exc}")
            return
        self.log.applied += 1
        await self._clients[worker].wait_connected(5.0)
        if self.current[worker] != spec:  # a spec event arrived while it was starting
            await self._set(worker, self.current[worker])
