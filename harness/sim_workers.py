"""Simulated worker processes behind the real worker-client interface (frontend.worker_base), for
``parm simulate``: a FIFO queue, batches, service times drawn from one seeded stream, and the fault
plan's effects, on the virtual loop's clock. The model is the identity on a (1,) input, so every
answer, decoded or not, can be checked against the query it belongs to.

Fault semantics (documented deviations from workers/faults.py are marked *):
- delay: drawn per request on arrival at the worker, slept *before* the queue (as the real worker).
- slow:factor=F: a batch *started* in the window takes F times its service time.
- stall*: a batch started in the window completes at window end + its service time; the worker is
  held meanwhile (the real worker hangs only requests arriving in the window, not its queue).
- crash: queued, sleeping and in-service requests fail at once (connection lost); restart brings the
  worker back empty, in rotation once a health probe passes (as the real client).
- drop*: at window start everything on the worker fails as in a crash, and the worker is unreachable
  until the window ends (the real worker cuts the connection of each request arriving in it).
"""
from __future__ import annotations

import asyncio
import random
from collections import deque
from typing import Any

import numpy as np

from frontend import clock
from frontend.errors import WorkerFailed, WorkerUnavailable
from frontend.worker_base import WorkerBase
from harness.plan import Event
from harness.sim_config import SimConfig
from harness.sim_state import SimRecord, parse_spec
from workers.faults import Fault, decide

INFO = {"name": "sim-identity", "model_id": "sim-identity", "input_shape": [1], "num_classes": 1}


class ServiceTimes:
    """One seeded stream of service times shared by all workers, drawn in blocks (one numpy call each)."""

    def __init__(self, cfg: SimConfig) -> None:
        self.cfg = cfg
        self.rng = np.random.default_rng([cfg.seed, 2])
        self._block, self._i = np.empty(0), 0

    def next(self, batch_size: int) -> float:
        if self._i >= len(self._block):
            self._block, self._i = self.cfg.dist.draw(self.rng), 0
        s = float(self._block[self._i])
        self._i += 1
        return s * (1.0 + self.cfg.batch_cost * (batch_size - 1))


class Req:
    """One request on a simulated worker; ``future`` is what the frontend awaits (cancelled: abandoned)."""

    __slots__ = ("ahead", "counted", "future", "inputs", "sent_at")

    def __init__(self, inputs: np.ndarray, future: asyncio.Future[np.ndarray], sent_at: float, ahead: int) -> None:
        self.inputs, self.future, self.counted = inputs, future, True
        self.sent_at, self.ahead = sent_at, ahead  # what the client knows of it when the reply comes


