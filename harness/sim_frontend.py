"""Frontend side of the simulator: the policies of frontend/grouper.py, dispatcher.py, pool.py and
hedging.py replayed on simulated time. Mixed into harness.sim_engine.Sim.

Per query: dispatched to the least-loaded data worker at once (avoiding workers holding another
query of its group), re-sent after failures with the real exponential backoff; coded groups of k
consecutive queries send the parity query when full, close uncoded after the group timeout, and
decode as soon as parity + k-1 data outputs are in. Hedged: a second copy after the p95 (or fixed)
delay, first answer wins, the other copy is cancelled at the frontend (the worker still serves it).
"""
from __future__ import annotations

from harness.sim_state import Fetch, Group, Req

MAX_BACKOFF_S = 0.1                       # frontend.dispatcher.MAX_BACKOFF_S
RETRY, HEDGE, PARITY, DECODE, GROUP_TIMEOUT = 4, 5, 6, 7, 8
PENDING, ANSWERED, FAILED = 0, 1, 2


class FrontendSide:
    """Needs from the host class: now, push(), cfg, stats, q_* arrays, data_pool, parity_pool,
    pool_of, hedge (HedgePolicy or None), latency (LatencyTracker) and _to_worker(req)."""

    # -- arrivals and groups ----------------------------------------------------------

    def _dispatch(self, qid: int) -> None:
        """The query passed the frontend: join the open group (coded) or form its own."""
        if self.cfg.mode != "coded":
            g = Group()
            self._add(g, qid)
            self._close(g)
            return
        g = self.open_group
        if g is None:
            g = self.open_group = Group()
            self.push(self.now + self.cfg.group_timeout_ms / 1000, GROUP_TIMEOUT, g, None)
        self._add(g, qid)
        if len(g.qids) >= self.cfg.k:
            self.open_group = None
            self._close(g)

    def _add(self, g: Group, qid: int) -> None:
        slot = len(g.qids)
        g.qids.append(qid)
        self.q_group[qid] = g
        f = Fetch(g, slot)
        g.fetches.append(f)
        self._fetch(f)
        if self.hedge is not None:
            self.push(self.now + self.hedge.delay_s(), HEDGE, g, slot)

    def _on_group_timeout(self, g: Group, _arg: object) -> None:
        if self.open_group is g:
            self.open_group = None
            self._close(g)

    def _close(self, g: Group) -> None:
        g.closed = True
        self.stats["groups"] += 1
        g.coded = self.cfg.mode == "coded" and len(g.qids) == self.cfg.k
        if self.cfg.mode == "coded" and not g.coded:
            self.stats["groups_partial"] += 1
        if g.coded:
            if self.cfg.encode_ms > 0:
                self.push(self.now + self.cfg.encode_ms / 1000, PARITY, g, None)
            else:
                self._on_parity(g, None)
        self._maybe_finish(g)

    # -- requests -----------------------------------------------------------------------

    def _backoff(self, attempt: int) -> float:
        return min(self.cfg.retry_backoff_ms / 1000 * 2 ** min(attempt, 10), MAX_BACKOFF_S)

    def _fetch(self, f: Fetch) -> None:
        """One turn of GroupRun._fetch: send to a healthy worker, or back off and try again."""
        g = f.group
        if g.finished or f.done:
            return
        w = self.data_pool.pick(g.used | f.tried)
        if w is None:
            f.attempt += 1
            self.stats["retries"] += 1
            self.push(self.now + self._backoff(f.attempt), RETRY, f, None)
            return
        g.used.add(w)
        self._send(f, w)

    def _on_retry(self, f: Fetch, _arg: object) -> None:
        self._fetch(f)

    def _send(self, f: Fetch, w: int) -> None:
        if f.started < 0:
            f.started = self.now
        req = Req(f, w, self.now)
        f.req = req
        self.pool_of[w].add(w, 1)
        self.stats["requests"] += 1
        if not f.parity and self.q_worker[f.group.qids[f.slot]] < 0:
            self.q_worker[f.group.qids[f.slot]] = w
        self._to_worker(req)

    def _release(self, req: Req, cancelled: bool = False) -> None:
        """The frontend stops waiting for ``req`` (answered, failed or cancelled). A cancelled request
        stays in the in-flight count until its worker is done, as in WorkerClient (whose pending
        entry lives until the reply), unless ``hold_load_until_done`` is off."""
        req.live = False
        req.fetch.req = None
        if not (cancelled and self.cfg.hold_load_until_done):
            self._uncount(req)

    def _uncount(self, req: Req) -> None:
        if req.counted:
            req.counted = False
            self.pool_of[req.worker].add(req.worker, -1)

    def _req_failed(self, req: Req) -> None:
        self._release(req)
        self.stats["worker_errors"] += 1
        f = req.fetch
        if f.parity:
            f.done = True
            f.group.parity_failed = True  # no retry for parity, as in GroupRun._run_parity
            return
        f.tried.add(req.worker)
        f.attempt += 1
        self.stats["retries"] += 1
        self.push(self.now + self._backoff(f.attempt), RETRY, f, None)

    def _complete(self, req: Req) -> None:
        self._release(req)
        f = req.fetch
        f.done = True
        g = f.group
        if f.parity:
            g.parity_out = True
            self._maybe_decode(g)
            return
        if self.hedge is None:
            self.latency.record(self.now - req.sent)
        else:  # as GroupRun._hedged_fetch: the whole query, from its first copy
            self.latency.record(self.now - g.fetches[f.slot].started)
            self._cancel_copies(g, f)
        self._on_output(g, f.slot)

    # -- hedging --------------------------------------------------------------------------

    def _on_hedge(self, g: Group, slot: int) -> None:
        if g.finished or self.q_state[g.qids[slot]] != PENDING or self._slot_done(g, slot):
            return
        self.stats["hedges"] += 1
        f = Fetch(g, slot)
        g.fetches.append(f)
        self._fetch(f)  # g.used holds the first copy's worker: another replica is chosen

    def _slot_done(self, g: Group, slot: int) -> bool:
        return any(f.done for f in g.fetches if f.slot == slot and not f.parity)

    def _cancel_copies(self, g: Group, winner: Fetch) -> None:
        copies = [f for f in g.fetches if f.slot == winner.slot and f is not winner and not f.parity]
        if copies and winner is not g.fetches[winner.slot]:
            self.stats["hedge_wins"] += 1
        for f in copies:
            f.done = True
            if f.req is not None and f.req.live:
                self._release(f.req, cancelled=True)
                self.stats["cancelled"] += 1

    # -- outputs, decoding, answers ------------------------------------------------------

    def _on_parity(self, g: Group, _arg: object) -> None:
        f = Fetch(g, self.cfg.k, parity=True)
        g.fetches.append(f)
        if g.finished:
            f.done = True
            return
        w = self.parity_pool.pick()
        if w is None:
            self.stats["groups_without_parity"] += 1
            f.done = True
            g.parity_failed = True
            return
        self.stats["groups_coded"] += 1
        self._send(f, w)

    def _on_output(self, g: Group, slot: int) -> None:
        if slot in g.answered:
            return
        g.answered.add(slot)
        self._answer(g.qids[slot], degraded=False)
        self._maybe_decode(g)

    def _maybe_decode(self, g: Group) -> None:
        """Group.can_decode: one data slot missing and the parity output in (r = 1)."""
        if g.closed and g.coded and not g.decode_pending and g.parity_out and len(g.answered) == len(g.qids) - 1:
            g.decode_pending = True
            self.push(self.now + (self.cfg.decode_grace_ms + self.cfg.decode_ms) / 1000, DECODE, g, None)

    def _on_decode(self, g: Group, _arg: object) -> None:
        g.decode_pending = False
        if g.finished or len(g.answered) != len(g.qids) - 1:
            return  # the straggler's own output came in during the grace period
        for slot, qid in enumerate(g.qids):
            if slot not in g.answered:
                g.answered.add(slot)
                self._answer(qid, degraded=True)

    def _answer(self, qid: int, degraded: bool) -> None:
        if self.q_state[qid] != PENDING:
            self.stats["late_outputs"] += 1  # answered once only: Query.answer returns False
            return
        self.q_state[qid] = ANSWERED
        self.q_answers[qid] += 1
        self.q_done[qid] = self.now
        self.q_degraded[qid] = degraded
        self._resolved(self.q_group[qid])

    def _on_deadline(self, qid: int) -> None:
        if self.q_state[qid] == PENDING:
            self.q_state[qid] = FAILED
            self.q_done[qid] = self.now
            self._resolved(self.q_group[qid])

    def _resolved(self, g: Group | None) -> None:
        if g is not None:
            g.resolved += 1
            self._maybe_finish(g)

    def _maybe_finish(self, g: Group) -> None:
        """Every query resolved: cancel what is left (stragglers, an unneeded parity request)."""
        if g.finished or not g.closed or g.resolved < len(g.qids):
            return
        g.finished = True
        for f in g.fetches:
            f.done = True
            if f.req is not None and f.req.live:
                self._release(f.req, cancelled=True)
                self.stats["cancelled"] += 1
