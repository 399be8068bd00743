"""Worker side of the simulator: FIFO queues, batches, service times and the fault plan's effects
(slow windows, stalls, drops, crashes, per-request delays). Mixed into harness.sim_engine.Sim.

Fault semantics (documented deviations from workers/faults.py are marked *):
- delay: drawn per request on arrival at the worker, slept *before* the queue (as the real worker).
- slow:factor=F: a batch *started* in the window takes F times its service time.
- stall*: a batch started in the window completes at window end + its service time; the worker is
  held meanwhile (the real worker hangs only requests arriving in the window, not its queue).
- crash: queued, sleeping and in-service requests fail at once; restart brings the worker back empty
  (the real client also needs a reconnect and a health probe: up to seconds, not modelled).
- drop*: at window start everything on the worker fails as in a crash, and the worker is unusable
  until the window ends (the real worker cuts the connection of each request arriving in it).
"""
from __future__ import annotations

import numpy as np

from harness.plan import Event
from harness.sim_state import Req, Worker, parse_spec
from workers.faults import decide

DONE, ENQUEUE = 1, 2


class WorkerSide:
    """Needs from the host class: now, push(), cfg, workers, pool_of, service_rng, fault_rng,
    and the frontend callbacks _complete(req), _req_failed(req) and _uncount(req)."""

    def _service_time(self, batch_size: int) -> float:
        if self._svc_i >= len(self._svc):
            self._svc = self.cfg.dist.draw(self.service_rng)
            self._svc_i = 0
        s = float(self._svc[self._svc_i])
        self._svc_i += 1
        return s * (1.0 + self.cfg.batch_cost * (batch_size - 1))

    def _to_worker(self, req: Req) -> None:
        """A request reaches its worker: maybe a delay fault, then the FIFO queue."""
        w = self.workers[req.worker]
        delay_s = decide(w.delay_faults, self.fault_rng, 0).delay_s if w.delay_faults else 0.0
        if delay_s > 0:
            w.delayed.add(req)
            self.push(self.now + delay_s, ENQUEUE, w, (w.epoch, req))
        else:
            self._enqueue(w, req)

    def _on_enqueue(self, w: Worker, arg: tuple[int, Req]) -> None:
        epoch, req = arg
        if epoch == w.epoch:  # else the worker crashed meanwhile and the request already failed
            w.delayed.discard(req)
            self._enqueue(w, req)

    def _enqueue(self, w: Worker, req: Req) -> None:
        w.queue.append(req)
        if w.batch is None:
            self._start_batch(w)

    def _start_batch(self, w: Worker) -> None:
        batch: list[Req] = []
        queue, cancel = w.queue, self.cfg.cancel_at_worker
        while queue and len(batch) < self.cfg.max_batch:
            req = queue.popleft()
            if req.live or not cancel:  # the real worker never hears of cancellations
                batch.append(req)
            else:
                self._uncount(req)
        if not batch:
            return
        w.batch = batch
        w.busy_since = self.now
        service = self._service_time(len(batch)) * w.factor
        if w.stalled:
            w.held = service
        else:
            self.push(self.now + service, DONE, w, w.epoch)

    def _on_done(self, w: Worker, epoch: int) -> None:
        if epoch != w.epoch or w.batch is None:
            return
        batch, w.batch = w.batch, None
        w.busy_s += self.now - w.busy_since
        w.served += len(batch)
        for req in batch:
            if req.live:
                self._complete(req)
            else:
                w.wasted += 1
                self._uncount(req)
        if w.batch is None:
            self._start_batch(w)

    # -- the fault plan ----------------------------------------------------------------

    def _on_plan(self, w: Worker, ev: Event) -> None:
        if ev.action == "kill":
            if not w.down:
                self._fail_all(w)
            w.crashed = True
        elif ev.action == "restart":
            w.crashed = False
            self._maybe_up(w)
        else:
            self._apply_spec(w, ev.spec)

    def _apply_spec(self, w: Worker, spec: str) -> None:
        state = parse_spec(spec)
        w.factor = state.factor
        if state.stall != w.stalled:
            w.stalled = state.stall
            if not state.stall and w.held is not None:  # the stall ends: the held batch runs now
                self.push(self.now + w.held, DONE, w, w.epoch)
                w.held = None
        if state.drop and not w.dropping:
            if not w.down:
                self._fail_all(w)
            w.dropping = True
        elif not state.drop and w.dropping:
            w.dropping = False
            self._maybe_up(w)

    def _fail_all(self, w: Worker) -> None:
        """Connection lost: every request on the worker fails now; the frontend marks it unhealthy."""
        w.epoch += 1
        victims = list(w.batch or ()) + list(w.queue) + list(w.delayed)
        if w.batch is not None:
            w.busy_s += self.now - w.busy_since
        w.batch, w.held = None, None
        w.queue.clear()
        w.delayed.clear()
        self.pool_of[w.id].set_healthy(w.id, False)
        for req in victims:
            if req.live:
                self._req_failed(req)
            else:
                self._uncount(req)

    def _maybe_up(self, w: Worker) -> None:
        if not w.down:
            self.pool_of[w.id].set_healthy(w.id, True)

    def busy_seconds(self, ids: range) -> float:
        """Busy time of workers ``ids``, counting a batch still in service (or held) up to now."""
        total = 0.0
        for i in ids:
            w = self.workers[i]
            total += w.busy_s + (self.now - w.busy_since if w.batch is not None else 0.0)
        return total


def first_block() -> np.ndarray:
    """An empty block: the first service-time draw fills it."""
    return np.empty(0)