class SimWorker(WorkerBase):
    """Worker ``wid`` of the simulated cluster, speaking the frontend's Worker interface."""

    def __init__(self, wid: int, role: str, cfg: SimConfig, times: ServiceTimes, record: SimRecord,
                 fault_rng: random.Random, delay_faults: tuple[Fault, ...]) -> None:
        super().__init__(role, connect_timeout_s=1.0, health_interval_s=cfg.health_interval_s,
                         health_timeout_s=cfg.health_timeout_s)
        self.id, self.host, self.port = wid, "sim", wid
        self.cfg, self.times, self.record = cfg, times, record
        self.fault_rng, self.delay_faults = fault_rng, delay_faults
        self.queue: deque[Req] = deque()
        self.delayed: set[Req] = set()       # requests sleeping in a delay fault before the queue
        self.batch: list[Req] | None = None
        self.held: float | None = None       # service time of a batch waiting for a stall to end
        self.epoch = 0                       # bumped on crash/drop: stale completions are ignored
        self.crashed = self.dropping = self.stalled = False
        self.factor = 1.0
        self.busy_since, self.busy_s = 0.0, 0.0
        self.served = self.wasted = 0        # wasted: served after the frontend stopped waiting
        self._count = 0                      # the frontend's view of requests in flight here

    # -- the Worker interface -------------------------------------------------------------------

    @property
    def name(self) -> str:
        return f"sim-worker-{self.id}"

    @property
    def in_flight(self) -> int:
        return self._count

    @property
    def busy(self) -> bool:
        """Holds a request: in service, held by a stall, queued or sleeping in a delay fault."""
        return self.batch is not None or bool(self.queue) or bool(self.delayed)

    @property
    def down(self) -> bool:
        return self.crashed or self.dropping

    def start(self) -> None:
        if self.cfg.health_probes:
            super().start()  # the real probe loop: a stalled worker leaves rotation as it would for real
        else:
            self._start_transport()
            self.probe_ok = True

    def _start_transport(self) -> None:
        self._mark_connected()
        self._set_info(dict(INFO))

    async def _wait_transport(self) -> None:
        await self._connected.wait()

    async def _probe_once(self) -> bool:
        await self._request(np.zeros((1, 1), np.float32), probe=True)
        return True

    async def infer(self, inputs: np.ndarray) -> np.ndarray:
        return await self._request(inputs)

    async def ping(self) -> dict[str, Any]:
        return dict(self.info)

    async def set_fault(self, spec: str) -> None:
        raise WorkerFailed("simulated workers take faults from the plan")

    async def _request(self, inputs: np.ndarray, probe: bool = False) -> np.ndarray:
        """inputs (1, 1) -> the identity model's output (1, 1), after queueing and service."""
        if self.down or not self.connected:
            raise WorkerUnavailable(f"{self.name}: not connected")
        loop = asyncio.get_running_loop()
        req = Req(inputs, loop.create_future(), clock.now(), self._count)
        self._count += 1
        if not probe:
            self.record.sent(self, inputs)
        self._arrive(req)
        try:
            out = await req.future
        except asyncio.CancelledError:
            if not probe:
                self.record.cancelled += 1
            if not self.cfg.hold_load_until_done:
                self._uncount(req)
            raise
        self._record_result()
        return out

    def _uncount(self, req: Req) -> None:
        if req.counted:
            req.counted = False
            self._count -= 1

    # -- queue and service ----------------------------------------------------------------------

    def _arrive(self, req: Req) -> None:
        """A request reaches the worker: maybe a delay fault, then the FIFO queue."""
        delay_s = decide(self.delay_faults, self.fault_rng, 0).delay_s if self.delay_faults else 0.0
        if delay_s > 0:
            self.delayed.add(req)
            asyncio.get_running_loop().call_later(delay_s, self._after_delay, self.epoch, req)
        else:
            self._enqueue(req)

    def _after_delay(self, epoch: int, req: Req) -> None:
        if epoch == self.epoch:  # else the worker crashed meanwhile and the request already failed
            self.delayed.discard(req)
            self._enqueue(req)

    def _enqueue(self, req: Req) -> None:
        self.queue.append(req)
        if self.batch is None:
            self._start_batch()

    def _start_batch(self) -> None:
        batch: list[Req] = []
        while self.queue and len(batch) < self.cfg.max_batch:
            req = self.queue.popleft()
            if not req.future.done() or not self.cfg.cancel_at_worker:  # the real worker never hears of cancellations
                batch.append(req)
            else:
                self._uncount(req)
        if not batch:
            return
        loop = asyncio.get_running_loop()
        self.batch, self.busy_since = batch, loop.time()
        service = self.times.next(len(batch)) * self.factor
        if self.stalled:
            self.held = service
        else:
            loop.call_later(service, self._done, self.epoch)

    def _done(self, epoch: int) -> None:
        if epoch != self.epoch or self.batch is None:
            return
        batch, self.batch = self.batch, None
        self.busy_s += asyncio.get_running_loop().time() - self.busy_since
        self.served += len(batch)
        for req in batch:
            self._uncount(req)
            self._record_reply(req.sent_at, req.ahead)  # the reply reaches the client, awaited or not
            if req.future.done():
                self.wasted += 1
            else:
                req.future.set_result(req.inputs.copy())  # the identity model
        self._start_batch()

    # -- the fault plan -------------------------------------------------------------------------

    def apply(self, ev: Event) -> None:
        """One event of the expanded fault plan (harness.plan.expand)."""
        if ev.action == "kill":
            if not self.down:
                self._fail_all()
            self.crashed = True
        elif ev.action == "restart":
            self.crashed = False
            self._maybe_up()
        else:
            self._apply_spec(ev.spec)

    def _apply_spec(self, spec: str) -> None:
        state = parse_spec(spec)
        self.factor = state.factor
        if state.stall != self.stalled:
            self.stalled = state.stall
            if not state.stall and self.held is not None:  # the stall ends: the held batch runs now
                asyncio.get_running_loop().call_later(self.held, self._done, self.epoch)
                self.held = None
        if state.drop and not self.dropping:
            if not self.down:
                self._fail_all()
            self.dropping = True
        elif not state.drop and self.dropping:
            self.dropping = False
            self._maybe_up()

    def _fail_all(self) -> None:
        """Connection lost: every request on the worker fails now and the client leaves rotation."""
        self.epoch += 1
        victims = list(self.batch or ()) + list(self.queue) + list(self.delayed)
        if self.batch is not None:
            self.busy_s += asyncio.get_running_loop().time() - self.busy_since
        self.batch, self.held = None, None
        self.queue.clear()
        self.delayed.clear()
        self._mark_disconnected()
        for req in victims:
            self._uncount(req)
            if not req.future.done():
                req.future.set_exception(WorkerUnavailable(f"{self.name}: connection lost"))

    def _maybe_up(self) -> None:
        if not self.down:
            self._start_transport()
            if not self.cfg.health_probes:
                self.probe_ok = True

    def busy_seconds(self, now: float) -> float:
        """Busy time, counting a batch still in service (or held) up to ``now``."""
        return self.busy_s + (now - self.busy_since if self.batch is not None else 0.0)
