"""The set of data and parity workers: health, model agreement, and the choice of worker.

Choice is least-loaded (fewest requests in flight) among healthy workers, ties broken
round-robin; where a slow worker cannot be decoded around (uncoded modes, parity queries, copies)
a worker much slower than the others counts its queue stretched by how much (frontend.balance).
A group's data queries avoid workers already holding another query of the same
group, so one slow worker rarely costs a group two outputs (which one parity cannot rebuild).
With r >= 2 learned parity models, parity slot k+l goes only to workers running parity model l.
Which workers agree with the deployment's model is frontend.agreement's to judge.
"""
from __future__ import annotations

import itertools
from collections.abc import Iterable
from typing import Any

from frontend import clock
from frontend.agreement import Agreement, parity_index
from frontend.balance import SlowJudge, choice_keys
from frontend.config import Address, FrontendConfig
from frontend.worker_api import Worker
from frontend.worker_client import WorkerClient

__all__ = ["WorkerPool", "make_client", "parity_index"]  # parity_index: re-exported for callers


def make_client(address: Address, role: str, cfg: FrontendConfig) -> Worker:
    """A client for a parm worker (host, port), or for a V2 server ("v2+http://host:port/model")."""
    opts = {"connect_timeout_s": cfg.connect_timeout_s, "health_interval_s": cfg.health_interval_s,
            "health_timeout_s": cfg.health_timeout_s}
    if isinstance(address, str):
        from frontend.v2_worker import V2WorkerClient  # aiohttp client only where V2 workers are used

        return V2WorkerClient(address, role, **opts)
    return WorkerClient(address[0], address[1], role, secret=cfg.worker_secret, **opts)


class WorkerPool:
    def __init__(self, cfg: FrontendConfig, clients: tuple[list[Worker], list[Worker]] | None = None) -> None:
        """``clients``: (data, parity) workers to use instead of clients for cfg's addresses (the
        simulator's workers, harness.sim_workers)."""
        self.cfg = cfg
        if clients is None:
            clients = ([make_client(a, "data", cfg) for a in cfg.all_data_workers],
                       [make_client(a, "parity", cfg) for a in (cfg.parity if cfg.coded else ())])
        self.data, self.parity = clients
        self._rr = itertools.count()
        self._slow = SlowJudge()
        self._shape: tuple[list[Any], tuple[int, ...]] | None = None  # (a reported shape list, as a tuple)
        self.agreement = Agreement(cfg.k, cfg.r, cfg.code, declared=cfg.model_id)
        for w in self.all:
            w.on_change = self.check_agreement  # judged as soon as a worker reports (or loses) its model

    @property
    def all(self) -> list[Worker]:
        return self.data + self.parity

    def start(self) -> None:
        for w in self.all:
            w.start()

    async def close(self) -> None:
        for w in self.all:
            await w.close()

    def pick(self, workers: list[Worker], avoid: Iterable[Worker] = (), by_pace: bool = False) -> Worker | None:
        """Least-loaded healthy worker, preferring those not in ``avoid``; None if none is healthy.
        ``by_pace``: a worker SLOW x slower than the typical one counts its queue that many times longer.
        Coded data queries do not: their group decodes around a slow worker, which still adds capacity
        (avoiding it raised coded's p99.9 at 70% load in the simulator)."""
        healthy = [w for w in workers if w.healthy]
        if not healthy:
            return None
        avoid_set = set(avoid)
        fresh = [w for w in healthy if w not in avoid_set] or healthy
        if len(fresh) == 1:  # one candidate (a group's second query on 2 workers, a lone parity worker)
            return fresh[0]
        start = next(self._rr) % len(fresh)  # rotate so equal loads spread round-robin
        rotated = fresh[start:] + fresh[:start]
        if not by_pace:
            return min(rotated, key=lambda w: w.in_flight)
        now = clock.now()
        keys = choice_keys([w.in_flight for w in rotated], [w.pace.value(now) for w in rotated])
        return rotated[min(range(len(rotated)), key=keys.__getitem__)]

    def is_slow(self, worker: Worker) -> bool:
        """``worker`` (a data worker) is SLOW x slower than the typical healthy data worker now."""
        now = clock.now()
        limit = self._slow.limit(lambda: [w.pace.value(now) for w in self.data if w.healthy], now)
        pace = worker.pace
        # an estimate only decays between replies: one at or under the limit is not over it now (no exp())
        return 0.0 < limit < pace.estimate and pace.value(now) > limit

    def parity_for(self, index: int) -> list[Worker]:
        """The parity workers that may serve parity ``index`` (slot k + index): a learned parity
        model serves only the index it was trained for; a base model (Berrut) serves any."""
        return [w for w in self.parity if parity_index(w.info) in (None, index)]

    def parity_served(self) -> list[bool]:
        """For each parity index 0..r-1, whether a healthy worker can serve it now (a group whose
        index has none decodes with fewer parities)."""
        return [any(w.healthy for w in self.parity_for(index)) for index in range(self.cfg.r)]

    def input_shape(self) -> tuple[int, ...] | None:
        """The data model's per-query input shape, once a healthy data worker has reported it."""
        for w in self.data:
            if w.healthy:
                shape = w.info.get("input_shape")
                if isinstance(shape, list):
                    return self._as_shape(shape)
        return None

    def _as_shape(self, shape: list[Any]) -> tuple[int, ...]:
        """The reported list as a tuple, converted once per report (asked twice per request)."""
        cached = self._shape
        if cached is not None and cached[0] is shape:
            return cached[1]
        value = tuple(int(d) for d in shape)
        self._shape = (shape, value)
        return value

    def output_size(self) -> int | None:
        """Number of outputs per query, when a data worker has reported it."""
        for w in self.data:
            if w.healthy and isinstance(w.info.get("num_classes"), int):
                return int(w.info["num_classes"])
        return None

    def check_agreement(self) -> None:
        """Refuse workers whose model disagrees with the deployment's (shape, identity), and parity
        workers whose parity model was trained for another k, code or base model; accept them
        again once they agree (frontend.agreement)."""
        self.agreement.check(self.data, self.all)

    def summary(self) -> dict[str, Any]:
        def one(w: Worker) -> dict[str, Any]:  # pace_ms: time per request as of its last reply
            return {"address": f"{w.host}:{w.port}", "connected": w.connected, "healthy": w.healthy,
                    "in_flight": w.in_flight,
                    "pace_ms": round(1000 * w.pace.estimate, 3), "refused": w.refused, "model": w.info.get("name"),
                    "auth_error": w.auth_error}
        # a parity worker's index: the one parity slot it serves, or None for any (a base model)
        parity = [one(w) | {"parity_index": parity_index(w.info)} for w in self.parity]
        return {"data": [one(w) for w in self.data], "parity": parity}

